#!/usr/bin/env python3
"""Helpers for benches/load: shop generation, start-up timing, seeding, the confirmRefund pool,
the outbox drain, SQLite ceiling, free port."""
import http.client, json, os, socket, sqlite3, subprocess, sys, time


def genshop(path, orders):
    """orders orders (ids 1..N), unfulfilled (so automatic refunds are allowed), one auto-refundable PLN payment each (payment id = order id),
    big enough never to run out under load; a return for every 10th order, a claim for every 20th."""
    with open(path, "w") as f:
        f.write('{"paymentForms":[{"paymentFormId":5,"name":"voucher"}],"orders":[')
        for i in range(1, orders + 1):
            if i > 1:
                f.write(",")
            f.write('{"orderId":%d,"currency":"PLN","fulfilled":false,"payments":[{"paymentId":%d,'
                    '"amount":"100000.00","currency":"PLN","paymentFormId":12,"paymentSystem":27,'
                    '"autoRefund":true,"externalTransactionId":"PAYU-%d","paidAt":"2026-11-19 10:00:00"}]}'
                    % (i, i, i))
        f.write('],"returns":[')
        f.write(",".join('{"returnId":%d,"orderId":%d,"value":"50.00","currency":"PLN"}' % (i, i)
                         for i in range(10, orders + 1, 10)))
        f.write('],"rmas":[')
        f.write(",".join('{"rmaId":%d,"orderId":%d,"value":"30.00","currency":"PLN"}' % (i, i)
                         for i in range(20, orders + 1, 20)))
        f.write("]}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def startup(port, log, *argv):
    """Launch argv (detached), poll GET /healthz every ~1 ms; print 'PID MS'. Leaves it running."""
    # The default configuration, default logging included: no RUST_LOG from the caller.
    env = {name: value for name, value in os.environ.items() if name != "RUST_LOG"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    while True:
        if proc.poll() is not None:
            sys.exit("server exited with %s during start-up; see %s" % (proc.returncode, log))
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if time.perf_counter() - t0 > 30:
            proc.kill()
            sys.exit("no answer on /healthz within 30 s")
        time.sleep(0.001)
    print(proc.pid, "%.1f" % ((time.perf_counter() - t0) * 1000))


def seed(port, apikey, count, out):
    """Create one manual refund on each of orders 1..count over REST; write their
    "orderId refundId" lines for the getRefundStatus scenarios."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    pairs = []
    for i in range(1, count + 1):
        body = json.dumps({"params": {"sourceType": "order", "sourceId": i, "refundValue": "1.00",
                                      "refundCurrency": "PLN",
                                      "refundDetails": {"paymentFormId": 2,
                                                        "account": "PL61109010140000071219812874"}}})
        c.request("POST", "/api/admin/v6/refunds/addManualRefund", body,
                  {"X-API-KEY": apikey, "Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        if r.status >= 300:
            sys.exit("seeding failed: %s %s" % (r.status, data[:300]))
        pairs.append((i, int(json.loads(data)["result"]["refundId"])))
    with open(out, "w") as f:
        f.writelines("%d %d\n" % pair for pair in pairs)


def read_only(path):
    """A read-only connection to the gateway's database while the server runs (WAL: readers
    never block its writer)."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    db.execute("PRAGMA query_only=1")
    return db


def pool(path, out):
    """Write "orderId refundId" lines of the orders' automatic refunds still New (the ones
    confirmRefund can take); print how many."""
    db = read_only(path)
    rows = db.execute("SELECT order_id, id FROM refunds WHERE method = 'automatic' "
                      "AND status = 'New' AND source_type = 'order' ORDER BY id").fetchall()
    db.close()
    with open(out, "w") as f:
        f.writelines("%d %d\n" % row for row in rows)
    print(len(rows))


def drain(path, timeout):
    """Wait until the outbox worker has sent every job it was given (no job left in state
    'send'); print the seconds waited, or exit non-zero after timeout seconds."""
    db = read_only(path)
    t0 = time.perf_counter()
    while True:
        left = db.execute("SELECT count(*) FROM outbox WHERE state = 'send'").fetchone()[0]
        if left == 0:
            break
        if time.perf_counter() - t0 > timeout:
            sys.exit("outbox: %d jobs still unsent after %.0f s" % (left, timeout))
        time.sleep(0.05)
    db.close()
    print("%.1f" % (time.perf_counter() - t0))


def sqlite_ceiling(path, sync, seconds, rows_per_transaction=1):
    """Inserts in WAL mode, rows_per_transaction rows per transaction; print rows/s."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=%s" % sync)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, source_id INTEGER, value TEXT, at TEXT)")
    n, t0 = 0, time.perf_counter()
    while True:
        db.execute("BEGIN IMMEDIATE")
        for _ in range(rows_per_transaction):
            db.execute("INSERT INTO t (source_id, value, at) VALUES (?, '1.00', '2026-11-19 10:00:00')", (n,))
            n += 1
        db.execute("COMMIT")
        if n % 64 < rows_per_transaction and time.perf_counter() - t0 >= seconds:
            break
    print("%.0f" % (n / (time.perf_counter() - t0)))
    db.close()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "genshop":
        genshop(args[0], int(args[1]))
    elif cmd == "port":
        print(free_port())
    elif cmd == "startup":
        startup(int(args[0]), args[1], *args[2:])
    elif cmd == "seed":
        seed(int(args[0]), args[1], int(args[2]), args[3])
    elif cmd == "pool":
        pool(args[0], args[1])
    elif cmd == "drain":
        drain(args[0], float(args[1]))
    elif cmd == "sqlite":
        sqlite_ceiling(args[0], args[1], float(args[2]), int(args[3]) if len(args) > 3 else 1)
    else:
        sys.exit("unknown command " + cmd)
