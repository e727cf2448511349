// gSOAP 2.8 C++ client of the refunds gateway: runs the lifecycle of tests/interop/README.md
// through the proxy class that soapcpp2 generated from the live WSDL (wsdl2h + soapcpp2 -j -C,
// with -1 for SOAP 1.1 or -2 for SOAP 1.2; see ./run).
//
// gSOAP leaves a member at its default (0, "", NULL) when the response does not carry it, so
// every pointer is checked and every value compared. The response is read in SOAP_XML_STRICT
// mode: an element the WSDL does not declare, or a required one missing, is an error.
//
// Usage: refunds_interop ENDPOINT   (the WSDL's soap:address / soap12:address)
// Env:   SOAP_VERSION (1.1 | 1.2, for the summary line), GATEWAY_LOGIN, GATEWAY_PASSWORD;
//        INTEROP_DUMP=1 prints every exchange on stderr (a failing check's always is).

#include "soapRefundsSoapBindingProxy.h"
#include "RefundsSoapBinding.nsmap"

#define STR2(x) #x
#define STR(x) STR2(x)
#define GSOAP_VERSION_STR STR(GSOAP_VERSION)

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

// The SOAP 1.2 binding's operations carry a trailing underscore in the collected service
// (wsdl2h names the second binding's copies `op_`).
#ifdef REFUNDS_SOAP12
#define OP(name) name##_
static const char *const PORT = "RefundsSoap12";
#else
#define OP(name) name
static const char *const PORT = "RefundsSoap";
#endif

// ------------------------------------------------------------------ helpers

static std::string hex(const unsigned char *p, size_t n) {
    static const char *digits = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; i++) {
        s += digits[p[i] >> 4];
        s += digits[p[i] & 15];
    }
    return s;
}

static std::string sha1hex(const std::string &data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr)) {
        std::printf("FAIL setup: EVP_Digest(sha1) failed\n");
        std::exit(2);
    }
    return hex(md, len);
}

// Today's date in Europe/Warsaw as YYYYMMDD.
static std::string warsaw_day() {
    setenv("TZ", "Europe/Warsaw", 1);
    tzset();
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[16];
    std::strftime(buf, sizeof buf, "%Y%m%d", &tm);
    return buf;
}

static std::string q(const std::string &s) { return "\"" + s + "\""; }
static std::string q(const std::string *s) { return s ? q(*s) : std::string("<null>"); }

// An xs:decimal lexical value in canonical form ("45.50" -> "45.5", "200.00" -> "200"),
// or "" if it is not one.
static std::string dec_canon(const std::string &s) {
    static const std::regex re("^([+-]?)([0-9]*)(\\.([0-9]*))?$");
    std::smatch m;
    if (!std::regex_match(s, m, re) || (m[2].length() == 0 && m[4].length() == 0)) return "";
    std::string ip = m[2].str(), fp = m[4].str();
    while (ip.size() > 1 && ip[0] == '0') ip.erase(0, 1);
    if (ip.empty()) ip = "0";
    while (!fp.empty() && fp.back() == '0') fp.pop_back();
    std::string r = ip + (fp.empty() ? "" : "." + fp);
    if (m[1] == "-" && r != "0") r = "-" + r;
    return r;
}

struct Problems {
    std::vector<std::string> list;
    void add(const std::string &why) { list.push_back(why); }
    void eq(const char *what, const std::string &want, const std::string &got) {
        if (got != want) add(std::string(what) + " = " + q(got) + ", want " + q(want));
    }
    void eq(const char *what, long long want, long long got) {
        if (got != want) add(std::string(what) + " = " + std::to_string(got) + ", want " + std::to_string(want));
    }
    void eq(const char *what, bool want, bool got) {
        if (got != want) add(std::string(what) + " = " + (got ? "true" : "false") + ", want " + (want ? "true" : "false"));
    }
    void eq(const char *what, long long want, const LONG64 *got) {
        if (!got) add(std::string(what) + " missing (NULL), want " + std::to_string(want));
        else eq(what, want, (long long)*got);
    }
    void money(const char *what, const std::string &want, const std::string &got) {
        std::string g = dec_canon(got);
        if (g.empty()) add(std::string(what) + " = " + q(got) + ", not an xs:decimal; want " + want);
        else if (g != dec_canon(want)) add(std::string(what) + " = " + q(got) + ", want " + want);
    }
};

