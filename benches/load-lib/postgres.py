#!/usr/bin/env python3
"""Helpers for benches/load-postgres: CPU of a process and the children it reaped (PostgreSQL's
postmaster and its backends), pgbench latency percentiles, and the report: the PostgreSQL
section of BENCHMARKS.md, between its markers, leaving the rest of the file as it is."""
import glob, os, re, sys

START, END = "<!-- postgres:start -->", "<!-- postgres:end -->"


def stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (which may hold spaces): [0] is the state."""
    with open("/proc/%s/stat" % pid) as f:
        return f.read().rsplit(") ", 1)[1].split()


def tree_ticks(pid):
    """Clock ticks of CPU used by pid, by the children it has waited for, and by its live children.
    The postmaster reaps every backend, so a backend that ends between two samples moves from the
    live sum into the postmaster's cutime/cstime and is counted once."""
    own = stat_fields(pid)
    total = sum(int(v) for v in own[11:15])  # utime stime cutime cstime
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = stat_fields(path.split("/")[2])
        except (OSError, IndexError):
            continue  # ended while we looked
        if fields[1] == str(pid):
            total += sum(int(v) for v in fields[11:15])
    print(total)


def percentiles(paths):
    """pgbench -l logs ("client tx latency_us script epoch us" per transaction): print p50 p99
    p99.9 in ms and the count."""
    latencies = []
    for path in paths:
        with open(path) as f:
            latencies.extend(int(line.split()[2]) for line in f if line.strip())
    if not latencies:
        sys.exit("no transactions in the pgbench logs")
    latencies.sort()
    at = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000
    print("p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f logged=%d" % (at(0.50), at(0.99), at(0.999), len(latencies)))


# name: (operation, face, kind)
SCENARIOS = {
    "soap_status": ("getRefundStatus", "SOAP", "read"),
    "rest_status": ("getRefundStatus", "REST", "read"),
    "soap_possible": ("getPossibleAutoRefunds", "SOAP", "read"),
    "rest_possible": ("getPossibleAutoRefunds", "REST", "read"),
    "soap_list": ("retrieveRefundsList", "SOAP", "read"),
    "rest_list": ("retrieveRefundsList", "REST", "read"),
    "soap_manual": ("addManualRefund", "SOAP", "write"),
    "rest_manual": ("addManualRefund", "REST", "write"),
    "soap_auto": ("addAutomaticRefundForOrder", "SOAP", "write"),
    "rest_auto": ("addAutomaticRefundForOrder", "REST", "write"),
    "soap_confirm": ("confirmRefund", "SOAP", "write"),
    "rest_confirm": ("confirmRefund", "REST", "write"),
    "soap_mixed": ("mixed 80/20", "SOAP", "mixed"),
    "rest_mixed": ("mixed 80/20", "REST", "mixed"),
}
MODES = {"one": 1, "two": 2}


def kv(text):
    return dict(p.split("=", 1) for p in text.split())


def read_rows(path):
    """results.tsv: mode, name, wrk RESULT, INSTANCE lines (;-joined), peak RSS kB per instance,
    CPU s per instance, PostgreSQL CPU s, wrk CPU %, seconds, load before, box busy CPU s,
    sessions per instance."""
    rows = {}
    for line in open(path):
        (mode, name, result, instances, hwm, cpu, pg, wrk, secs, la, busy, sessions) = line.rstrip("\n").split("\t")
        r = kv(result)
        secs = float(secs)
        r.update(
            mode=mode, name=name, la=la, secs=secs, wrk=float(wrk),
            per_instance=[kv(i) for i in instances.split(";") if i],
            hwm=[int(v) for v in hwm.split(",")],
            cpu=[float(v) for v in cpu.split(",")],
            pg=float(pg), busy=float(busy),
            sessions=[int(v) for v in sessions.split(",")],
        )
        r["rps"] = float(r["rps"])
        r["requests"] = int(r["requests"])
        gateway = sum(r["cpu"])
        r["gateway_pct"] = gateway / secs * 100
        r["pg_pct"] = r["pg"] / secs * 100
        r["other_pct"] = max(0.0, r["busy"] / secs * 100 - r["gateway_pct"] - r["pg_pct"] - r["wrk"])
        r["gateway_us"] = gateway * 1e6 / max(1, r["requests"])
        r["pg_us"] = r["pg"] * 1e6 / max(1, r["requests"])
        rows[(mode, name)] = r
    return rows


