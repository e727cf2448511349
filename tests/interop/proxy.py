#!/usr/bin/env python3
"""A validating HTTP proxy between the interop clients and the gateway.

It forwards every request to the gateway and relays the answer unchanged (status, reason, headers
and body bytes; only hop-by-hop headers are re-framed). Every answer to a SOAP POST is checked,
and each problem found is appended as one line to the violations file:

- nothing before `<?xml` (no BOM, no whitespace), the body is UTF-8 and says so if it says;
- Content-Type is the one of the request's SOAP version (`text/xml; charset=utf-8` for 1.1,
  `application/soap+xml; charset=utf-8` for 1.2) and the envelope is of that version;
- the envelope is valid against the SOAP envelope schema of its version (1.1: the one shipped in
  the xmlschema package; 1.2: the W3C schema's structure, below), with exactly one Body child;
- that child is either a Fault (code in the version's namespace, HTTP 500, or for 1.2 a `Sender`
  fault 400; a too-large body may be 413), or the element `{operation}Response` of the request's
  operation, valid against the schema inside the WSDL, with HTTP 200;
- the gateway's contract for business errors: `errors` is always there; on faultCode 0 the
  faultString is empty, on any other code there is no `result`/`results`.

Each exchange (both bodies) is appended to the exchange log, so a violation or a client's FAIL
can be shown with its request and response. Requests are validated against the WSDL schema too,
but only noted in the log: the clients, not the gateway, are responsible for those.

Usage: proxy.py --port N --upstream http://127.0.0.1:M --violations FILE --log FILE
"""

import argparse
import http.client
import http.server
import io
import itertools
import os
import re
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request

import xmlschema
from lxml import etree

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
XSD = "http://www.w3.org/2001/XMLSchema"
VERSION_OF_NS = {SOAP11: "1.1", SOAP12: "1.2"}
NS_OF_VERSION = {"1.1": SOAP11, "1.2": SOAP12}
CONTENT_TYPE = {"1.1": "text/xml", "1.2": "application/soap+xml"}
FAULT_CODES = {
    "1.1": {"VersionMismatch", "MustUnderstand", "Client", "Server"},
    "1.2": {"VersionMismatch", "MustUnderstand", "DataEncodingUnknown", "Sender", "Receiver"},
}
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "content-length",
}

# The SOAP 1.2 envelope schema (W3C, http://www.w3.org/2003/05/soap-envelope), structure only:
# the xmlschema package ships the SOAP 1.1 one but not this one.
SOAP12_ENVELOPE_XSD = """<?xml version="1.0" encoding="utf-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
           xmlns:tns="http://www.w3.org/2003/05/soap-envelope"
           targetNamespace="http://www.w3.org/2003/05/soap-envelope"
           elementFormDefault="qualified">
  <xs:import namespace="http://www.w3.org/XML/1998/namespace"/>
  <xs:element name="Envelope" type="tns:Envelope"/>
  <xs:complexType name="Envelope">
    <xs:sequence>
      <xs:element ref="tns:Header" minOccurs="0"/>
      <xs:element ref="tns:Body" minOccurs="1"/>
    </xs:sequence>
    <xs:anyAttribute namespace="##other" processContents="lax"/>
  </xs:complexType>
  <xs:element name="Header" type="tns:Header"/>
  <xs:complexType name="Header">
    <xs:sequence>
      <xs:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence>
    <xs:anyAttribute namespace="##other" processContents="lax"/>
  </xs:complexType>
  <xs:element name="Body" type="tns:Body"/>
  <xs:complexType name="Body">
    <xs:sequence>
      <xs:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence>
    <xs:anyAttribute namespace="##other" processContents="lax"/>
  </xs:complexType>
  <xs:attribute name="mustUnderstand" type="xs:boolean"/>
  <xs:attribute name="relay" type="xs:boolean"/>
  <xs:attribute name="role" type="xs:anyURI"/>
  <xs:attribute name="encodingStyle" type="xs:anyURI"/>
  <xs:element name="Fault" type="tns:Fault"/>
  <xs:complexType name="Fault" final="extension">
    <xs:sequence>
      <xs:element name="Code" type="tns:faultcode"/>
      <xs:element name="Reason" type="tns:faultreason"/>
      <xs:element name="Node" type="xs:anyURI" minOccurs="0"/>
      <xs:element name="Role" type="xs:anyURI" minOccurs="0"/>
      <xs:element name="Detail" type="tns:detail" minOccurs="0"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="faultreason">
    <xs:sequence>
      <xs:element name="Text" type="tns:reasontext" minOccurs="1" maxOccurs="unbounded"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="reasontext">
    <xs:simpleContent>
      <xs:extension base="xs:string">
        <xs:attribute ref="xml:lang" use="required"/>
      </xs:extension>
    </xs:simpleContent>
  </xs:complexType>
  <xs:complexType name="faultcode">
    <xs:sequence>
      <xs:element name="Value" type="tns:faultcodeEnum"/>
      <xs:element name="Subcode" type="tns:subcode" minOccurs="0"/>
    </xs:sequence>
  </xs:complexType>
  <xs:simpleType name="faultcodeEnum">
    <xs:restriction base="xs:QName">
      <xs:enumeration value="tns:DataEncodingUnknown"/>
      <xs:enumeration value="tns:MustUnderstand"/>
      <xs:enumeration value="tns:Receiver"/>
      <xs:enumeration value="tns:Sender"/>
      <xs:enumeration value="tns:VersionMismatch"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:complexType name="subcode">
    <xs:sequence>
      <xs:element name="Value" type="xs:QName"/>
      <xs:element name="Subcode" type="tns:subcode" minOccurs="0"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="detail">
    <xs:sequence>
      <xs:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence>
    <xs:anyAttribute namespace="##other" processContents="lax"/>
  </xs:complexType>
  <xs:element name="NotUnderstood" type="tns:NotUnderstoodType"/>
  <xs:complexType name="NotUnderstoodType">
    <xs:attribute name="qname" type="xs:QName" use="required"/>
  </xs:complexType>
  <xs:element name="Upgrade" type="tns:UpgradeType"/>
  <xs:complexType name="UpgradeType">
    <xs:sequence>
      <xs:element name="SupportedEnvelope" type="tns:SupportedEnvType" minOccurs="1" maxOccurs="unbounded"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="SupportedEnvType">
    <xs:attribute name="qname" type="xs:QName" use="required"/>
  </xs:complexType>
</xs:schema>
"""

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def local(tag):
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def namespace(tag):
    return tag[1:].split("}", 1)[0] if isinstance(tag, str) and tag.startswith("{") else ""


