// Interop client: JAX-WS RI (Debian `jaxws`, wsimport-generated from the live WSDL) on the
// machine's JDK. Runs the lifecycle of tests/interop/README.md and asserts every value.
//
// The generated code lives in package `refundsclient` (wsimport -p refundsclient). JAXB silently
// leaves unmatched elements null (objects) or 0/false (primitives), so every step also checks the
// raw response captured by a SOAPHandler: the SOAP envelope version and Content-Type, that the
// response validates against the WSDL's own schema, and the lexical value of primitive fields.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.math.BigDecimal;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.LocalDate;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;

import javax.xml.XMLConstants;
import javax.xml.namespace.QName;
import javax.xml.parsers.DocumentBuilder;
import javax.xml.parsers.DocumentBuilderFactory;
import javax.xml.transform.dom.DOMSource;
import javax.xml.validation.Schema;
import javax.xml.validation.SchemaFactory;
import javax.xml.ws.BindingProvider;
import javax.xml.ws.Holder;
import javax.xml.ws.handler.Handler;
import javax.xml.ws.handler.MessageContext;
import javax.xml.ws.handler.soap.SOAPHandler;
import javax.xml.ws.handler.soap.SOAPMessageContext;

import org.w3c.dom.Attr;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.NamedNodeMap;
import org.w3c.dom.Node;

import refundsclient.*;

public class RefundsInterop {
    static final String TNS = "urn:refunds-gateway:refunds";
    static final String SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/";
    static final String SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope";

    static int failures = 0;
    static int passes = 0;
    static final Capture CAPTURE = new Capture();
    static Schema schema;
    static String soapVersion;

    // ---------------------------------------------------------------- raw capture

    /** Records the last request and response bytes and the response's Content-Type. */
    static final class Capture implements SOAPHandler<SOAPMessageContext> {
        volatile byte[] request;
        volatile byte[] response;
        volatile String responseContentType;

        void reset() {
            request = null;
            response = null;
            responseContentType = null;
        }

        public Set<QName> getHeaders() {
            return Collections.emptySet();
        }

        public boolean handleMessage(SOAPMessageContext ctx) {
            boolean outbound = (Boolean) ctx.get(MessageContext.MESSAGE_OUTBOUND_PROPERTY);
            try {
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                ctx.getMessage().writeTo(out);
                if (outbound) {
                    request = out.toByteArray();
                } else {
                    response = out.toByteArray();
                    responseContentType = header(ctx, "Content-Type");
                }
            } catch (Exception e) {
                if (outbound) request = ("<capture failed: " + e + ">").getBytes(StandardCharsets.UTF_8);
                else response = ("<capture failed: " + e + ">").getBytes(StandardCharsets.UTF_8);
            }
            return true;
        }

        public boolean handleFault(SOAPMessageContext ctx) {
            return handleMessage(ctx);
        }

        public void close(MessageContext ctx) {}

        @SuppressWarnings("unchecked")
        static String header(MessageContext ctx, String name) {
            Object h = ctx.get(MessageContext.HTTP_RESPONSE_HEADERS);
            if (!(h instanceof Map)) return null;
            for (Map.Entry<String, List<String>> e : ((Map<String, List<String>>) h).entrySet()) {
                if (e.getKey() != null && e.getKey().equalsIgnoreCase(name) && e.getValue() != null
                        && !e.getValue().isEmpty()) {
                    return e.getValue().get(0);
                }
            }
            return null;
        }
    }

    // ---------------------------------------------------------------- checks

    interface Body {
        void run(List<String> problems) throws Exception;
    }

    static void step(String name, Body body) {
        List<String> problems = new ArrayList<>();
        CAPTURE.reset();
        try {
            body.run(problems);
        } catch (Throwable t) {
            problems.add("exception " + t.getClass().getName() + ": " + t.getMessage());
        }
        checkRaw(problems);
        if (problems.isEmpty()) {
            passes++;
            System.out.println("PASS " + name);
        } else {
            failures++;
            System.out.println("FAIL " + name + ": " + String.join("; ", problems));
            System.err.println("---- " + name + ": request");
            System.err.println(text(CAPTURE.request));
            System.err.println("---- " + name + ": response (Content-Type " + CAPTURE.responseContentType + ")");
            System.err.println(text(CAPTURE.response));
        }
        System.out.flush();
    }

