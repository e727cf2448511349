// Mono ASMX client of the refunds gateway: runs the lifecycle of tests/interop/README.md through
// the SoapHttpClientProtocol proxy `RefundsService` that Mono's `wsdl` tool generated from the
// live WSDL (see ./run; -protocol:Soap12 for SOAP 1.2). The proxy's Url is the one the generator
// took from the WSDL's soap:address.
//
// XmlSerializer leaves a member at its default (0, false, null) when the response does not carry
// it, or carries it under another name, so every reference is checked and every value compared.
//
// Env: SOAP_VERSION (1.1 | 1.2), GATEWAY_LOGIN, GATEWAY_PASSWORD; INTEROP_DUMP=1 prints every
// exchange on stderr (a failing check's always is).

using System;
using System.Collections.Generic;
using System.IO;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using System.Web.Services.Protocols;

// Records the HTTP status and Content-Type of each answer (the generated class is partial).
public partial class RefundsService {
    public static string LastStatus = "";

    protected override WebResponse GetWebResponse(WebRequest request) {
        LastStatus = "";
        try {
            WebResponse r = base.GetWebResponse(request);
            Describe(r);
            return r;
        } catch (WebException e) {
            Describe(e.Response);
            throw;
        }
    }

    static void Describe(WebResponse r) {
        HttpWebResponse h = r as HttpWebResponse;
        if (h != null) LastStatus = "HTTP " + (int)h.StatusCode + ", Content-Type " + h.ContentType;
    }
}

// Copies the request and response envelopes aside (registered in RefundsInterop.exe.config).
public class CaptureExtension : SoapExtension {
    public static string LastRequest = "", LastResponse = "";
    Stream wire, buffer;

    public override Stream ChainStream(Stream stream) {
        wire = stream;
        buffer = new MemoryStream();
        return buffer;
    }

    public override object GetInitializer(LogicalMethodInfo methodInfo, SoapExtensionAttribute attribute) { return null; }
    public override object GetInitializer(Type serviceType) { return null; }
    public override void Initialize(object initializer) { }

    public override void ProcessMessage(SoapMessage message) {
        switch (message.Stage) {
        case SoapMessageStage.AfterSerialize:
            buffer.Position = 0;
            LastRequest = new StreamReader(buffer, Encoding.UTF8).ReadToEnd();
            buffer.Position = 0;
            buffer.CopyTo(wire);
            break;
        case SoapMessageStage.BeforeDeserialize:
            wire.CopyTo(buffer);
            buffer.Position = 0;
            LastResponse = new StreamReader(buffer, Encoding.UTF8).ReadToEnd();
            buffer.Position = 0;
            break;
        }
    }
}

class Problems {
    public readonly List<string> List = new List<string>();
    public void Add(string why) { List.Add(why); }

    static string Q(object v) {
        if (v == null) return "null";
        if (v is string) return "\"" + v + "\"";
        if (v is bool) return (bool)v ? "true" : "false";
        return Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture);
    }

    public void Eq<T>(string what, T want, T got) {
        if (!EqualityComparer<T>.Default.Equals(want, got)) Add(what + " = " + Q(got) + ", want " + Q(want));
    }

    // xs:decimal: compared as numbers (45.50 == 45.5), never through a binary float.
    public void Money(string what, string want, decimal got) {
        decimal w = decimal.Parse(want, System.Globalization.CultureInfo.InvariantCulture);
        if (got != w) Add(what + " = " + Q(got) + ", want " + want);
    }
}

