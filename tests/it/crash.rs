//! Kill the gateway with SIGKILL while its outbox is sending 200 confirmed automatic refunds,
//! start it again, and prove that every refund ends Completed with exactly one effective refund
//! on the operator's side and that the ledger's totals still add up.
//!
//! Runs the binary cargo built for the tests; `REFUNDS_GATEWAY_BIN` points it at another build
//! (CI passes the release binary).

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::operators::{Reply, SECRET, Script, TestOperator};
use crate::support::{
    Backend, Running, ServeProcess, TestLedger, client, gateway, on_both_backends, rest_request,
};

const REFUNDS: i64 = 200;

/// Starts `serve` on a free port with the operators file; returns the process and its address.
fn serve(database: &OsStr, operators: &Path) -> (Running, String) {
    let operators = operators.to_str().expect("a UTF-8 path");
    let gateway = ServeProcess::start(database, &["--operators", operators]);
    (gateway.process, gateway.address)
}

fn run(args: &[&str], database: &OsStr) -> String {
    let output = gateway()
        .args(args)
        .arg("--db")
        .arg(database)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

pub async fn rest(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: reqwest::Method,
    operation: &str,
    params: Value,
) -> Value {
    let request = rest_request(
        http,
        &format!("http://{base}"),
        key,
        method,
        operation,
        &params,
    );
    match request.send().await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        // The gateway may die under our feet: that is the point of this test.
        Err(_) => Value::Null,
    }
}