    static String text(byte[] b) {
        return b == null ? "<none captured>" : new String(b, StandardCharsets.UTF_8);
    }

    /** Every response: the right SOAP version, Content-Type, and valid against the WSDL schema. */
    static void checkRaw(List<String> problems) {
        if (CAPTURE.response == null) {
            problems.add("no response captured");
            return;
        }
        Element env;
        try {
            env = parse(CAPTURE.response).getDocumentElement();
        } catch (Exception e) {
            problems.add("response is not well-formed XML: " + e.getMessage());
            return;
        }
        String wantNs = "1.2".equals(soapVersion) ? SOAP12_NS : SOAP11_NS;
        if (!wantNs.equals(env.getNamespaceURI()) || !"Envelope".equals(env.getLocalName())) {
            problems.add("response envelope is {" + env.getNamespaceURI() + "}" + env.getLocalName()
                    + ", want {" + wantNs + "}Envelope");
        }
        String ct = CAPTURE.responseContentType;
        String wantCt = "1.2".equals(soapVersion) ? "application/soap+xml" : "text/xml";
        if (ct == null || !ct.toLowerCase().startsWith(wantCt)) {
            problems.add("response Content-Type " + ct + ", want " + wantCt + "; charset=utf-8");
        }
        Element op = bodyChild(env);
        if (op == null) {
            problems.add("response Body has no element child");
            return;
        }
        if (schema != null) {
            try {
                schema.newValidator().validate(new DOMSource(op));
            } catch (Exception e) {
                problems.add("response " + op.getLocalName() + " violates the WSDL schema: " + e.getMessage());
            }
        }
    }

    static Document parse(byte[] bytes) throws Exception {
        DocumentBuilderFactory f = DocumentBuilderFactory.newInstance();
        f.setNamespaceAware(true);
        f.setFeature("http://apache.org/xml/features/disallow-doctype-decl", true);
        DocumentBuilder b = f.newDocumentBuilder();
        return b.parse(new ByteArrayInputStream(bytes));
    }

    static Element firstElement(Node parent) {
        for (Node n = parent.getFirstChild(); n != null; n = n.getNextSibling()) {
            if (n.getNodeType() == Node.ELEMENT_NODE) return (Element) n;
        }
        return null;
    }

    static Element bodyChild(Element env) {
        for (Node n = env.getFirstChild(); n != null; n = n.getNextSibling()) {
            if (n.getNodeType() == Node.ELEMENT_NODE && "Body".equals(n.getLocalName())) {
                return firstElement(n);
            }
        }
        return null;
    }

    /** Text of the element reached from the response operation element by local names, or null. */
    static String raw(String... path) {
        if (CAPTURE.response == null) return null;
        try {
            Element e = bodyChild(parse(CAPTURE.response).getDocumentElement());
            for (String name : path) {
                if (e == null) return null;
                Element next = null;
                for (Node n = e.getFirstChild(); n != null; n = n.getNextSibling()) {
                    if (n.getNodeType() == Node.ELEMENT_NODE && name.equals(n.getLocalName())
                            && TNS.equals(n.getNamespaceURI())) {
                        next = (Element) n;
                        break;
                    }
                }
                e = next;
            }
            return e == null ? null : e.getTextContent().trim();
        } catch (Exception ex) {
            return null;
        }
    }

    static int rawCount(String name) {
        if (CAPTURE.response == null) return -1;
        try {
            Element e = bodyChild(parse(CAPTURE.response).getDocumentElement());
            int c = 0;
            for (Node n = e.getFirstChild(); n != null; n = n.getNextSibling()) {
                if (n.getNodeType() == Node.ELEMENT_NODE && name.equals(n.getLocalName())) c++;
            }
            return c;
        } catch (Exception ex) {
            return -1;
        }
    }

    static void eq(List<String> p, String what, Object want, Object got) {
        if (got == null) {
            p.add(what + " missing (null), want " + want);
        } else if (!want.equals(got)) {
            p.add(what + " = " + repr(got) + ", want " + repr(want));
        }
    }

    static String repr(Object o) {
        return o instanceof String ? "\"" + o + "\"" : String.valueOf(o);
    }