static class RefundsInterop {
    static int passes, failures;
    static readonly bool Dump = !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("INTEROP_DUMP"));
    static readonly Regex Date = new Regex(@"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$");

    static string Sha1Hex(string s) {
        using (SHA1 sha = SHA1.Create()) {
            StringBuilder b = new StringBuilder();
            foreach (byte x in sha.ComputeHash(Encoding.UTF8.GetBytes(s))) b.Append(x.ToString("x2"));
            return b.ToString();
        }
    }

    static string WarsawDay() {
        TimeZoneInfo tz = TimeZoneInfo.FindSystemTimeZoneById("Europe/Warsaw");
        return TimeZoneInfo.ConvertTimeFromUtc(DateTime.UtcNow, tz).ToString("yyyyMMdd");
    }

    static void Step(string name, Action<Problems> body) {
        Problems p = new Problems();
        CaptureExtension.LastRequest = CaptureExtension.LastResponse = "";
        RefundsService.LastStatus = "";
        try {
            body(p);
        } catch (SoapException e) {
            p.List.Insert(0, "SOAP Fault " + e.Code + ": " + e.Message + (e.Detail != null ? " (" + e.Detail.OuterXml + ")" : ""));
        } catch (Exception e) {
            string why = "exception " + e.GetType().Name + ": " + e.Message;
            for (Exception i = e.InnerException; i != null; i = i.InnerException) why += " <- " + i.GetType().Name + ": " + i.Message;
            p.List.Insert(0, why);
        }
        if (p.List.Count == 0) {
            passes++;
            Console.WriteLine("PASS " + name);
        } else {
            failures++;
            Console.WriteLine("FAIL " + name + ": " + string.Join("; ", p.List.ToArray()));
        }
        if (Dump || p.List.Count > 0) {
            Console.Error.WriteLine("---- " + name + ": request\n" + CaptureExtension.LastRequest);
            Console.Error.WriteLine("---- " + name + ": response (" + RefundsService.LastStatus + ")\n" + CaptureExtension.LastResponse);
        }
    }

    static void Errors(Problems p, errors e, int want) {
        if (e == null) {
            p.Add("errors missing (null)");
            return;
        }
        if (e.faultCode != want) p.Add("errors.faultCode = " + e.faultCode + " (\"" + e.faultString + "\"), want " + want);
        if (want == 0 && e.faultString != "") p.Add("errors.faultString = " + (e.faultString == null ? "null" : "\"" + e.faultString + "\"") + ", want \"\"");
        if (want != 0 && string.IsNullOrEmpty(e.faultString)) p.Add("errors.faultString empty for faultCode " + want);
    }

    static void RefundId(Problems p, refundIdResult r, long want) {
        if (r == null) p.Add("result missing (null), want refundId " + want);
        else p.Eq("result.refundId", want, r.refundId);
    }

    static refundParams Ref(string type, long id, string paymentId) {
        refundParams r = new refundParams();
        r.sourceType = type;
        r.sourceId = id;
        r.paymentId = paymentId;
        return r;
    }

    static int Main() {
        string version = Environment.GetEnvironmentVariable("SOAP_VERSION");
        string login = Environment.GetEnvironmentVariable("GATEWAY_LOGIN");
        string password = Environment.GetEnvironmentVariable("GATEWAY_PASSWORD");
        if (string.IsNullOrEmpty(login) || string.IsNullOrEmpty(password) || (version != "1.1" && version != "1.2")) {
            Console.WriteLine("FAIL setup: set SOAP_VERSION (1.1|1.2), GATEWAY_LOGIN and GATEWAY_PASSWORD");
            return 2;
        }

        RefundsService svc = new RefundsService();
        svc.Timeout = 30000;
        SoapProtocolVersion wantVersion = version == "1.2" ? SoapProtocolVersion.Soap12 : SoapProtocolVersion.Soap11;
        if (svc.SoapVersion != wantVersion && !(wantVersion == SoapProtocolVersion.Soap11 && svc.SoapVersion == SoapProtocolVersion.Default)) {
            Console.WriteLine("FAIL setup: the generated proxy speaks " + svc.SoapVersion + ", want " + wantVersion);
            return 1;
        }
        Console.Error.WriteLine("Mono " + Type.GetType("Mono.Runtime").GetMethod("GetDisplayName",
            System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static).Invoke(null, null)
            + ", proxy SoapVersion " + svc.SoapVersion + ", Url " + svc.Url);

        string key = Sha1Hex(WarsawDay() + Sha1Hex(password));
        Func<string, authenticate> auth = k => {
            authenticate a = new authenticate();
            a.userLogin = login;
            a.authenticateKey = k;
            return a;
        };

        Step("01 getPossibleAutoRefunds(order 2001)", p => {
            sourceParams sp = new sourceParams();
            sp.sourceType = "order";
            sp.sourceId = 2001;
            possibleAutoRefund[] results;
            errors e = svc.getPossibleAutoRefunds(auth(key), sp, out results);
            Errors(p, e, 0);
            if (results == null || results.Length != 1) {
                p.Add("results: want exactly 1, got " + (results == null ? "null" : results.Length.ToString()));
                return;
            }
            possibleAutoRefund r = results[0];
            if (r == null) {
                p.Add("results[0] is null");
                return;
            }
            p.Eq("results[0].paymentId", "11", r.paymentId);
            p.Money("results[0].value", "200.00", r.value);
            p.Eq("results[0].refundType", "full", r.refundType);
            p.Eq("results[0].refundCurrency", "PLN", r.refundCurrency);
        });

        Step("02 addAutomaticRefundForOrder(2001, 11, 40.00 PLN)", p => {
            addAutomaticRefundForOrderParams ap = new addAutomaticRefundForOrderParams();
            ap.sourceId = 2001;
            ap.paymentId = "11";
            ap.refundValue = 40.00m;
            ap.refundCurrency = "PLN";
            refundIdResult result;
            errors e = svc.addAutomaticRefundForOrder(auth(key), ap, out result);
            Errors(p, e, 0);
            RefundId(p, result, 20);
        });

        Step("03 addManualRefund(return 601, 10.00 PLN, paymentFormId 2)", p => {
            addManualRefundParams mp = new addManualRefundParams();
            mp.sourceType = "return";
            mp.sourceId = 601;
            mp.refundValue = 10.00m;
            mp.refundCurrency = "PLN";
            mp.refundDetails = new refundDetails();
            mp.refundDetails.paymentFormId = 2;
            mp.refundDetails.account = "PL61109010140000071219812874";
            refundIdResult result;
            errors e = svc.addManualRefund(auth(key), mp, out result);
            Errors(p, e, 0);
            RefundId(p, result, 21);
        });

        Step("04 addAutomaticRefund(return 603)", p => {
            addAutomaticRefundParams ap = new addAutomaticRefundParams();
            ap.sourceType = "return";
            ap.sourceId = 603;
            refundIdResult result;
            errors e = svc.addAutomaticRefund(auth(key), ap, out result);
            Errors(p, e, 0);
            RefundId(p, result, 22);
        });

        Step("05 updateRefund(order 2001, 20, 45.50 PLN)", p => {
            updateRefundParams up = new updateRefundParams();
            up.sourceType = "order";
            up.sourceId = 2001;
            up.paymentId = "20";
            up.refundValue = 45.50m;
            up.refundCurrency = "PLN";
            updateRefundResult result;
            errors e = svc.updateRefund(auth(key), up, out result);
            Errors(p, e, 0);
            if (result == null) p.Add("result missing (null), want updateResult true");
            else p.Eq("result.updateResult", true, result.updateResult);
        });

        // getRefundStatus(order 2001, 20): the wanted status, 45.50 PLN, a dated refundDateAdd, and either an
        // empty refundDateConfirm and refundExternalId (not confirmed) or a dated refundDateConfirm.
        Action<Problems, string, bool> status = (p, wantStatus, confirmed) => {
            refundStatusResult s;
            errors e = svc.getRefundStatus(auth(key), Ref("order", 2001, "20"), out s);
            Errors(p, e, 0);
            if (s == null) {
                p.Add("result missing (null)");
                return;
            }
            p.Eq("result.refundStatus", wantStatus, s.refundStatus);
            p.Money("result.refundValue", "45.50", s.refundValue);
            p.Eq("result.refundCurrency", "PLN", s.refundCurrency);
            if (s.refundDateAdd == null || !Date.IsMatch(s.refundDateAdd))
                p.Add("result.refundDateAdd = " + (s.refundDateAdd ?? "null") + ", want YYYY-MM-DD HH:MM:SS");
            if (!confirmed) {
                p.Eq("result.refundDateConfirm", "", s.refundDateConfirm);
                p.Eq("result.refundExternalId", "", s.refundExternalId);
            } else if (s.refundDateConfirm == null || !Date.IsMatch(s.refundDateConfirm)) {
                p.Add("result.refundDateConfirm = " + (s.refundDateConfirm ?? "null") + ", want a non-empty YYYY-MM-DD HH:MM:SS");
            }
        };

        Step("06 getRefundStatus(order 2001, 20) = New 45.50", p => status(p, "New", false));

        Step("07 confirmRefund(order 2001, 20)", p => {
            confirmRefundResult result;
            errors e = svc.confirmRefund(auth(key), Ref("order", 2001, "20"), out result);
            Errors(p, e, 0);
            if (result == null) p.Add("result missing (null), want confirmResult true");
            else p.Eq("result.confirmResult", true, result.confirmResult);
        });

        Step("08 getRefundStatus(order 2001, 20) = Processing", p => status(p, "Processing", true));

        Step("09 cancelRefund(return 601, 21)", p => {
            cancelRefundResult result;
            errors e = svc.cancelRefund(auth(key), Ref("return", 601, "21"), out result);
            Errors(p, e, 0);
            if (result == null) p.Add("result missing (null), want resultStatus true");
            else p.Eq("result.resultStatus", true, result.resultStatus);
        });

        Action<Problems, int, string, string> page = (p, resultsPage, paymentId, value) => {
            retrieveRefundsListParams lp = new retrieveRefundsListParams();
            lp.sourceType = "all";
            lp.resultsPage = resultsPage;
            lp.resultsPageSpecified = true;
            lp.resultsLimit = 1;
            lp.resultsLimitSpecified = true;
            refundsListEntry[] results;
            long all, pages, pg, limit;
            bool allSet, pagesSet, pgSet, limitSet;
            errors e = svc.retrieveRefundsList(auth(key), lp, out results, out all, out allSet, out pages, out pagesSet,
                                               out pg, out pgSet, out limit, out limitSet);
            Errors(p, e, 0);
            p.Eq("resultsNumberAll", 2L, all);
            p.Eq("resultsNumberPage", 2L, pages);
            p.Eq("resultsPage", (long)resultsPage, pg);
            p.Eq("resultsLimit", 1L, limit);
            p.Eq("resultsNumberAllSpecified", true, allSet);
            p.Eq("resultsNumberPageSpecified", true, pagesSet);
            p.Eq("resultsPageSpecified", true, pgSet);
            p.Eq("resultsLimitSpecified", true, limitSet);
            if (results == null || results.Length != 1) {
                p.Add("results: want exactly 1, got " + (results == null ? "null" : results.Length.ToString()));
                return;
            }
            refundsListEntry r = results[0];
            if (r == null) {
                p.Add("results[0] is null");
                return;
            }
            p.Eq("results[0].sourceType", "return", r.sourceType);
            p.Eq("results[0].sourceId", 603L, r.sourceId);
            p.Eq("results[0].paymentId", paymentId, r.paymentId);
            p.Money("results[0].refundValue", value, r.refundValue);
            p.Eq("results[0].refundCurrency", "PLN", r.refundCurrency);
        };
        Step("10 retrieveRefundsList(all, page 0, limit 1)", p => page(p, 0, "22", "30.00"));
        Step("11 retrieveRefundsList(all, page 1, limit 1)", p => page(p, 1, "23", "40.00"));

        Step("12 addAutomaticRefundForOrder(2001, 11, 1000.00 PLN) = 4003", p => {
            addAutomaticRefundForOrderParams ap = new addAutomaticRefundForOrderParams();
            ap.sourceId = 2001;
            ap.paymentId = "11";
            ap.refundValue = 1000.00m;
            ap.refundCurrency = "PLN";
            refundIdResult result;
            errors e = svc.addAutomaticRefundForOrder(auth(key), ap, out result);
            Errors(p, e, 4003);
            if (result != null) p.Add("result present (refundId " + result.refundId + "), want none");
        });

        Step("13 addManualRefund(order 2001, 5.00 EUR) = 4004", p => {
            addManualRefundParams mp = new addManualRefundParams();
            mp.sourceType = "order";
            mp.sourceId = 2001;
            mp.refundValue = 5.00m;
            mp.refundCurrency = "EUR";
            mp.refundDetails = new refundDetails();
            mp.refundDetails.paymentFormId = 1;
            refundIdResult result;
            errors e = svc.addManualRefund(auth(key), mp, out result);
            Errors(p, e, 4004);
            if (result != null) p.Add("result present (refundId " + result.refundId + "), want none");
        });

        Step("14 cancelRefund(order 2001, 20) = 4019", p => {
            cancelRefundResult result;
            errors e = svc.cancelRefund(auth(key), Ref("order", 2001, "20"), out result);
            Errors(p, e, 4019);
            if (result != null) p.Add("result present (resultStatus " + result.resultStatus + "), want none");
        });

        Step("15 getRefundStatus with a wrong authenticateKey = 1", p => {
            refundStatusResult s;
            errors e = svc.getRefundStatus(auth(Sha1Hex("not-" + key)), Ref("order", 2001, "20"), out s);
            Errors(p, e, 1);
            if (s != null) p.Add("result present on a login failure (refundStatus " + s.refundStatus + ")");
        });

        Console.WriteLine("# mono wsdl SOAP " + version + ": " + passes + " passed, " + failures + " failed");
        return failures == 0 ? 0 : 1;
    }
}