static int passes = 0, failures = 0;
static std::string last_request, last_response;

// Capture the bytes on the wire, to show them when a check fails.
static int (*orig_fsend)(struct soap *, const char *, size_t);
static size_t (*orig_frecv)(struct soap *, char *, size_t);
static int cap_fsend(struct soap *soap, const char *s, size_t n) {
    last_request.append(s, n);
    return orig_fsend(soap, s, n);
}
static size_t cap_frecv(struct soap *soap, char *s, size_t n) {
    size_t r = orig_frecv(soap, s, n);
    last_response.append(s, r);
    return r;
}

static RefundsSoapBindingProxy *proxy;

static std::string soap_error_text() {
    char buf[2048];
    buf[0] = 0;
    soap_sprint_fault(proxy->soap, buf, sizeof buf);
    std::string s = "gSOAP error " + std::to_string(proxy->soap->error) + ": ";
    for (const char *c = buf; *c; c++) s += (*c == '\n' || *c == '\r') ? ' ' : *c;
    return s;
}

// Runs one check: `call` performs the request (returning its gSOAP status) and fills `p`.
static void step(const std::string &name, const std::function<int(Problems &)> &call) {
    Problems p;
    last_request.clear();
    last_response.clear();
    int rc = call(p);
    if (rc != SOAP_OK) p.list.insert(p.list.begin(), soap_error_text());
    const bool dump = std::getenv("INTEROP_DUMP") && *std::getenv("INTEROP_DUMP");
    if (p.list.empty()) {
        passes++;
        std::printf("PASS %s\n", name.c_str());
        if (dump)
            std::fprintf(stderr, "---- %s: request\n%s\n---- %s: response\n%s\n", name.c_str(),
                         last_request.c_str(), name.c_str(), last_response.c_str());
    } else {
        failures++;
        std::string why;
        for (size_t i = 0; i < p.list.size(); i++) why += (i ? "; " : "") + p.list[i];
        std::printf("FAIL %s: %s\n", name.c_str(), why.c_str());
        std::fprintf(stderr, "---- %s: request\n%s\n---- %s: response\n%s\n", name.c_str(), last_request.c_str(),
                     name.c_str(), last_response.c_str());
    }
    std::fflush(stdout);
    proxy->destroy();  // frees everything the call allocated in the context
}

// errors{faultCode, faultString}: present, the wanted code; empty string on success, text otherwise.
static void errors(Problems &p, const ns1__errors *e, int want) {
    if (!e) {
        p.add("errors missing (NULL)");
        return;
    }
    if (e->faultCode != want)
        p.add("errors.faultCode = " + std::to_string(e->faultCode) + " (" + q(e->faultString) + "), want " +
              std::to_string(want));
    if (want == 0 && !e->faultString.empty()) p.add("errors.faultString = " + q(e->faultString) + ", want \"\"");
    if (want != 0 && e->faultString.empty()) p.add("errors.faultString empty for faultCode " + std::to_string(want));
}

// ------------------------------------------------------------------ the lifecycle