def elements(node):
    return [child for child in node if isinstance(child.tag, str)]


class Validator:
    """The schemas, loaded once: the two envelope schemas and the WSDL's own."""

    def __init__(self, wsdl_bytes):
        base = os.path.join(os.path.dirname(xmlschema.__file__), "schemas", "WSDL")
        self.envelope = {
            "1.1": xmlschema.XMLSchema10(os.path.join(base, "soap-envelope.xsd")),
            "1.2": xmlschema.XMLSchema10(SOAP12_ENVELOPE_XSD),
        }
        wsdl = etree.fromstring(wsdl_bytes, PARSER)
        schemas = wsdl.findall(f"{{{WSDL}}}types/{{{XSD}}}schema")
        if len(schemas) != 1:
            raise RuntimeError(f"the WSDL has {len(schemas)} schemas in wsdl:types, expected 1")
        # lxml serializes a subtree with every namespace in scope, so `tns:` stays resolvable.
        self.tns = schemas[0].get("targetNamespace")
        self.wsdl_schema = xmlschema.XMLSchema10(etree.tostring(schemas[0]).decode("utf-8"))

    def schema_errors(self, schema, element, limit=5):
        out = []
        for error in schema.iter_errors(element):
            reason = error.reason or str(error).splitlines()[0]
            path = error.path or ""
            out.append(f"{path}: {reason}".strip())
            if len(out) >= limit:
                break
        return out


class Exchange:
    """What the proxy learned of one request/response, for the checks and the log."""

    def __init__(self, seq, method, path, req_headers, req_body):
        self.seq = seq
        self.method = method
        self.path = path
        self.req_headers = req_headers
        self.req_body = req_body
        self.version = None
        self.operation = None
        self.notes = []
        self.violations = []


def request_info(ex, validator):
    """SOAP version and operation of the request (the envelope decides; else the Content-Type)."""
    content_type = ex.req_headers.get("Content-Type", "") or ""
    try:
        root = etree.fromstring(ex.req_body, PARSER)
    except etree.XMLSyntaxError as error:
        ex.notes.append(f"request is not well-formed XML: {error}")
        root = None
    if root is not None and local(root.tag) == "Envelope" and namespace(root.tag) in VERSION_OF_NS:
        ex.version = VERSION_OF_NS[namespace(root.tag)]
        body = root.find(f"{{{namespace(root.tag)}}}Body")
        children = elements(body) if body is not None else []
        if children:
            ex.operation = local(children[0].tag)
            if validator is not None and namespace(children[0].tag) == validator.tns:
                for problem in validator.schema_errors(validator.wsdl_schema, children[0]):
                    ex.notes.append(f"request not valid against the WSDL schema: {problem}")
            else:
                ex.notes.append(f"request body child is {children[0].tag}")
    elif content_type.lower().startswith("application/soap+xml"):
        ex.version = "1.2"
    elif content_type.lower().startswith("text/xml"):
        ex.version = "1.1"


