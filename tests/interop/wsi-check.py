#!/usr/bin/env python3
"""WS-I Basic Profile (1.1/1.2, and its SOAP 1.2 counterpart BP 2.0) checks of a WSDL 1.1 document.

Usage: wsi-check.py WSDL [WSDL ...]   (files or http:// URLs)

Prints one line per rule (`ok` or `VIOLATION`) and exits 1 if any rule is violated in any document.
The rules, with the Basic Profile requirement each one comes from:

- the document is UTF-8 (R4003) and WSDL 1.1 in the right namespaces (R2028, R2029); no
  wsdl:import (our contract is one file); wsdl:documentation only as a first child (R2030);
- wsdl:types holds XML Schema 1.0 schemas (R2800, R2105) that compile (xmlschema), each with
  elementFormDefault="qualified" and the WSDL's targetNamespace (one namespace throughout);
- no SOAP encoding anywhere: no soapenc:Array, no (wsdl:)arrayType, no import of the SOAP
  encoding namespace (R2110, R2111, R2112, R2113), no use="encoded" and no encodingStyle
  (R2706, R2707);
- every message has exactly one part with `element=` (never `type=`) naming an element
  declared in the schema, in the target namespace (R2204, R2206, R2201); body messages name it
  `parameters` (wrapped style), header messages (soap:header) may name it after the element;
- the portType has only request-response operations (R2303), with unique names (R2304),
  each referencing messages that exist;
- there is a SOAP 1.1 and a SOAP 1.2 binding of the portType, each binding every portType
  operation exactly once (R2718), style document everywhere (R2705; soap:binding style and
  soap:operation style), HTTP transport (R2701, R2702), soap:body use="literal" on every input
  and output (R2706) without a `namespace` attribute (R2716) and without `parts` naming
  anything other than `parameters` (R2210, R2201);
- every soap:operation has a non-empty soapAction (the same for an operation in both bindings,
  distinct between operations);
- unique wire signatures: within each binding, no two operations take the same request element
  (R2710), so the Body child alone says which operation is called;
- a service whose ports reference existing bindings, one port per binding, each with exactly
  one soap:address / soap12:address whose location is an absolute http(s) URL (R2711 is noted
  only: the SOAP 1.1 and 1.2 ports share their address on purpose).
"""

import sys
import urllib.parse
import urllib.request

import xmlschema
from lxml import etree

WSDL = "http://schemas.xmlsoap.org/wsdl/"
SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
XSD = "http://www.w3.org/2001/XMLSchema"
SOAPENC = {"http://schemas.xmlsoap.org/soap/encoding/", "http://www.w3.org/2003/05/soap-encoding"}
HTTP_TRANSPORT = "http://schemas.xmlsoap.org/soap/http"
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def qname(element, value):
    """Resolves a QName-valued attribute in the scope of `element` to (namespace, local)."""
    if value is None:
        return None
    prefix, _, name = value.rpartition(":")
    return (element.nsmap.get(prefix or None), name)


class Report:
    def __init__(self, source):
        self.source = source
        self.violations = 0
        self.checks = 0

    def rule(self, name, problems):
        self.checks += 1
        if problems:
            self.violations += 1
            print(f"  VIOLATION {name}")
            for problem in problems[:20]:
                print(f"      {problem}")
            if len(problems) > 20:
                print(f"      ... and {len(problems) - 20} more")
        else:
            print(f"  ok        {name}")


def load(source):
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as answer:
            return answer.read()
    with open(source, "rb") as handle:
        return handle.read()