def sqlite_rates(text):
    """(req/s, load average before) per (operation, face) from the SQLite Results table of
    BENCHMARKS.md, if there is one."""
    rates = {}
    section = text.split("## Results", 1)
    if len(section) < 2:
        return rates
    for line in section[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 4 and re.fullmatch(r"\d+", cells[3]):
            rates[(cells[0], cells[1])] = (float(cells[3]), cells[-1])
    return rates


def report(results, ceiling_path, target):
    env = os.environ
    rows = read_rows(results)
    for mode in MODES:
        for name in SCENARIOS:
            if (mode, name) not in rows:
                sys.exit("no result for %s on %s instance(s)" % (name, mode))
    c = kv(open(ceiling_path).read())
    tps = float(c["tps"])
    c_secs = float(c["secs"])
    c_pg_pct = float(c["pg_s"]) / c_secs * 100
    c_pg_us = float(c["pg_s"]) * 1e6 / max(1, int(c["transactions"]))
    c_other = max(0.0, float(c["busy_s"]) / c_secs * 100 - c_pg_pct - float(c["pgbench_pct"]))
    pool = env["POOL_SIZE"]
    secs = env["SECS"]
    old = open(target).read() if os.path.exists(target) else "# Benchmarks\n"
    sqlite = sqlite_rates(old)

    out = []
    w = out.append
    w(START)
    w("## PostgreSQL: one and two instances on one database\n")
    w(f"Produced by `benches/load-postgres` (also `LOAD_DB=postgres benches/load`) on commit "
      f"{env['COMMIT']}, in {env['TOTAL_S']} s; {env['PG_VERSION']}. Client (wrk), gateway and "
      f"PostgreSQL share the same {os.cpu_count()} cores, so a second instance adds no CPU: it shows what one "
      "database under two writers costs, not what a second machine would bring.\n")
    w("### Method\n")
    w(f"- A throwaway cluster (`initdb`, `pg_ctl -w start`, stopped with `pg_ctl -w stop`) in a "
      f"temp folder on {env['PG_FS']}, on a free port on 127.0.0.1; settings: {env['PG_SETTINGS']} "
      "(PostgreSQL's defaults otherwise).")
    w(f"- The shop of `benches/load` ({env['ORDERS']} orders, one auto-refundable PLN payment each, a "
      f"return on every 10th and a claim on every 20th) loaded with `refunds-gateway import --db "
      f"postgres://…`: **{env['IMPORT_MS']} ms**; a legacy user and an API key; {env['SEEDS']} refunds "
      "seeded over REST for the reads; then `VACUUM (ANALYZE)`, and the database copied "
      "(`CREATE DATABASE … TEMPLATE`) so that the one-instance and two-instance runs each start "
      "from the same data.")
    w(f"- Instances: `refunds-gateway serve --db postgres://…?application_name=refunds-gateway-N "
      f"--operators …` (the sandbox operator never settling, as in `benches/load`), started with "
      f"{env['RUST_LOG_USED']}; start-up to the first 200 from /healthz: {env['STARTUP_MS']} ms. "
      f"Connection pool: **{pool} sessions per instance** (`POOL_SIZE` in "
      "`src/store/postgres/mod.rs`); the \"sessions\" column is what pg_stat_activity showed per "
      "instance after each scenario (sessions stay open in the pool once opened).")
    w(f"- Load: `wrk -t2 -c64 -d{secs}s --timeout 10s` with `benches/load-lib/instances.lua`, which "
      "runs `scenario.lua` (the same requests as the SQLite table) and points wrk's threads at the "
      "instances: with two, thread 1 and its 32 connections go to instance 1, thread 2 and its 32 "
      "to instance 2 (a round-robin by connection, no proxy). Latency percentiles are wrk's, over "
      "all connections; per instance there are request counts. confirmRefund takes the automatic "
      "refunds still `New` (read with psql), topped up by an unrecorded REST "
      "addAutomaticRefundForOrder pass when there are too few, and the next scenario starts once "
      "the outbox workers have sent every job, as in `benches/load`.")
    w("- Per scenario: peak RSS of each instance (`VmHWM`, reset before each scenario); CPU of each "
      "instance; PostgreSQL CPU = the postmaster and all its processes (backends, WAL writer, "
      "checkpointer, autovacuum), including the ones that ended; wrk's from its rusage; \"other\" = "
      "all busy CPU of the box minus those. 100% = one core, 200% = the box. µs/req = CPU seconds "
      "divided by the requests answered. Load average (1/5/15 min) just before each scenario; it "
      "includes this run's own processes.")
    w(f"- Ceiling, in the same run on the same cluster after the instances stopped: `pgbench -n -M "
      f"prepared -c 64 -j 2 -T {secs}` of one transaction per row, `INSERT INTO ceiling_rows "
      "(source_id, amount_minor, created_at) VALUES (…)` (a bigserial primary key, no other index), "
      "synchronous_commit=on; latencies from `pgbench -l`. It is what the cluster commits per second "
      "with one fsync'd commit per transaction and nothing else to do: each gateway write is one "
      "such commit carrying several statements, triggers and an audit entry.")
    w(f"- After each part, `refunds-gateway audit verify`: {env['AUDIT_ONE']} (one instance), "
      f"{env['AUDIT_TWO']} (two instances). Refunds at the end: {env['REFUNDS_ONE']} (one), "
      f"{env['REFUNDS_TWO']} (two).\n")
    w("```sh\nbenches/load-postgres            # LOAD_SECONDS=10, LOAD_ORDERS=100000 by default\n```\n")
    w("### Results\n")
    w("| operation | face | instances | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx / faults in 2xx "
      "| req/s per instance | peak RSS MB per instance | server CPU per instance | PostgreSQL CPU "
      "| server µs/req | PostgreSQL µs/req | wrk CPU | other CPU | sessions per instance "
      "| ratio to pgbench | load avg before |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for name, (operation, face, kind) in SCENARIOS.items():
        for mode, count in MODES.items():
            r = rows[(mode, name)]
            per = [float(i["requests"]) / r["secs"] for i in r["per_instance"]]
            by_instance = per if count == 2 else [sum(per)]
            ratio = f"{r['rps'] / tps:.2f}x" if kind == "write" else (
                f"writes {r['rps'] * 0.2 / tps:.2f}x" if kind == "mixed" else "—")
            extra = "".join([f" (+{r['sockerr']} socket errors)" if r["sockerr"] != "0" else "",
                             f" ({r['pool_short']} past the pool)" if r.get("pool_short", "0") != "0" else ""])
            rates = " / ".join("%.0f" % v for v in by_instance)
            rss = " / ".join("%.1f" % (v / 1024) for v in r["hwm"])
            cpus = " / ".join("%.0f%%" % (v / r["secs"] * 100) for v in r["cpu"])
            sessions = " / ".join(str(v) for v in r["sessions"])
            w(f"| {operation} | {face} | {count} | {r['rps']:.0f} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['p999_ms']} | {r['non2xx']} / {r['app_errors']}{extra} | {rates} | {rss} | {cpus} | "
              f"{r['pg_pct']:.0f}% | {r['gateway_us']:.0f} | {r['pg_us']:.0f} | {r['wrk']:.0f}% | "
              f"{r['other_pct']:.0f}% | {sessions} | {ratio} | {r['la']} |")
    w(f"| one-row INSERT per transaction (pgbench -M prepared, 64 clients) | | ceiling | {tps:.0f} tx/s | "
      f"{c['p50_ms']} | {c['p99_ms']} | {c['p999_ms']} | {c['failed']} failed | | | | {c_pg_pct:.0f}% | | "
      f"{c_pg_us:.0f} | {float(c['pgbench_pct']):.0f}% (pgbench) | {c_other:.0f}% | 64 | — | {c['la'].replace('_', ' ')} |")
    w("")

    # ---------------------------------------------------------------- reading the numbers
    reads = [n for n, s in SCENARIOS.items() if s[2] == "read"]
    writes = [n for n, s in SCENARIOS.items() if s[2] == "write"]
    r1 = lambda n: rows[("one", n)]
    r2 = lambda n: rows[("two", n)]
    w("### Reading the numbers (computed from this run)\n")
    w(f"- **Writes against the ceiling.** pgbench commits {tps:.0f} one-row transactions a second "
      f"with PostgreSQL at {c_pg_pct:.0f}% CPU ({c_pg_us:.0f} µs per transaction). The gateway's "
      "writes reach " + ", ".join(f"{r1(n)['rps'] / tps:.2f}x ({n})" for n in writes)
      + " of it on one instance and "
      + ", ".join(f"{r2(n)['rps'] / tps:.2f}x" for n in writes) + " on two. "
      f"A write costs PostgreSQL {min(r1(n)['pg_us'] for n in writes) / c_pg_us:.0f}–"
      f"{max(r1(n)['pg_us'] for n in writes) / c_pg_us:.0f}x the CPU of a pgbench transaction "
      f"({min(r1(n)['pg_us'] for n in writes):.0f}–{max(r1(n)['pg_us'] for n in writes):.0f} µs "
      f"against {c_pg_us:.0f}): it is one commit like pgbench's, but with a round trip for each "
      "of its statements (the locking reads, the refund's insert with its triggers, the audit "
      "entry and the rest). PostgreSQL's CPU during the writes: "
      + "/".join(f"{r1(n)['pg_pct']:.0f}%" for n in writes)
      + (", in a box whose CPU is full (below): CPU, most of it PostgreSQL's, bounds the writes "
         "here, not the commit's fsync."
         if all(r1(n)["busy"] / r1(n)["secs"] * 100 >= 180 for n in writes) else "."))
    ratios = {n: r2(n)["rps"] / r1(n)["rps"] for n in SCENARIOS}
    def span(names):
        values = sorted(ratios[n] for n in names)
        return f"{values[0]:.2f}x" if values[0] == values[-1] else f"{values[0]:.2f}x to {values[-1]:.2f}x"
    busy = {n: (rows[("one", n)]["busy"] / rows[("one", n)]["secs"] * 100,
                rows[("two", n)]["busy"] / rows[("two", n)]["secs"] * 100)
            for n in ("soap_status", "soap_manual", "soap_mixed")}
    full = all(min(pair) >= 180 for pair in busy.values())
    w(f"- **One instance against two.** Two instances answer {span(reads)} the reads of one and "
      f"{span(writes)} the writes (mixed: {ratios['soap_mixed']:.2f}x SOAP, "
      f"{ratios['rest_mixed']:.2f}x REST). The box's busy CPU (server + PostgreSQL + wrk + other) "
      "was " + ", ".join(f"{one:.0f}%/{two:.0f}%" for one, two in busy.values())
      + " of 200% (one/two instances; soap_status, soap_manual, soap_mixed)"
      + (": full either way, so on this machine a second instance only moves CPU around, and the "
         "comparison shows what two instances sharing one database cost, not what a second "
         "machine would bring."
         if full else
         ": not full, so part of the difference is CPU the second instance found idle.")
      + " Write p99 one→two instances: "
      + ", ".join(f"{r1(n)['p99_ms']}→{r2(n)['p99_ms']} ms ({n})" for n in writes) + ".")
    def where(n):
        r = r1(n)
        return f"{r['gateway_us']:.0f}+{r['pg_us']:.0f} µs ({n})"
    pg_share_reads = [r1(n)["pg_us"] / (r1(n)["gateway_us"] + r1(n)["pg_us"]) * 100 for n in reads]
    pg_share_writes = [r1(n)["pg_us"] / (r1(n)["gateway_us"] + r1(n)["pg_us"]) * 100 for n in writes]
    w("- **Where the CPU went** (one instance, server + PostgreSQL µs per request): "
      + ", ".join(where(n) for n in reads + writes)
      + f". PostgreSQL takes {min(pg_share_reads):.0f}–{max(pg_share_reads):.0f}% of it on reads and "
      f"{min(pg_share_writes):.0f}–{max(pg_share_writes):.0f}% on writes; a pgbench transaction costs "
      f"PostgreSQL {c_pg_us:.0f} µs. wrk itself takes "
      f"{min(r1(n)['wrk'] for n in SCENARIOS):.0f}–{max(r1(n)['wrk'] for n in SCENARIOS):.0f}% of the box.")
    las = [float(r["la"].split()[0]) for r in rows.values()]
    others = [r["other_pct"] for r in rows.values()]
    w(f"- **Outside load.** The 1-minute load average before the scenarios ran from {min(las):.1f} "
      f"to {max(las):.1f} (2.0 = both cores busy), and other processes took {min(others):.0f}–"
      f"{max(others):.0f}% of the box during them"
      + (": other jobs shared the machine heavily during this run, so its absolute figures are "
         "lower than a quiet box gives; the ratios within the run (to pgbench, one against two "
         "instances, gateway against PostgreSQL CPU) are the part to read."
         if max(others) >= 20 else "."))
    most = max(max(r["sessions"]) for r in rows.values())
    w(f"- **Sessions.** At most {most} sessions per instance were open (pool {pool}); "
      f"peak RSS per instance at most {max(max(r['hwm']) for r in rows.values()) / 1024:.0f} MB.")
    if sqlite:
        pairs = []
        for n in ("soap_status", "rest_status", "soap_manual", "rest_manual", "soap_confirm", "soap_mixed"):
            operation, face, _ = SCENARIOS[n]
            if (operation, face) in sqlite:
                rate, la = sqlite[(operation, face)]
                pairs.append((n, r1(n)["rps"] / rate, la))
        if pairs:
            faster = all(ratio < 1 for _, ratio, _ in pairs)
            w("- **Against SQLite** (the Results table above, from its own run): one instance on "
              "PostgreSQL answers " + ", ".join(f"{ratio:.2f}x ({n})" for n, ratio, _ in pairs)
              + " of SQLite's req/s; load average before those SQLite scenarios "
              + ", ".join(la for _, _, la in pairs) + ", before these "
              + ", ".join(r1(n)["la"] for n, _, _ in pairs) + "."
              + (" On one machine SQLite is the faster ledger; PostgreSQL is there for several "
                 "instances on one ledger." if faster else ""))
    w("")
    w(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile-postgres.md")).read().rstrip("\n"))
    w(END)
    section = "\n".join(out) + "\n"

    start, end = old.find(START), old.find(END)
    if start >= 0 and end > start:
        text = old[:start] + section + old[end + len(END):].lstrip("\n")
    else:
        text = old.rstrip("\n") + "\n\n" + section
    open(target, "w").write(text)
    print(section)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ticks":
        tree_ticks(args[0])
    elif cmd == "percentiles":
        percentiles(args)
    elif cmd == "report":
        report(*args)
    else:
        sys.exit("unknown command " + cmd)