    /** Primitive field: JAXB gives 0/false when absent, so check the raw element's text too. */
    static void rawEq(List<String> p, String want, String... path) {
        String got = raw(path);
        String what = String.join(".", path);
        if (got == null) p.add(what + " element missing in raw response, want " + want);
        else if (!want.equals(got)) p.add(what + " raw text \"" + got + "\", want \"" + want + "\"");
    }

    /** Money: numerically equal AND the same scale (45.50 must come back as 45.50). */
    static void money(List<String> p, String what, String want, BigDecimal got) {
        BigDecimal w = new BigDecimal(want);
        if (got == null) {
            p.add(what + " missing (null), want " + want);
            return;
        }
        if (got.compareTo(w) != 0) p.add(what + " = " + got.toPlainString() + ", want " + want);
        else if (got.scale() != w.scale())
            p.add(what + " = " + got.toPlainString() + " (scale " + got.scale() + "), want " + want
                    + " (scale " + w.scale() + ")");
    }

    static void errors(List<String> p, Holder<Errors> h, int code) {
        if (h.value == null) {
            p.add("errors missing (null), want faultCode " + code);
            return;
        }
        rawEq(p, String.valueOf(code), "errors", "faultCode");
        if (h.value.getFaultCode() != code)
            p.add("errors.faultCode = " + h.value.getFaultCode() + " (" + h.value.getFaultString() + "), want " + code);
        if (h.value.getFaultString() == null) p.add("errors.faultString missing (null)");
        else if (code != 0 && h.value.getFaultString().isEmpty()) p.add("errors.faultString empty for faultCode " + code);
    }

    // ---------------------------------------------------------------- set-up

    static String sha1(String s) throws Exception {
        byte[] d = MessageDigest.getInstance("SHA-1").digest(s.getBytes(StandardCharsets.UTF_8));
        StringBuilder sb = new StringBuilder();
        for (byte b : d) sb.append(String.format("%02x", b));
        return sb.toString();
    }

    static Authenticate auth(String login, String password) throws Exception {
        String day = LocalDate.now(ZoneId.of("Europe/Warsaw")).format(DateTimeFormatter.ofPattern("yyyyMMdd"));
        Authenticate a = new Authenticate();
        a.setUserLogin(login);
        a.setAuthenticateKey(sha1(day + sha1(password)));
        return a;
    }