on_both_backends!(
    kill_9_while_sending_then_restart_refunds_each_exactly_once,
    multi_thread
);
async fn kill_9_while_sending_then_restart_refunds_each_exactly_once(backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Created and migrated by `import` below.
    let ledger = TestLedger::empty(backend);
    let database = ledger.db_arg();
    let orders: Vec<Value> = (1..=REFUNDS)
        .map(|n| {
            json!({"orderId": 5000 + n, "currency": "PLN", "payments": [{"paymentId": 6000 + n, "amount": "50.00", "currency": "PLN",
                "paymentFormId": 12, "paymentSystem": 27, "autoRefund": true, "externalTransactionId": format!("EXT-{n}"),
                "paidAt": "2026-11-19 10:00:00"}]})
        })
        .collect();
    let shop = dir.path().join("shop.json");
    std::fs::write(&shop, json!({ "orders": orders }).to_string()).expect("shop");
    run(&["import", shop.to_str().expect("path")], &database);
    let key = run(&["key", "create", "--name", "crash"], &database)
        .trim()
        .to_owned();

    // The operator takes 40 ms per refund, does each refund once per idempotency key, and
    // reports it completed whenever asked again.
    let operator = TestOperator::start(Script {
        sends: vec![Reply::Slow(
            40,
            200,
            json!({"status": "completed", "operatorRefundId": "auto"}),
        )],
        queries: vec![Reply::Json(404, json!({}))],
        remember: true,
    })
    .await;
    let operators = dir.path().join("operators.toml");
    std::fs::write(
        &operators,
        format!(
            "default = \"testpay\"\n[retry]\nbase_ms = 20\ncap_ms = 200\nlease_ms = 500\n[operators.testpay]\nkind = \"http\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\ntimeout_ms = 2000\n",
            operator.url
        ),
    )
    .expect("operators file");

    let (mut gateway, base) = serve(&database, &operators);
    let http = client();
    let mut ids = Vec::new();
    for n in 1..=REFUNDS {
        let added = rest(&http, &base, &key, reqwest::Method::POST, "addAutomaticRefundForOrder", json!({"sourceId": 5000 + n, "paymentId": 6000 + n, "refundValue": "50.00", "refundCurrency": "PLN"})).await;
        ids.push((
            5000 + n,
            added["result"]["refundId"].as_i64().expect("refundId"),
        ));
    }
    // Confirm them all at once, and kill the gateway once the operator has seen a quarter.
    let confirms: Vec<_> = ids
        .iter()
        .map(|&(order, id)| {
            let (http, base, key) = (http.clone(), base.clone(), key.clone());
            tokio::spawn(async move {
                rest(
                    &http,
                    &base,
                    &key,
                    reqwest::Method::PUT,
                    "confirmRefund",
                    json!({"sourceType": "order", "sourceId": order, "paymentId": id}),
                )
                .await
            })
        })
        .collect();
    for _ in 0..500 {
        if operator.count("POST") as i64 >= REFUNDS / 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.0.kill().expect("SIGKILL");
    gateway.0.wait().expect("reap");
    let sends_before_kill = operator.count("POST");
    assert!(
        sends_before_kill > 0 && (sends_before_kill as i64) < REFUNDS,
        "the kill must land while refunds are on their way: {sends_before_kill} of {REFUNDS} sent"
    );
    for confirm in confirms {
        let _ = confirm.await;
    }

    // Start again; confirm whatever the kill left unconfirmed; wait for every refund to settle.
    let (mut gateway, base) = serve(&database, &operators);
    let mut settled = 0;
    for _ in 0..600 {
        settled = 0;
        for &(order, id) in &ids {
            let at = json!({"sourceType": "order", "sourceId": order, "paymentId": id});
            let status = rest(
                &http,
                &base,
                &key,
                reqwest::Method::GET,
                "getRefundStatus",
                at.clone(),
            )
            .await;
            match status["result"]["refundStatus"].as_str() {
                Some("Completed") => settled += 1,
                Some("New") => {
                    rest(
                        &http,
                        &base,
                        &key,
                        reqwest::Method::PUT,
                        "confirmRefund",
                        at,
                    )
                    .await;
                }
                _ => {}
            }
        }
        if settled == REFUNDS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.0.kill().expect("stop");
    gateway.0.wait().expect("reap");
    assert_eq!(settled, REFUNDS, "every refund completed after the restart");

    let effective = operator.state.lock().expect("state").effective.clone();
    assert_eq!(
        effective.len() as i64,
        REFUNDS,
        "every refund reached the operator"
    );
    let refunded: std::collections::HashSet<&String> = effective.keys().collect();
    let confirmed: Vec<String> = ids.iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(
        refunded,
        confirmed.iter().collect(),
        "the operator refunded exactly the confirmed refunds"
    );
    // The operator makes one refund per idempotency key (as real ones do), so a resend after
    // the crash is harmless only if every send of a refund carries that refund's id as its key.
    let received = operator.state.lock().expect("state").received.clone();
    for send in received.iter().filter(|received| received.method == "POST") {
        assert_eq!(
            send.idempotency_key,
            send.body["refundId"].as_i64().map(|id| id.to_string()),
            "a send keyed by its refund id"
        );
    }
    assert!(
        effective.values().all(|&count| count == 1),
        "no refund was made twice: {effective:?}"
    );
    let sends = operator.count("POST");
    let queries = operator.count("GET");
    eprintln!(
        "crash test: {REFUNDS} refunds; {sends_before_kill} sends before SIGKILL; {sends} sends and {queries} status queries in all; {} effective refunds, each exactly once",
        effective.len()
    );

    let pending = crate::support::gateway()
        .args(["outbox", "--db"])
        .arg(&database)
        .output()
        .expect("outbox");
    assert!(pending.status.success());
    assert_eq!(
        String::from_utf8_lossy(&pending.stderr).trim(),
        "0 job(s)",
        "nothing is left in the outbox"
    );
    let all = run(&["outbox", "--all"], &database);
    assert_eq!(
        all.lines()
            .filter(|line| line.contains(" testpay ") && line.contains(" done "))
            .count() as i64,
        REFUNDS
    );

    let check = |sql: &str| ledger.count(sql);
    assert_eq!(
        check(
            "SELECT count(*) FROM refunds WHERE status = 'Completed' AND external_id = 'OP-' || id"
        ),
        REFUNDS
    );
    assert_eq!(
        check("SELECT count(*) FROM outbox WHERE state <> 'done'"),
        0
    );
    crate::support::assert_ledger_consistent(&ledger);
    // PostgreSQL keeps the count in shards; their sum is the count.
    assert_eq!(
        check(
            "SELECT sum(n) FROM refund_counts WHERE source_type = 'order' AND status = 'Completed'"
        ),
        REFUNDS
    );
}
