"""The README lifecycle (15 checks) with zeep 4.3 in strict mode, asserting every value.

zeep reads an empty xs:string element as None, so for the fields that must be "" the check also
looks at the raw answer (zeep's HistoryPlugin): the element must be there and empty.
"""

import datetime
import functools
import hashlib
import os
import re
import sys
from decimal import Decimal
from zoneinfo import ZoneInfo

import zeep
from zeep.plugins import HistoryPlugin

# The checks shared with the other Python client live one folder up (no bytecode left there).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True
import lifecycle_checks  # noqa: E402
from lifecycle_checks import check, expect, expect_true  # noqa: E402

SOAP_NS = {"1.1": "http://schemas.xmlsoap.org/soap/envelope/",
           "1.2": "http://www.w3.org/2003/05/soap-envelope"}
PORTS = {"1.1": "RefundsSoap", "1.2": "RefundsSoap12"}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")

wsdl_url = os.environ["WSDL_URL"]
version = os.environ.get("SOAP_VERSION", "1.1")
login = os.environ["GATEWAY_LOGIN"]
password = os.environ["GATEWAY_PASSWORD"]
if version not in PORTS:
    sys.exit(f"SOAP_VERSION {version!r}: zeep runs 1.1 or 1.2")

today = datetime.datetime.now(ZoneInfo("Europe/Warsaw")).strftime("%Y%m%d")
key = hashlib.sha1((today + hashlib.sha1(password.encode()).hexdigest()).encode()).hexdigest()
AUTH = {"userLogin": login, "authenticateKey": key}
WRONG_AUTH = {"userLogin": login, "authenticateKey": "0" * 40}

history = HistoryPlugin()
client = zeep.Client(wsdl_url, settings=zeep.Settings(strict=True), plugins=[history])
service = client.bind("RefundsService", PORTS[version])

def raw(name):
    """The raw text of each element with this local name in the last answer (None: empty)."""
    envelope = history.last_received["envelope"]
    return [el.text for el in envelope.iter() if isinstance(el.tag, str) and el.tag.endswith("}" + name)]


def expect_sent_version():
    envelope = history.last_sent["envelope"]
    expect_true("request envelope of SOAP " + version,
                envelope.tag == f"{{{SOAP_NS[version]}}}Envelope", f"sent {envelope.tag}")


expect_success = functools.partial(lifecycle_checks.expect_success, raw=raw)
expect_fault_code = functools.partial(lifecycle_checks.expect_fault_code, raw=raw)


def c01():
    r = service.getPossibleAutoRefunds(authenticate=AUTH, params={"sourceType": "order", "sourceId": 2001})
    expect_sent_version()
    expect_success(r)
    expect("number of results", len(r.results), 1)
    p = r.results[0]
    expect("paymentId", p.paymentId, "11")
    expect("value", p.value, Decimal("200.00"))
    expect("refundType", p.refundType, "full")
    expect("refundCurrency", p.refundCurrency, "PLN")


def c02():
    r = service.addAutomaticRefundForOrder(authenticate=AUTH, params={
        "sourceId": 2001, "paymentId": "11", "refundValue": Decimal("40.00"), "refundCurrency": "PLN"})
    expect_success(r)
    expect("result.refundId", r.result.refundId, 20)


def c03():
    r = service.addManualRefund(authenticate=AUTH, params={
        "sourceType": "return", "sourceId": 601, "refundValue": Decimal("10.00"), "refundCurrency": "PLN",
        "refundDetails": {"paymentFormId": 2, "account": "PL61109010140000071219812874"}})
    expect_success(r)
    expect("result.refundId", r.result.refundId, 21)


def c04():
    r = service.addAutomaticRefund(authenticate=AUTH, params={"sourceType": "return", "sourceId": 603})
    expect_success(r)
    expect("result.refundId", r.result.refundId, 22)


def c05():
    r = service.updateRefund(authenticate=AUTH, params={
        "sourceType": "order", "sourceId": 2001, "paymentId": "20",
        "refundValue": Decimal("45.50"), "refundCurrency": "PLN"})
    expect_success(r)
    expect("result.updateResult", r.result.updateResult, True)


def refund_status(auth=AUTH):
    return service.getRefundStatus(authenticate=auth, params={
        "sourceType": "order", "sourceId": 2001, "paymentId": "20"})


