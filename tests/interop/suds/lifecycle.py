"""The README lifecycle (15 checks) with suds-community over SOAP 1.1, asserting every value.

suds reads an empty xs:string element as None and leaves absent optional elements out, so the
fields that must be "" or absent are also looked up in the raw answer (a MessagePlugin keeps it).
"""

import datetime
import functools
import hashlib
import os
import re
import sys
from decimal import Decimal
from zoneinfo import ZoneInfo

from lxml import etree
from suds.client import Client
from suds.plugin import MessagePlugin

# The checks shared with the other Python client live one folder up (no bytecode left there).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True
import lifecycle_checks  # noqa: E402
from lifecycle_checks import check, expect, expect_true  # noqa: E402

TNS = "urn:refunds-gateway:refunds"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")

wsdl_url = os.environ["WSDL_URL"]
version = os.environ.get("SOAP_VERSION", "1.1")
login = os.environ["GATEWAY_LOGIN"]
password = os.environ["GATEWAY_PASSWORD"]
if version != "1.1":
    sys.exit(f"SOAP_VERSION {version!r}: suds speaks SOAP 1.1 only")

today = datetime.datetime.now(ZoneInfo("Europe/Warsaw")).strftime("%Y%m%d")
key = hashlib.sha1((today + hashlib.sha1(password.encode()).hexdigest()).encode()).hexdigest()


class Capture(MessagePlugin):
    """Keeps the last request and answer as sent and received."""

    def __init__(self):
        self.last_sent = None
        self.last_reply = None

    def sending(self, context):
        self.last_sent = bytes(context.envelope)

    def received(self, context):
        self.last_reply = context.reply


capture = Capture()
client = Client(wsdl_url, port="RefundsSoap", cache=None, plugins=[capture], faults=True)
service = client.service
factory = client.factory


def authenticate(auth_key=key):
    auth = factory.create(f"{{{TNS}}}authenticate")
    auth.userLogin = login
    auth.authenticateKey = auth_key
    return auth


def params(type_name, **fields):
    value = factory.create(f"{{{TNS}}}{type_name}")
    for name, field in fields.items():
        setattr(value, name, field)
    return value


def raw(name):
    """The raw text of each element with this local name in the last answer (None: empty)."""
    envelope = etree.fromstring(capture.last_reply)
    return [el.text for el in envelope.iter(f"{{{TNS}}}{name}")]


expect_success = functools.partial(lifecycle_checks.expect_success, raw=raw)
# suds leaves absent optional elements out of the answer object: read them with a default.
expect_fault_code = functools.partial(lifecycle_checks.expect_fault_code, raw=raw,
                                      field=lambda response, name: getattr(response, name, None))


def as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def c01():
    r = service.getPossibleAutoRefunds(authenticate(), params("sourceParams", sourceType="order", sourceId=2001))
    sent = etree.fromstring(capture.last_sent)
    expect_true("request envelope of SOAP 1.1", sent.tag == f"{{{SOAP11}}}Envelope", f"sent {sent.tag}")
    expect_success(r)
    results = as_list(getattr(r, "results", None))
    expect("number of results", len(results), 1)
    p = results[0]
    expect("paymentId", p.paymentId, "11")
    expect("value", p.value, Decimal("200.00"))
    expect("refundType", p.refundType, "full")
    expect("refundCurrency", p.refundCurrency, "PLN")


def c02():
    r = service.addAutomaticRefundForOrder(authenticate(), params(
        "addAutomaticRefundForOrderParams", sourceId=2001, paymentId="11",
        refundValue=Decimal("40.00"), refundCurrency="PLN"))
    expect_success(r)
    expect("result.refundId", r.result.refundId, 20)


def c03():
    details = params("refundDetails", paymentFormId=2, account="PL61109010140000071219812874")
    r = service.addManualRefund(authenticate(), params(
        "addManualRefundParams", sourceType="return", sourceId=601, refundValue=Decimal("10.00"),
        refundCurrency="PLN", refundDetails=details))
    expect_success(r)
    expect("result.refundId", r.result.refundId, 21)


def c04():
    r = service.addAutomaticRefund(authenticate(), params("addAutomaticRefundParams", sourceType="return", sourceId=603))
    expect_success(r)
    expect("result.refundId", r.result.refundId, 22)


def c05():
    r = service.updateRefund(authenticate(), params(
        "updateRefundParams", sourceType="order", sourceId=2001, paymentId="20",
        refundValue=Decimal("45.50"), refundCurrency="PLN"))
    expect_success(r)
    expect("result.updateResult", r.result.updateResult, True)


def refund_params(source_type, source_id, payment_id):
    return params("refundParams", sourceType=source_type, sourceId=source_id, paymentId=payment_id)


def c06():
    r = service.getRefundStatus(authenticate(), refund_params("order", 2001, "20"))
    expect_success(r)
    s = r.result
    expect("refundStatus", s.refundStatus, "New")
    expect("refundValue", s.refundValue, Decimal("45.50"))
    expect("refundCurrency", s.refundCurrency, "PLN")
    expect_true("refundDateAdd is YYYY-MM-DD HH:MM:SS", isinstance(s.refundDateAdd, str)
                and DATE.match(s.refundDateAdd), repr(s.refundDateAdd))
    for name in ("refundDateConfirm", "refundExternalId"):
        value = getattr(s, name, None)
        expect_true(f"{name} is empty", value in (None, ""), repr(value))
        expect_true(f"{name} element is present and empty", raw(name) == [None], f"raw {raw(name)!r}")


def c07():
    r = service.confirmRefund(authenticate(), refund_params("order", 2001, "20"))
    expect_success(r)
    expect("result.confirmResult", r.result.confirmResult, True)


def c08():
    r = service.getRefundStatus(authenticate(), refund_params("order", 2001, "20"))
    expect_success(r)
    s = r.result
    expect("refundStatus", s.refundStatus, "Processing")
    expect("refundValue", s.refundValue, Decimal("45.50"))
    expect_true("refundDateConfirm is not empty", bool(s.refundDateConfirm), repr(s.refundDateConfirm))
    expect_true("refundDateConfirm is YYYY-MM-DD HH:MM:SS", DATE.match(str(s.refundDateConfirm)),
                repr(s.refundDateConfirm))


def c09():
    r = service.cancelRefund(authenticate(), refund_params("return", 601, "21"))
    expect_success(r)
    expect("result.resultStatus", r.result.resultStatus, True)


def refunds_page(page, payment_id, value):
    r = service.retrieveRefundsList(authenticate(), params(
        "retrieveRefundsListParams", sourceType="all", resultsPage=page, resultsLimit=1))
    expect_success(r)
    results = as_list(getattr(r, "results", None))
    expect("number of results", len(results), 1)
    e = results[0]
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
    r = service.addAutomaticRefundForOrder(authenticate(), params(
        "addAutomaticRefundForOrderParams", sourceId=2001, paymentId="11",
        refundValue=Decimal("1000.00"), refundCurrency="PLN"))
    expect_fault_code(r, 4003)


def c13():
    r = service.addManualRefund(authenticate(), params(
        "addManualRefundParams", sourceType="order", sourceId=2001, refundValue=Decimal("5.00"),
        refundCurrency="EUR", refundDetails=params("refundDetails", paymentFormId=1)))
    expect_fault_code(r, 4004)


def c14():
    expect_fault_code(service.cancelRefund(authenticate(), refund_params("order", 2001, "20")), 4019)


def c15():
    r = service.getRefundStatus(authenticate("0" * 40), refund_params("order", 2001, "20"))
    expect_fault_code(r, 1)


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