int main(int argc, char **argv) {
    const char *login = std::getenv("GATEWAY_LOGIN");
    const char *password = std::getenv("GATEWAY_PASSWORD");
    if (argc != 2 || !login || !password) {
        std::printf("FAIL setup: usage: GATEWAY_LOGIN=.. GATEWAY_PASSWORD=.. %s ENDPOINT\n", argv[0]);
        return 2;
    }
    const std::string endpoint = argv[1];

    proxy = new RefundsSoapBindingProxy(SOAP_C_UTFSTRING | SOAP_XML_STRICT);
    proxy->soap_endpoint = endpoint.c_str();
    proxy->soap->connect_timeout = 10;
    proxy->soap->send_timeout = 30;
    proxy->soap->recv_timeout = 30;
    orig_fsend = proxy->soap->fsend;
    orig_frecv = proxy->soap->frecv;
    proxy->soap->fsend = cap_fsend;
    proxy->soap->frecv = cap_frecv;
    std::fprintf(stderr, "gSOAP %s, port %s, endpoint %s, envelope %s\n", GSOAP_VERSION_STR, PORT, endpoint.c_str(),
                 namespaces[0].ns);

    const std::string key = sha1hex(warsaw_day() + sha1hex(password));
    struct soap *soap = proxy->soap;
    // A fresh authenticate block per request (the context's memory is freed after each call).
    auto auth = [&](const std::string &k) {
        ns1__authenticate *a = soap_new_ns1__authenticate(soap);
        a->userLogin = soap_new_std__string(soap);
        *a->userLogin = login;
        a->authenticateKey = soap_new_std__string(soap);
        *a->authenticateKey = k;
        return a;
    };
    auto refParams = [&](const char *type, LONG64 id, const char *paymentId) {
        ns1__refundParams *r = soap_new_ns1__refundParams(soap);
        r->sourceType = type;
        r->sourceId = id;
        r->paymentId = paymentId;
        return r;
    };
    auto refundIdIs = [](Problems &p, const ns1__refundIdResult *r, long long want) {
        if (!r) p.add("result missing (NULL), want refundId " + std::to_string(want));
        else p.eq("result.refundId", want, (long long)r->refundId);
    };
    static const std::regex DATE("^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$");

    step("01 getPossibleAutoRefunds(order 2001)", [&](Problems &p) {
        _ns1__getPossibleAutoRefunds req;
        req.authenticate = auth(key);
        req.params = soap_new_ns1__sourceParams(soap);
        req.params->sourceType = "order";
        req.params->sourceId = 2001;
        _ns1__getPossibleAutoRefundsResponse res;
        int rc = proxy->OP(getPossibleAutoRefunds)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 0);
        if (res.results.size() != 1) {
            p.add("results: want exactly 1, got " + std::to_string(res.results.size()));
            return rc;
        }
        const ns1__possibleAutoRefund *r = res.results[0];
        if (!r) {
            p.add("results[0] is NULL");
            return rc;
        }
        p.eq("results[0].paymentId", "11", r->paymentId);
        p.money("results[0].value", "200.00", r->value);
        p.eq("results[0].refundType", "full", r->refundType);
        p.eq("results[0].refundCurrency", "PLN", r->refundCurrency);
        return rc;
    });

    step("02 addAutomaticRefundForOrder(2001, 11, 40.00 PLN)", [&](Problems &p) {
        _ns1__addAutomaticRefundForOrder req;
        req.authenticate = auth(key);
        req.params = soap_new_ns1__addAutomaticRefundForOrderParams(soap);
        req.params->sourceId = 2001;
        req.params->paymentId = "11";
        req.params->refundValue = "40.00";
        req.params->refundCurrency = "PLN";
        _ns1__addAutomaticRefundForOrderResponse res;
        int rc = proxy->OP(addAutomaticRefundForOrder)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 0);
        refundIdIs(p, res.result, 20);
        return rc;
    });

    step("03 addManualRefund(return 601, 10.00 PLN, paymentFormId 2)", [&](Problems &p) {
        _ns1__addManualRefund req;
        req.authenticate = auth(key);
        req.params = soap_new_ns1__addManualRefundParams(soap);
        req.params->sourceType = "return";
        req.params->sourceId = 601;
        req.params->refundValue = "10.00";
        req.params->refundCurrency = "PLN";
        req.params->refundDetails = soap_new_ns1__refundDetails(soap);
        req.params->refundDetails->paymentFormId = 2;
        req.params->refundDetails->account = soap_new_std__string(soap);
        *req.params->refundDetails->account = "PL61109010140000071219812874";
        _ns1__addManualRefundResponse res;
        int rc = proxy->OP(addManualRefund)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 0);
        refundIdIs(p, res.result, 21);
        return rc;
    });

    step("04 addAutomaticRefund(return 603)", [&](Problems &p) {
        _ns1__addAutomaticRefund req;
        req.authenticate = auth(key);
        req.params = soap_new_ns1__addAutomaticRefundParams(soap);
        req.params->sourceType = "return";
        req.params->sourceId = 603;
        _ns1__addAutomaticRefundResponse res;
        int rc = proxy->OP(addAutomaticRefund)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 0);
        refundIdIs(p, res.result, 22);
        return rc;
    });

    step("05 updateRefund(order 2001, 20, 45.50 PLN)", [&](Problems &p) {
        _ns1__updateRefund req;
        req.authenticate = auth(key);
        req.params = soap_new_ns1__updateRefundParams(soap);
        req.params->sourceType = "order";
        req.params->sourceId = 2001;
        req.params->paymentId = "20";
        req.params->refundValue = "45.50";
        req.params->refundCurrency = "PLN";
        _ns1__updateRefundResponse res;
        int rc = proxy->OP(updateRefund)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 0);
        if (!res.result) p.add("result missing (NULL), want updateResult true");
        else p.eq("result.updateResult", true, res.result->updateResult);
        return rc;
    });

    // getRefundStatus(order 2001, 20): the wanted status, 45.50 PLN, a dated refundDateAdd, and
    // either an empty refundDateConfirm and refundExternalId (not confirmed) or a dated refundDateConfirm.
    auto status = [&](Problems &p, const char *wantStatus, bool confirmed) {
        _ns1__getRefundStatus req;
        req.authenticate = auth(key);
        req.params = refParams("order", 2001, "20");
        _ns1__getRefundStatusResponse res;
        int rc = proxy->OP(getRefundStatus)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 0);
        const ns1__refundStatusResult *s = res.result;
        if (!s) {
            p.add("result missing (NULL)");
            return rc;
        }
        p.eq("result.refundStatus", wantStatus, s->refundStatus);
        p.money("result.refundValue", "45.50", s->refundValue);
        p.eq("result.refundCurrency", "PLN", s->refundCurrency);
        if (!std::regex_match(s->refundDateAdd, DATE))
            p.add("result.refundDateAdd = " + q(s->refundDateAdd) + ", want YYYY-MM-DD HH:MM:SS");
        if (!confirmed) {
            p.eq("result.refundDateConfirm", "", s->refundDateConfirm);
            p.eq("result.refundExternalId", "", s->refundExternalId);
        } else if (!std::regex_match(s->refundDateConfirm, DATE)) {
            p.add("result.refundDateConfirm = " + q(s->refundDateConfirm) + ", want a non-empty YYYY-MM-DD HH:MM:SS");
        }
        return rc;
    };

    step("06 getRefundStatus(order 2001, 20) = New 45.50", [&](Problems &p) { return status(p, "New", false); });

    step("07 confirmRefund(order 2001, 20)", [&](Problems &p) {
        _ns1__confirmRefund req;
        req.authenticate = auth(key);
        req.params = refParams("order", 2001, "20");
        _ns1__confirmRefundResponse res;
        int rc = proxy->OP(confirmRefund)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 0);
        if (!res.result) p.add("result missing (NULL), want confirmResult true");
        else p.eq("result.confirmResult", true, res.result->confirmResult);
        return rc;
    });

    step("08 getRefundStatus(order 2001, 20) = Processing", [&](Problems &p) { return status(p, "Processing", true); });

    step("09 cancelRefund(return 601, 21)", [&](Problems &p) {
        _ns1__cancelRefund req;
        req.authenticate = auth(key);
        req.params = refParams("return", 601, "21");
        _ns1__cancelRefundResponse res;
        int rc = proxy->OP(cancelRefund)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 0);
        if (!res.result) p.add("result missing (NULL), want resultStatus true");
        else p.eq("result.resultStatus", true, res.result->resultStatus);
        return rc;
    });

    auto page = [&](Problems &p, int resultsPage, const char *paymentId, const char *value) {
        _ns1__retrieveRefundsList req;
        req.authenticate = auth(key);
        req.params = soap_new_ns1__retrieveRefundsListParams(soap);
        req.params->sourceType = "all";
        req.params->resultsPage = soap_new_int(soap);
        *req.params->resultsPage = resultsPage;
        req.params->resultsLimit = soap_new_int(soap);
        *req.params->resultsLimit = 1;
        _ns1__retrieveRefundsListResponse res;
        int rc = proxy->OP(retrieveRefundsList)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 0);
        p.eq("resultsNumberAll", 2, res.resultsNumberAll);
        p.eq("resultsNumberPage", 2, res.resultsNumberPage);
        p.eq("resultsPage", resultsPage, res.resultsPage);
        p.eq("resultsLimit", 1, res.resultsLimit);
        if (res.results.size() != 1) {
            p.add("results: want exactly 1, got " + std::to_string(res.results.size()));
            return rc;
        }
        const ns1__refundsListEntry *e = res.results[0];
        if (!e) {
            p.add("results[0] is NULL");
            return rc;
        }
        p.eq("results[0].sourceType", "return", e->sourceType);
        p.eq("results[0].sourceId", 603, (long long)e->sourceId);
        p.eq("results[0].paymentId", paymentId, e->paymentId);
        p.money("results[0].refundValue", value, e->refundValue);
        p.eq("results[0].refundCurrency", "PLN", e->refundCurrency);
        return rc;
    };
    step("10 retrieveRefundsList(all, page 0, limit 1)", [&](Problems &p) { return page(p, 0, "22", "30.00"); });
    step("11 retrieveRefundsList(all, page 1, limit 1)", [&](Problems &p) { return page(p, 1, "23", "40.00"); });

    step("12 addAutomaticRefundForOrder(2001, 11, 1000.00 PLN) = 4003", [&](Problems &p) {
        _ns1__addAutomaticRefundForOrder req;
        req.authenticate = auth(key);
        req.params = soap_new_ns1__addAutomaticRefundForOrderParams(soap);
        req.params->sourceId = 2001;
        req.params->paymentId = "11";
        req.params->refundValue = "1000.00";
        req.params->refundCurrency = "PLN";
        _ns1__addAutomaticRefundForOrderResponse res;
        int rc = proxy->OP(addAutomaticRefundForOrder)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 4003);
        if (res.result) p.add("result present (refundId " + std::to_string(res.result->refundId) + "), want none");
        return rc;
    });

    step("13 addManualRefund(order 2001, 5.00 EUR) = 4004", [&](Problems &p) {
        _ns1__addManualRefund req;
        req.authenticate = auth(key);
        req.params = soap_new_ns1__addManualRefundParams(soap);
        req.params->sourceType = "order";
        req.params->sourceId = 2001;
        req.params->refundValue = "5.00";
        req.params->refundCurrency = "EUR";
        req.params->refundDetails = soap_new_ns1__refundDetails(soap);
        req.params->refundDetails->paymentFormId = 1;
        _ns1__addManualRefundResponse res;
        int rc = proxy->OP(addManualRefund)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 4004);
        if (res.result) p.add("result present (refundId " + std::to_string(res.result->refundId) + "), want none");
        return rc;
    });

    step("14 cancelRefund(order 2001, 20) = 4019", [&](Problems &p) {
        _ns1__cancelRefund req;
        req.authenticate = auth(key);
        req.params = refParams("order", 2001, "20");
        _ns1__cancelRefundResponse res;
        int rc = proxy->OP(cancelRefund)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 4019);
        if (res.result)
            p.add(std::string("result present (resultStatus ") + (res.result->resultStatus ? "true" : "false") +
                  "), want none");
        return rc;
    });

    step("15 getRefundStatus with a wrong authenticateKey = 1", [&](Problems &p) {
        _ns1__getRefundStatus req;
        req.authenticate = auth(sha1hex("not-" + key));
        req.params = refParams("order", 2001, "20");
        _ns1__getRefundStatusResponse res;
        int rc = proxy->OP(getRefundStatus)(&req, res);
        if (rc != SOAP_OK) return rc;
        errors(p, res.errors, 1);
        if (res.result) p.add("result present on a login failure (refundStatus " + q(res.result->refundStatus) + ")");
        return rc;
    });

    std::printf("# gSOAP %s SOAP %s (port %s): %d passed, %d failed\n", GSOAP_VERSION_STR,
                std::getenv("SOAP_VERSION") ? std::getenv("SOAP_VERSION") : "?", PORT, passes, failures);
    delete proxy;
    return failures == 0 ? 0 : 1;
}