def c06():
    r = refund_status()
    expect_success(r)
    s = r.result
    expect("refundStatus", s.refundStatus, "New")
    expect("refundValue", s.refundValue, Decimal("45.50"))
    expect("refundCurrency", s.refundCurrency, "PLN")
    expect_true("refundDateAdd is YYYY-MM-DD HH:MM:SS", isinstance(s.refundDateAdd, str)
                and DATE.match(s.refundDateAdd), repr(s.refundDateAdd))
    for name in ("refundDateConfirm", "refundExternalId"):
        # zeep reads <x></x> as None; the wire must carry the element, empty.
        expect_true(f"{name} is empty", getattr(s, name) in (None, ""), repr(getattr(s, name)))
        expect_true(f"{name} element is present and empty", raw(name) == [None], f"raw {raw(name)!r}")


def c07():
    r = service.confirmRefund(authenticate=AUTH, params={"sourceType": "order", "sourceId": 2001, "paymentId": "20"})
    expect_success(r)
    expect("result.confirmResult", r.result.confirmResult, True)


def c08():
    r = refund_status()
    expect_success(r)
    s = r.result
    expect("refundStatus", s.refundStatus, "Processing")
    expect("refundValue", s.refundValue, Decimal("45.50"))
    expect_true("refundDateConfirm is not empty", bool(s.refundDateConfirm), repr(s.refundDateConfirm))
    expect_true("refundDateConfirm is YYYY-MM-DD HH:MM:SS", DATE.match(s.refundDateConfirm), repr(s.refundDateConfirm))


def c09():
    r = service.cancelRefund(authenticate=AUTH, params={"sourceType": "return", "sourceId": 601, "paymentId": "21"})
    expect_success(r)
    expect("result.resultStatus", r.result.resultStatus, True)


def refunds_page(page, payment_id, value):
    r = service.retrieveRefundsList(authenticate=AUTH, params={
        "sourceType": "all", "resultsPage": page, "resultsLimit": 1})
    expect_success(r)
    expect("number of results", len(r.results), 1)
    e = r.results[0]
    expect("sourceType", e.sourceType, "return")
    expect("sourceId", e.sourceId, 603)
    expect("paymentId", e.paymentId, payment_id)
    expect("refundValue", e.refundValue, value)
    expect("refundCurrency", e.refundCurrency, "PLN")
    expect("resultsNumberAll", r.resultsNumberAll, 2)
    expect("resultsNumberPage", r.resultsNumberPage, 2)
    expect("resultsPage", r.resultsPage, page)
    expect("resultsLimit", r.resultsLimit, 1)


def c12():
    r = service.addAutomaticRefundForOrder(authenticate=AUTH, params={
        "sourceId": 2001, "paymentId": "11", "refundValue": Decimal("1000.00"), "refundCurrency": "PLN"})
    expect_fault_code(r, 4003)


def c13():
    r = service.addManualRefund(authenticate=AUTH, params={
        "sourceType": "order", "sourceId": 2001, "refundValue": Decimal("5.00"), "refundCurrency": "EUR",
        "refundDetails": {"paymentFormId": 1}})
    expect_fault_code(r, 4004)


def c14():
    r = service.cancelRefund(authenticate=AUTH, params={"sourceType": "order", "sourceId": 2001, "paymentId": "20"})
    expect_fault_code(r, 4019)


def c15():
    expect_fault_code(refund_status(WRONG_AUTH), 1)


check("01 getPossibleAutoRefunds(order 2001)", c01)
check("02 addAutomaticRefundForOrder(2001, payment 11, 40.00 PLN) -> 20", c02)
check("03 addManualRefund(return 601, 10.00 PLN, bank transfer) -> 21", c03)
check("04 addAutomaticRefund(return 603) -> 22", c04)
check("05 updateRefund(order 2001, 20, 45.50 PLN)", c05)
check("06 getRefundStatus(20) New", c06)
check("07 confirmRefund(20)", c07)
check("08 getRefundStatus(20) Processing", c08)
check("09 cancelRefund(return 601, 21)", c09)
check("10 retrieveRefundsList(all, page 0, limit 1)", lambda: refunds_page(0, "22", Decimal("30.00")))
check("11 retrieveRefundsList(all, page 1, limit 1)", lambda: refunds_page(1, "23", Decimal("40.00")))
check("12 addAutomaticRefundForOrder(1000.00) -> 4003", c12)
check("13 addManualRefund(EUR on a PLN order) -> 4004", c13)
check("14 cancelRefund(20, processing) -> 4019", c14)
check("15 getRefundStatus with a wrong key -> 1", c15)
sys.exit(1 if lifecycle_checks.failures else 0)