def check_response(ex, status, headers, body, validator):
    v = ex.violations
    version = ex.version
    if version is None:
        v.append("cannot tell the request's SOAP version (neither its envelope nor its Content-Type)")
        return
    # Framing and Content-Type.
    if not body.startswith(b"<?xml"):
        v.append(f"body does not start with '<?xml' (starts with {body[:12]!r})")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        v.append(f"body is not UTF-8: {error}")
    declaration = body[: body.find(b"?>") + 2] if body.startswith(b"<?xml") else b""
    encoding = re.search(rb"""encoding\s*=\s*["']([^"']*)["']""", declaration)
    if encoding and encoding.group(1).lower() != b"utf-8":
        v.append(f"XML declaration names the encoding {encoding.group(1)!r}, not UTF-8")
    content_type = headers.get("Content-Type")
    expected = f"{CONTENT_TYPE[version]}; charset=utf-8"
    if content_type is None:
        v.append("no Content-Type")
    elif " ".join(content_type.lower().split()) != expected:
        v.append(f"Content-Type {content_type!r} for a SOAP {version} request, expected {expected!r}")
    # The envelope.
    try:
        root = etree.fromstring(body, PARSER)
    except etree.XMLSyntaxError as error:
        v.append(f"response is not well-formed XML: {error}")
        return
    env_ns = namespace(root.tag)
    if local(root.tag) != "Envelope" or env_ns not in VERSION_OF_NS:
        v.append(f"root element is {root.tag}, not a SOAP Envelope")
        return
    if VERSION_OF_NS[env_ns] != version:
        v.append(f"a SOAP {VERSION_OF_NS[env_ns]} envelope answers a SOAP {version} request")
        version = VERSION_OF_NS[env_ns]
    for problem in validator.schema_errors(validator.envelope[version], root):
        v.append(f"envelope not valid against the SOAP {version} envelope schema: {problem}")
    body_el = root.find(f"{{{env_ns}}}Body")
    if body_el is None:
        return
    children = elements(body_el)
    if len(children) != 1:
        v.append(f"Body has {len(children)} element children, expected exactly 1")
        if not children:
            return
    child = children[0]
    if child.tag == f"{{{env_ns}}}Fault":
        check_fault(ex, version, env_ns, status, child)
        return
    # A normal answer: the operation's response element, valid against the WSDL schema.
    if status != 200:
        v.append(f"HTTP {status} for a response that is not a Fault (expected 200)")
    if ex.operation is not None:
        wanted = f"{{{validator.tns}}}{ex.operation}Response"
        if child.tag != wanted:
            v.append(f"Body child is {child.tag}, expected {wanted}")
    if namespace(child.tag) != validator.tns:
        v.append(f"Body child {child.tag} is not in the WSDL's target namespace {validator.tns}")
        return
    for problem in validator.schema_errors(validator.wsdl_schema, child):
        v.append(f"{local(child.tag)} not valid against the WSDL schema: {problem}")
    errors = child.find(f"{{{validator.tns}}}errors")
    if errors is not None:
        code = (errors.findtext(f"{{{validator.tns}}}faultCode") or "").strip()
        text = errors.findtext(f"{{{validator.tns}}}faultString")
        results = [c for c in elements(child) if local(c.tag) in ("result", "results")]
        if code == "0" and text:
            v.append(f"faultCode 0 with a non-empty faultString {text!r}")
        if code not in ("", "0") and results:
            v.append(f"faultCode {code} but the answer carries {local(results[0].tag)}")


def check_fault(ex, version, env_ns, status, fault):
    v = ex.violations
    if version == "1.1":
        raw = (fault.findtext("faultcode") or "").strip()
        prefix, _, name = raw.rpartition(":")
        ns = fault.nsmap.get(prefix or None)
        if ns != SOAP11 or name.split(".")[0] not in FAULT_CODES["1.1"]:
            v.append(f"faultcode {raw!r} is not a SOAP 1.1 code in {SOAP11}")
        if status not in (500, 413) or (status == 413 and not name.startswith("Client")):
            v.append(f"HTTP {status} for a SOAP 1.1 Fault {raw!r} (expected 500)")
    else:
        value = fault.find(f"{{{SOAP12}}}Code/{{{SOAP12}}}Value")
        raw = (value.text or "").strip() if value is not None else ""
        prefix, _, name = raw.rpartition(":")
        ns = value.nsmap.get(prefix or None) if value is not None else None
        if ns != SOAP12 or name not in FAULT_CODES["1.2"]:
            v.append(f"Code/Value {raw!r} is not a SOAP 1.2 code in {SOAP12}")
        expected = {400, 413} if name == "Sender" else {500}
        if status not in expected:
            v.append(f"HTTP {status} for a SOAP 1.2 {name!r} Fault (expected {sorted(expected)})")