def check(source):
    report = Report(source)
    print(f"WS-I Basic Profile check of {source}")
    raw = load(source)
    root = etree.fromstring(raw, PARSER)
    tree = root.getroottree()

    encoding = (tree.docinfo.encoding or "utf-8").lower()
    report.rule("UTF-8 or UTF-16 document (R4003)",
                [] if encoding in ("utf-8", "utf-16") else [f"encoding {encoding}"])
    report.rule("WSDL 1.1 definitions root (R2028)",
                [] if root.tag == f"{{{WSDL}}}definitions" else [f"root is {root.tag}"])
    tns = root.get("targetNamespace")
    problems = [] if tns and urllib.parse.urlsplit(tns).scheme else [f"targetNamespace {tns!r} is not an absolute URI"]
    report.rule("targetNamespace present and absolute", problems)
    report.rule("no wsdl:import (one self-contained document)",
                [f"line {e.sourceline}" for e in root.iter(f"{{{WSDL}}}import")])
    problems = []
    for doc in root.iter(f"{{{WSDL}}}documentation"):
        parent = doc.getparent()
        first = next(c for c in parent if isinstance(c.tag, str))
        if first is not doc:
            problems.append(f"line {doc.sourceline}: wsdl:documentation is not the first child of {parent.tag}")
    report.rule("wsdl:documentation only as first child (R2030)", problems)

    # --- types ------------------------------------------------------------------------------
    types = root.findall(f"{{{WSDL}}}types")
    schemas = [s for t in types for s in t.findall(f"{{{XSD}}}schema")]
    problems = []
    if len(types) != 1:
        problems.append(f"{len(types)} wsdl:types elements")
    for t in types:
        for child in t:
            if isinstance(child.tag, str) and child.tag != f"{{{XSD}}}schema":
                problems.append(f"wsdl:types holds {child.tag} (R2800: XML Schema 1.0 only)")
    if not schemas:
        problems.append("no xs:schema in wsdl:types")
    report.rule("types are XML Schema 1.0 schemas inside wsdl:types (R2800, R2105)", problems)

    problems = []
    compiled = []
    for schema in schemas:
        try:
            compiled.append(xmlschema.XMLSchema10(etree.tostring(schema).decode("utf-8")))
        except Exception as error:  # noqa: BLE001 - report any reason the schema does not build
            problems.append(f"line {schema.sourceline}: {error}")
    report.rule("every schema compiles", problems)
    report.rule('elementFormDefault="qualified" on every schema',
                [f"line {s.sourceline}: elementFormDefault={s.get('elementFormDefault')!r}"
                 for s in schemas if s.get("elementFormDefault") != "qualified"])
    report.rule("schema targetNamespace = the WSDL's targetNamespace",
                [f"line {s.sourceline}: {s.get('targetNamespace')!r}"
                 for s in schemas if s.get("targetNamespace") != tns])
    declared = set()
    for schema in schemas:
        for element in schema.findall(f"{{{XSD}}}element"):
            declared.add((schema.get("targetNamespace"), element.get("name")))

    problems = []
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        for attr, value in el.attrib.items():
            if local_name(attr) == "arrayType":
                problems.append(f"line {el.sourceline}: {attr}")
            if attr in ("type", "base", "ref") and qname(el, value) and qname(el, value)[0] in SOAPENC:
                problems.append(f"line {el.sourceline}: {attr}={value!r} (SOAP encoding type)")
        if el.tag == f"{{{XSD}}}import" and el.get("namespace") in SOAPENC:
            problems.append(f"line {el.sourceline}: imports the SOAP encoding namespace")
        for ns in (el.nsmap or {}).values():
            if ns in SOAPENC and el is root:
                problems.append("the SOAP encoding namespace is declared on the root")
    report.rule("no SOAP-encoded arrays or types (R2110-R2113)", sorted(set(problems)))
    problems = []
    for el in root.iter(f"{{{SOAP11}}}*", f"{{{SOAP12}}}*"):
        if el.get("use") == "encoded":
            problems.append(f"line {el.sourceline}: {local_name(el.tag)} use=\"encoded\"")
        if el.get("encodingStyle") is not None:
            problems.append(f"line {el.sourceline}: {local_name(el.tag)} has encodingStyle")
    report.rule('no use="encoded", no encodingStyle (R2706, R2707)', problems)

    # --- messages ---------------------------------------------------------------------------
    # Messages bound as SOAP headers (the optional idempotencyKey) carry one element part of
    # their own name; every other message is a wrapped body with one part `parameters`.
    header_messages = {
        header.get("message", "").split(":")[-1]
        for soap_ns in (SOAP11, SOAP12)
        for header in root.iter(f"{{{soap_ns}}}header")
    }
    messages = {}
    problems = []
    for message in root.findall(f"{{{WSDL}}}message"):
        name = message.get("name")
        parts = message.findall(f"{{{WSDL}}}part")
        messages[(tns, name)] = parts
        if len(parts) != 1:
            problems.append(f"message {name}: {len(parts)} parts, expected exactly 1")
            continue
        part = parts[0]
        if part.get("name") != "parameters" and name not in header_messages:
            problems.append(f"message {name}: part named {part.get('name')!r}, expected 'parameters'")
        if part.get("type") is not None:
            problems.append(f"message {name}: part uses type= (R2204: document/literal parts use element=)")
        element = qname(part, part.get("element"))
        if element is None:
            problems.append(f"message {name}: part has no element=")
        elif element not in declared:
            problems.append(f"message {name}: element {element} is not declared in the schema")
        elif element[0] != tns:
            problems.append(f"message {name}: element {element} outside the target namespace")
    if not messages:
        problems.append("no messages")
    report.rule("each message: exactly one part `parameters` with element= declared in the schema (R2204, R2206)", problems)

    # --- portType ---------------------------------------------------------------------------
    port_types = root.findall(f"{{{WSDL}}}portType")
    problems = [] if len(port_types) == 1 else [f"{len(port_types)} portTypes, expected 1"]
    operations = {}
    for port_type in port_types:
        for op in port_type.findall(f"{{{WSDL}}}operation"):
            name = op.get("name")
            if name in operations:
                problems.append(f"operation {name} declared twice (R2304: no overloading)")
            ins = op.findall(f"{{{WSDL}}}input")
            outs = op.findall(f"{{{WSDL}}}output")
            children = [local_name(c.tag) for c in op if isinstance(c.tag, str) and local_name(c.tag) != "documentation"]
            if children[:2] != ["input", "output"] or len(ins) != 1 or len(outs) != 1:
                problems.append(f"operation {name}: {children} (R2303: request-response only)")
                continue
            refs = [qname(ins[0], ins[0].get("message")), qname(outs[0], outs[0].get("message"))]
            for ref in refs:
                if ref not in messages:
                    problems.append(f"operation {name}: message {ref} does not exist")
            operations[name] = refs
    if not operations:
        problems.append("no operations")
    report.rule("portType: unique request-response operations with existing messages (R2303, R2304)", problems)

    def request_element(op_name):
        ref = operations.get(op_name, [None])[0]
        parts = messages.get(ref) or []
        return qname(parts[0], parts[0].get("element")) if len(parts) == 1 else None

    # --- bindings ---------------------------------------------------------------------------
    bindings = {}
    actions = {}
    for binding in root.findall(f"{{{WSDL}}}binding"):
        soap_ns = None
        for ns in (SOAP11, SOAP12):
            if binding.find(f"{{{ns}}}binding") is not None:
                soap_ns = ns
        bindings[(tns, binding.get("name"))] = (binding, soap_ns)
    versions = {ns: [b for b, (_, n) in bindings.items() if n == ns] for ns in (SOAP11, SOAP12)}
    report.rule("a SOAP 1.1 and a SOAP 1.2 binding",
                [f"{len(versions[ns])} {label} bindings, expected 1"
                 for ns, label in ((SOAP11, "SOAP 1.1"), (SOAP12, "SOAP 1.2")) if len(versions[ns]) != 1]
                + [f"binding {b[1]} is neither SOAP 1.1 nor 1.2" for b, (_, n) in bindings.items() if n is None])

    for (_, bname), (binding, soap_ns) in bindings.items():
        if soap_ns is None:
            continue
        label = f"binding {bname} (SOAP {'1.1' if soap_ns == SOAP11 else '1.2'})"
        problems = []
        port_type = qname(binding, binding.get("type"))
        if port_type != (tns, port_types[0].get("name") if port_types else None):
            problems.append(f"type {port_type} is not the portType")
        bound = [op.get("name") for op in binding.findall(f"{{{WSDL}}}operation")]
        for name in sorted(set(operations) - set(bound)):
            problems.append(f"operation {name} is not bound")
        for name in sorted(set(bound) - set(operations)):
            problems.append(f"binds {name}, which the portType does not have")
        for name in sorted({n for n in bound if bound.count(n) > 1}):
            problems.append(f"binds {name} more than once")
        report.rule(f"{label}: binds every portType operation exactly once (R2718)", problems)

        problems = []
        sb = binding.find(f"{{{soap_ns}}}binding")
        if (sb.get("style") or "document") != "document":
            problems.append(f"soap:binding style={sb.get('style')!r}")
        if sb.get("transport") != HTTP_TRANSPORT:
            problems.append(f"transport {sb.get('transport')!r}, expected {HTTP_TRANSPORT}")
        for op in binding.findall(f"{{{WSDL}}}operation"):
            so = op.find(f"{{{soap_ns}}}operation")
            if so is not None and (so.get("style") or "document") != "document":
                problems.append(f"{op.get('name')}: soap:operation style={so.get('style')!r}")
        report.rule(f"{label}: document style, HTTP transport (R2705, R2701, R2702)", problems)

        problems = []
        for op in binding.findall(f"{{{WSDL}}}operation"):
            for direction in ("input", "output"):
                io = op.find(f"{{{WSDL}}}{direction}")
                body = io.find(f"{{{soap_ns}}}body") if io is not None else None
                if body is None:
                    problems.append(f"{op.get('name')} {direction}: no soap:body")
                    continue
                if body.get("use") != "literal":
                    problems.append(f"{op.get('name')} {direction}: use={body.get('use')!r}, expected 'literal'")
                if body.get("namespace") is not None:
                    problems.append(f"{op.get('name')} {direction}: soap:body has namespace= (R2716)")
                if body.get("parts") not in (None, "parameters"):
                    problems.append(f"{op.get('name')} {direction}: parts={body.get('parts')!r}")
                for header in io.findall(f"{{{soap_ns}}}header"):
                    if header.get("use") != "literal":
                        problems.append(f"{op.get('name')} {direction}: soap:header use={header.get('use')!r}")
            for fault in op.findall(f"{{{WSDL}}}fault"):
                sf = fault.find(f"{{{soap_ns}}}fault")
                if sf is None or sf.get("use") != "literal" or sf.get("name") != fault.get("name"):
                    problems.append(f"{op.get('name')} fault {fault.get('name')}: soap:fault literal with the same name (R2754)")
        report.rule(f"{label}: document/literal bodies (R2706, R2716, R2210)", problems)

        problems = []
        for op in binding.findall(f"{{{WSDL}}}operation"):
            so = op.find(f"{{{soap_ns}}}operation")
            action = so.get("soapAction") if so is not None else None
            if not action:
                problems.append(f"{op.get('name')}: no soapAction")
            else:
                actions.setdefault(op.get("name"), set()).add(action)
        report.rule(f"{label}: soapAction on every operation", problems)

        problems = []
        seen = {}
        for op in binding.findall(f"{{{WSDL}}}operation"):
            element = request_element(op.get("name"))
            if element is None:
                continue
            if element in seen:
                problems.append(f"{op.get('name')} and {seen[element]} both take {element}")
            seen[element] = op.get("name")
        report.rule(f"{label}: unique wire signatures, one request element per operation (R2710)", problems)

    problems = [f"{name}: different soapActions {sorted(values)} in the two bindings"
                for name, values in actions.items() if len(values) > 1]
    owners = {}
    for name, values in actions.items():
        for value in values:
            owners.setdefault(value, set()).add(name)
    problems += [f"soapAction {value!r} shared by {sorted(names)}" for value, names in owners.items() if len(names) > 1]
    report.rule("soapAction: the same for an operation in both bindings, distinct between operations", problems)

    # --- service ----------------------------------------------------------------------------
    problems = []
    services = root.findall(f"{{{WSDL}}}service")
    if len(services) != 1:
        problems.append(f"{len(services)} services, expected 1")
    locations = {}
    used = {}
    for service in services:
        for port in service.findall(f"{{{WSDL}}}port"):
            ref = qname(port, port.get("binding"))
            if ref not in bindings:
                problems.append(f"port {port.get('name')}: binding {ref} does not exist")
                continue
            used.setdefault(ref, []).append(port.get("name"))
            soap_ns = bindings[ref][1]
            addresses = port.findall(f"{{{soap_ns}}}address") if soap_ns else []
            if len(addresses) != 1:
                problems.append(f"port {port.get('name')}: {len(addresses)} addresses of its binding's SOAP version")
                continue
            location = addresses[0].get("location") or ""
            if urllib.parse.urlsplit(location).scheme not in ("http", "https"):
                problems.append(f"port {port.get('name')}: location {location!r} is not an absolute http(s) URL")
            locations.setdefault(location, []).append(port.get("name"))
    for ref in bindings:
        if len(used.get(ref, [])) != 1:
            problems.append(f"binding {ref[1]} has {len(used.get(ref, []))} ports, expected 1")
    report.rule("service: one port per binding, each with one absolute http(s) address", problems)
    for location, ports in locations.items():
        if len(ports) > 1:
            print(f"  note      R2711 (SHOULD): ports {ports} share {location} (SOAP 1.1 and 1.2 on one endpoint, by design)")

    print(f"  {report.checks} rules, {report.violations} violated")
    return report


def local_name(tag):
    return tag.rsplit("}", 1)[-1]


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for source in argv[1:]:
        try:
            report = check(source)
        except Exception as error:  # noqa: BLE001 - an unreadable document fails the check
            print(f"  VIOLATION cannot check {source}: {error!r}")
            failed += 1
            continue
        failed += report.violations > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