    /** The xs:schema of the live WSDL, with the namespace declarations in scope copied onto it. */
    static Schema loadSchema(String wsdlUrl) throws Exception {
        byte[] wsdl;
        try (InputStream in = new URL(wsdlUrl).openStream()) {
            wsdl = in.readAllBytes();
        }
        Document doc = parse(wsdl);
        Element s = (Element) doc.getElementsByTagNameNS(XMLConstants.W3C_XML_SCHEMA_NS_URI, "schema").item(0);
        for (Node a = s.getParentNode(); a != null && a.getNodeType() == Node.ELEMENT_NODE; a = a.getParentNode()) {
            NamedNodeMap attrs = a.getAttributes();
            for (int i = 0; i < attrs.getLength(); i++) {
                Attr at = (Attr) attrs.item(i);
                if (XMLConstants.XMLNS_ATTRIBUTE_NS_URI.equals(at.getNamespaceURI())
                        && !s.hasAttributeNS(XMLConstants.XMLNS_ATTRIBUTE_NS_URI, at.getLocalName())) {
                    s.setAttributeNS(XMLConstants.XMLNS_ATTRIBUTE_NS_URI, at.getName(), at.getValue());
                }
            }
        }
        return SchemaFactory.newInstance(XMLConstants.W3C_XML_SCHEMA_NS_URI).newSchema(new DOMSource(s, wsdlUrl));
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            System.out.println("FAIL setup: environment variable " + name + " is not set");
            System.exit(2);
        }
        return v;
    }

    // ---------------------------------------------------------------- the lifecycle

    public static void main(String[] args) throws Exception {
        String wsdlUrl = env("WSDL_URL");
        soapVersion = env("SOAP_VERSION");
        String login = env("GATEWAY_LOGIN");
        String password = env("GATEWAY_PASSWORD");

        RefundsPortType port;
        try {
            schema = loadSchema(wsdlUrl);
            RefundsService service = new RefundsService(new URL(wsdlUrl));
            if ("1.1".equals(soapVersion)) port = service.getRefundsSoap();
            else if ("1.2".equals(soapVersion)) port = service.getRefundsSoap12();
            else throw new IllegalArgumentException("SOAP_VERSION must be 1.1 or 1.2, got " + soapVersion);
            BindingProvider bp = (BindingProvider) port;
            Map<String, Object> rc = bp.getRequestContext();
            rc.put("com.sun.xml.ws.connect.timeout", 10000);
            rc.put("com.sun.xml.ws.request.timeout", 30000);
            @SuppressWarnings("rawtypes")
            List<Handler> chain = bp.getBinding().getHandlerChain();
            chain.add(CAPTURE);
            bp.getBinding().setHandlerChain(chain);
            System.err.println("endpoint " + rc.get(BindingProvider.ENDPOINT_ADDRESS_PROPERTY) + ", binding "
                    + bp.getBinding().getBindingID());
        } catch (Throwable t) {
            System.out.println("FAIL setup: " + t);
            t.printStackTrace();
            System.exit(1);
            return;
        }
        final RefundsPortType p = port;
        final Authenticate a = auth(login, password);

        step("01 getPossibleAutoRefunds(order 2001)", pr -> {
            SourceParams in = new SourceParams();
            in.setSourceType("order");
            in.setSourceId(2001);
            Holder<Errors> err = new Holder<>();
            Holder<List<PossibleAutoRefund>> res = new Holder<>();
            p.getPossibleAutoRefunds(a, in, err, res);
            errors(pr, err, 0);
            if (res.value == null || res.value.size() != 1) {
                pr.add("results: want exactly 1, got " + (res.value == null ? "null" : res.value.size())
                        + " (raw results elements: " + rawCount("results") + ")");
                return;
            }
            PossibleAutoRefund r = res.value.get(0);
            eq(pr, "results[0].paymentId", "11", r.getPaymentId());
            money(pr, "results[0].value", "200.00", r.getValue());
            eq(pr, "results[0].refundType", "full", r.getRefundType());
            eq(pr, "results[0].refundCurrency", "PLN", r.getRefundCurrency());
        });

        step("02 addAutomaticRefundForOrder(2001, 11, 40.00 PLN)", pr -> {
            AddAutomaticRefundForOrderParams in = new AddAutomaticRefundForOrderParams();
            in.setSourceId(2001);
            in.setPaymentId("11");
            in.setRefundValue(new BigDecimal("40.00"));
            in.setRefundCurrency("PLN");
            Holder<Errors> err = new Holder<>();
            Holder<RefundIdResult> res = new Holder<>();
            p.addAutomaticRefundForOrder(a, in, err, res);
            errors(pr, err, 0);
            refundIdIs(pr, res, 20);
        });

        step("03 addManualRefund(return 601, 10.00 PLN, paymentFormId 2)", pr -> {
            RefundDetails d = new RefundDetails();
            d.setPaymentFormId(2);
            d.setAccount("PL61109010140000071219812874");
            AddManualRefundParams in = new AddManualRefundParams();
            in.setSourceType("return");
            in.setSourceId(601);
            in.setRefundValue(new BigDecimal("10.00"));
            in.setRefundCurrency("PLN");
            in.setRefundDetails(d);
            Holder<Errors> err = new Holder<>();
            Holder<RefundIdResult> res = new Holder<>();
            p.addManualRefund(a, in, err, res);
            errors(pr, err, 0);
            refundIdIs(pr, res, 21);
        });

        step("04 addAutomaticRefund(return 603)", pr -> {
            AddAutomaticRefundParams in = new AddAutomaticRefundParams();
            in.setSourceType("return");
            in.setSourceId(603);
            Holder<Errors> err = new Holder<>();
            Holder<RefundIdResult> res = new Holder<>();
            p.addAutomaticRefund(a, in, err, res);
            errors(pr, err, 0);
            refundIdIs(pr, res, 22);
        });

        step("05 updateRefund(order 2001, 20, 45.50 PLN)", pr -> {
            UpdateRefundParams in = new UpdateRefundParams();
            in.setSourceType("order");
            in.setSourceId(2001);
            in.setPaymentId("20");
            in.setRefundValue(new BigDecimal("45.50"));
            in.setRefundCurrency("PLN");
            Holder<Errors> err = new Holder<>();
            Holder<UpdateRefundResult> res = new Holder<>();
            p.updateRefund(a, in, err, res);
            errors(pr, err, 0);
            if (res.value == null) pr.add("result missing (null), want updateResult true");
            else {
                rawEq(pr, "true", "result", "updateResult");
                eq(pr, "result.updateResult", true, res.value.isUpdateResult());
            }
        });

        step("06 getRefundStatus(order 2001, 20) = New 45.50", pr -> status(p, a, pr, "New", false));

        step("07 confirmRefund(order 2001, 20)", pr -> {
            Holder<Errors> err = new Holder<>();
            Holder<ConfirmRefundResult> res = new Holder<>();
            p.confirmRefund(a, refund("order", 2001, "20"), err, res);
            errors(pr, err, 0);
            if (res.value == null) pr.add("result missing (null), want confirmResult true");
            else {
                rawEq(pr, "true", "result", "confirmResult");
                eq(pr, "result.confirmResult", true, res.value.isConfirmResult());
            }
        });

        step("08 getRefundStatus(order 2001, 20) = Processing", pr -> status(p, a, pr, "Processing", true));

        step("09 cancelRefund(return 601, 21)", pr -> {
            Holder<Errors> err = new Holder<>();
            Holder<CancelRefundResult> res = new Holder<>();
            p.cancelRefund(a, refund("return", 601, "21"), err, res);
            errors(pr, err, 0);
            if (res.value == null) pr.add("result missing (null), want resultStatus true");
            else {
                rawEq(pr, "true", "result", "resultStatus");
                eq(pr, "result.resultStatus", true, res.value.isResultStatus());
            }
        });

        step("10 retrieveRefundsList(all, page 0, limit 1)", pr -> list(p, a, pr, 0, "22", "30.00"));
        step("11 retrieveRefundsList(all, page 1, limit 1)", pr -> list(p, a, pr, 1, "23", "40.00"));

        step("12 addAutomaticRefundForOrder(2001, 11, 1000.00 PLN) = 4003", pr -> {
            AddAutomaticRefundForOrderParams in = new AddAutomaticRefundForOrderParams();
            in.setSourceId(2001);
            in.setPaymentId("11");
            in.setRefundValue(new BigDecimal("1000.00"));
            in.setRefundCurrency("PLN");
            Holder<Errors> err = new Holder<>();
            Holder<RefundIdResult> res = new Holder<>();
            p.addAutomaticRefundForOrder(a, in, err, res);
            errors(pr, err, 4003);
            if (res.value != null) pr.add("result present (refundId " + res.value.getRefundId() + "), want none");
        });

        step("13 addManualRefund(order 2001, 5.00 EUR) = 4004", pr -> {
            RefundDetails d = new RefundDetails();
            d.setPaymentFormId(1);
            AddManualRefundParams in = new AddManualRefundParams();
            in.setSourceType("order");
            in.setSourceId(2001);
            in.setRefundValue(new BigDecimal("5.00"));
            in.setRefundCurrency("EUR");
            in.setRefundDetails(d);
            Holder<Errors> err = new Holder<>();
            Holder<RefundIdResult> res = new Holder<>();
            p.addManualRefund(a, in, err, res);
            errors(pr, err, 4004);
            if (res.value != null) pr.add("result present (refundId " + res.value.getRefundId() + "), want none");
        });

        step("14 cancelRefund(order 2001, 20) = 4019", pr -> {
            Holder<Errors> err = new Holder<>();
            Holder<CancelRefundResult> res = new Holder<>();
            p.cancelRefund(a, refund("order", 2001, "20"), err, res);
            errors(pr, err, 4019);
            if (res.value != null && res.value.isResultStatus()) pr.add("result.resultStatus true on a failed cancel");
        });

        step("15 getRefundStatus with a wrong authenticateKey = 1", pr -> {
            Authenticate bad = new Authenticate();
            bad.setUserLogin(login);
            bad.setAuthenticateKey(sha1("not-" + a.getAuthenticateKey()));
            Holder<Errors> err = new Holder<>();
            Holder<RefundStatusResult> res = new Holder<>();
            p.getRefundStatus(bad, refund("order", 2001, "20"), err, res);
            errors(pr, err, 1);
            if (res.value != null) pr.add("result present on a login failure (refundStatus " + res.value.getRefundStatus() + ")");
        });

        System.out.println("# java-jaxws SOAP " + soapVersion + ": " + passes + " passed, " + failures + " failed");
        System.exit(failures == 0 ? 0 : 1);
    }

    static RefundParams refund(String type, long id, String paymentId) {
        RefundParams r = new RefundParams();
        r.setSourceType(type);
        r.setSourceId(id);
        r.setPaymentId(paymentId);
        return r;
    }

    /** A RefundIdResult holding the wanted refundId (checked in the raw response too). */
    static void refundIdIs(List<String> pr, Holder<RefundIdResult> res, long want) {
        if (res.value == null) pr.add("result missing (null), want refundId " + want);
        else {
            rawEq(pr, String.valueOf(want), "result", "refundId");
            eq(pr, "result.refundId", want, res.value.getRefundId());
        }
    }

    static final String DATE = "\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}";

    /**
     * getRefundStatus(order 2001, 20): the wanted status, 45.50 PLN, a dated refundDateAdd, and either an
     * empty refundDateConfirm and refundExternalId (not confirmed) or a dated refundDateConfirm.
     */
    static void status(RefundsPortType p, Authenticate a, List<String> pr, String wantStatus, boolean confirmed) {
        Holder<Errors> err = new Holder<>();
        Holder<RefundStatusResult> res = new Holder<>();
        p.getRefundStatus(a, refund("order", 2001, "20"), err, res);
        errors(pr, err, 0);
        RefundStatusResult r = res.value;
        if (r == null) {
            pr.add("result missing (null)");
            return;
        }
        eq(pr, "result.refundStatus", wantStatus, r.getRefundStatus());
        money(pr, "result.refundValue", "45.50", r.getRefundValue());
        eq(pr, "result.refundCurrency", "PLN", r.getRefundCurrency());
        if (r.getRefundDateAdd() == null) pr.add("result.refundDateAdd missing (null)");
        else if (!r.getRefundDateAdd().matches(DATE))
            pr.add("result.refundDateAdd \"" + r.getRefundDateAdd() + "\" is not YYYY-MM-DD HH:MM:SS");
        if (!confirmed) {
            eq(pr, "result.refundDateConfirm", "", r.getRefundDateConfirm());
            eq(pr, "result.refundExternalId", "", r.getRefundExternalId());
        } else if (r.getRefundDateConfirm() == null) pr.add("result.refundDateConfirm missing (null)");
        else if (r.getRefundDateConfirm().isEmpty()) pr.add("result.refundDateConfirm is empty");
        else if (!r.getRefundDateConfirm().matches(DATE))
            pr.add("result.refundDateConfirm \"" + r.getRefundDateConfirm() + "\" is not YYYY-MM-DD HH:MM:SS");
    }

    static void list(RefundsPortType p, Authenticate a, List<String> pr, int page, String paymentId, String value) {
        RetrieveRefundsListParams in = new RetrieveRefundsListParams();
        in.setSourceType("all");
        in.setResultsPage(page);
        in.setResultsLimit(1);
        Holder<Errors> err = new Holder<>();
        Holder<List<RefundsListEntry>> res = new Holder<>();
        Holder<Long> all = new Holder<>(), pages = new Holder<>(), rpage = new Holder<>(), limit = new Holder<>();
        p.retrieveRefundsList(a, in, err, res, all, pages, rpage, limit);
        errors(pr, err, 0);
        eq(pr, "resultsNumberAll", 2L, all.value);
        eq(pr, "resultsNumberPage", 2L, pages.value);
        eq(pr, "resultsPage", (long) page, rpage.value);
        eq(pr, "resultsLimit", 1L, limit.value);
        if (res.value == null || res.value.size() != 1) {
            pr.add("results: want exactly 1, got " + (res.value == null ? "null" : res.value.size())
                    + " (raw results elements: " + rawCount("results") + ")");
            return;
        }
        RefundsListEntry e = res.value.get(0);
        eq(pr, "results[0].sourceType", "return", e.getSourceType());
        rawEq(pr, "603", "results", "sourceId");
        eq(pr, "results[0].sourceId", 603L, e.getSourceId());
        eq(pr, "results[0].paymentId", paymentId, e.getPaymentId());
        money(pr, "results[0].refundValue", value, e.getRefundValue());
        eq(pr, "results[0].refundCurrency", "PLN", e.getRefundCurrency());
    }
}
