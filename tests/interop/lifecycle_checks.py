"""Checks shared by the Python lifecycles (suds/lifecycle.py, zeep/lifecycle.py).

Each lifecycle puts this folder on sys.path and imports what it needs. `raw(name)` is the client's
own lookup of the raw text of each element with that local name in the last answer (None: empty).
"""

import sys
import traceback

failures = 0


class CheckFailed(Exception):
    pass


def expect(what, actual, wanted):
    """Equal value and the WSDL type's Python type (str subclasses such as suds' Text count as str;
    bool never passes for int)."""
    same_type = isinstance(actual, str) if isinstance(wanted, str) else type(actual) is type(wanted)
    if not same_type or actual != wanted:
        raise CheckFailed(f"{what} = {actual!r} ({type(actual).__name__}), expected {wanted!r}")


def expect_true(what, condition, detail=""):
    if not condition:
        raise CheckFailed(f"{what}{': ' + detail if detail else ''}")


def expect_success(response, *, raw):
    expect("errors.faultCode", response.errors.faultCode, 0)
    expect_true("errors.faultString is present and empty", raw("faultString") == [None],
                f"raw faultString {raw('faultString')!r}")


def expect_fault_code(response, code, absent=("result",), *, raw, field=getattr):
    """`field(response, name)` reads a result field: plain getattr (an unknown field is an error), or
    a lookup with a default for clients that leave absent optional elements out."""
    expect("errors.faultCode", response.errors.faultCode, code)
    expect_true("errors.faultString is not empty", bool(response.errors.faultString))
    for name in absent:
        value = field(response, name)
        expect_true(f"no {name} on a business error", value in (None, []), f"got {value!r}")
        expect_true(f"no {name} element on the wire", raw(name) == [], f"raw {raw(name)!r}")


def check(name, body):
    global failures
    try:
        body()
    except CheckFailed as error:
        failures += 1
        print(f"FAIL {name}: {error}", flush=True)
    except Exception as error:  # noqa: BLE001 - any client error fails this check only
        failures += 1
        detail = " ".join(str(error).split()) or type(error).__name__
        print(f"FAIL {name}: {type(error).__name__}: {detail}", flush=True)
        traceback.print_exc(file=sys.stderr)
    else:
        print(f"PASS {name}", flush=True)