class Proxy(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, upstream, violations_path, log_path):
        super().__init__(address, Handler)
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.upstream_url = upstream.rstrip("/")
        self.violations_path = violations_path
        self.log_path = log_path
        self.lock = threading.Lock()
        self.counter = itertools.count(1)
        self.validator = None
        self.validator_error = None

    def load_validator(self, wsdl_path, wait_s=30):
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with urllib.request.urlopen(self.upstream_url + wsdl_path, timeout=10) as answer:
                    wsdl = answer.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.validator = Validator(wsdl)

    def record(self, ex, status, reason, resp_headers, resp_body, elapsed_ms):
        with self.lock:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"=== #{ex.seq} {ex.method} {ex.path}  SOAP {ex.version or '-'}  "
                          f"operation {ex.operation or '-'}  -> {status} {reason}  ({elapsed_ms:.0f} ms)\n")
                for note in ex.notes:
                    log.write(f"note: {note}\n")
                for violation in ex.violations:
                    log.write(f"VIOLATION: {violation}\n")
                log.write("--- request\n")
                for key, value in ex.req_headers.items():
                    log.write(f"{key}: {value}\n")
                log.write("\n" + ex.req_body.decode("utf-8", "replace") + "\n")
                log.write("--- response\n")
                for key, value in resp_headers:
                    log.write(f"{key}: {value}\n")
                log.write("\n" + resp_body.decode("utf-8", "replace") + "\n\n")
            if ex.violations:
                with open(self.violations_path, "a", encoding="utf-8") as out:
                    for violation in ex.violations:
                        one_line = " ".join(violation.split())
                        out.write(f"#{ex.seq} {ex.operation or ex.path} (SOAP {ex.version or '?'}): {one_line}\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "interop-proxy"

    def log_message(self, *args):  # the exchange log says it all
        pass

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = io.BytesIO()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data.getvalue()
                data.write(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def forward(self):
        started = time.monotonic()
        proxy = self.server
        body = self.read_body()
        ex = Exchange(next(proxy.counter), self.command, self.path, self.headers, body)
        soap = self.command == "POST" and (
            "/soap" in self.path
            or "xml" in (self.headers.get("Content-Type") or "").lower()
        )
        if soap:
            try:
                request_info(ex, proxy.validator)
            except Exception:  # noqa: BLE001 - a bug here must not hide the exchange
                ex.notes.append("proxy error reading the request: " + traceback.format_exc(limit=3))
        try:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=300)
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    conn.putheader(key, value)
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            answer = conn.getresponse()
            status, reason = answer.status, answer.reason
            resp_headers = answer.getheaders()
            resp_body = answer.read()
            conn.close()
        except OSError as error:
            ex.violations.append(f"gateway unreachable: {error!r}")
            status, reason, resp_headers = 502, "Bad Gateway", [("Content-Type", "text/plain")]
            resp_body = f"proxy: gateway unreachable: {error}\n".encode()
        else:
            if soap:
                try:
                    if proxy.validator is None:
                        raise RuntimeError(f"no WSDL schema loaded: {proxy.validator_error}")
                    check_response(ex, status, answer.headers, resp_body, proxy.validator)
                except Exception:  # noqa: BLE001 - count it: an unchecked answer is not a pass
                    ex.violations.append("proxy could not check the answer: "
                                         + traceback.format_exc(limit=3))
        # Recorded before the answer is relayed: the run stops the proxy as soon as the client
        # exits, and the last exchange must not be lost with it.
        proxy.record(ex, status, reason, resp_headers, resp_body, (time.monotonic() - started) * 1000)
        # Relay: the status line and headers as the gateway sent them (no Server/Date of ours).
        self.send_response_only(status, reason)
        for key, value in resp_headers:
            if key.lower() not in HOP_BY_HOP or (self.command == "HEAD" and key.lower() == "content-length"):
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(resp_body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp_body)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = forward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="the gateway's base URL")
    parser.add_argument("--wsdl-path", default="/soap/refunds?wsdl")
    parser.add_argument("--violations", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    for path in (args.violations, args.log):
        open(path, "a", encoding="utf-8").close()
    proxy = Proxy((args.host, args.port), args.upstream, args.violations, args.log)
    try:
        proxy.load_validator(args.wsdl_path)
    except Exception as error:  # noqa: BLE001 - serve anyway; every SOAP answer then counts
        proxy.validator_error = repr(error)
        with open(args.violations, "a", encoding="utf-8") as out:
            out.write(f"proxy: cannot load the WSDL schema: {error!r}\n")
    print(f"proxy listening on http://{args.host}:{proxy.server_address[1]} -> {args.upstream}",
          file=sys.stderr, flush=True)
    try:
        proxy.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
