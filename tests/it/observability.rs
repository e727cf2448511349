//! Observability: liveness, readiness, Prometheus metrics, and JSON logs that carry request ids
//! and never a secret.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{
    Backend, Running, TEST_API_KEY, TestLedger, TestServer, client, gateway, get, on_both_backends,
    post, soap11, soap11_headers, test_key,
};

on_both_backends!(metrics_count_requests_by_face_operation_and_outcome);
async fn metrics_count_requests_by_face_operation_and_outcome(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let config = ledger.config();
    let server = TestServer::start_with(config).await;
    let http = client();
    let url = format!("{}/soap/refunds", server.base);
    let ok = soap11(
        "getPossibleAutoRefunds",
        "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId>",
    );
    post(
        &http,
        &url,
        &soap11_headers("getPossibleAutoRefunds"),
        ok.clone(),
    )
    .await;
    post(&http, &url, &soap11_headers("getPossibleAutoRefunds"), ok).await;
    let business = soap11(
        "getPossibleAutoRefunds",
        "<r:sourceType>order</r:sourceType><r:sourceId>9999</r:sourceId>",
    );
    post(
        &http,
        &url,
        &soap11_headers("getPossibleAutoRefunds"),
        business,
    )
    .await;
    post(&http, &url, &soap11_headers("x"), b"not xml".to_vec()).await;
    let manual = r#"{"params":{"sourceType":"order","sourceId":2001,"refundValue":"1.00","refundCurrency":"PLN","refundDetails":{"paymentFormId":1}}}"#;
    http.post(format!(
        "{}/api/admin/v6/refunds/addManualRefund",
        server.base
    ))
    .header("x-api-key", TEST_API_KEY)
    .body(manual)
    .send()
    .await
    .expect("send");

    let health = get(&http, &format!("{}/healthz", server.base)).await;
    let ready = get(&http, &format!("{}/readyz", server.base)).await;
    assert_eq!((health.status, ready.status), (200, 200));
    let without_token = get(&http, &format!("{}/metrics", server.base)).await;
    assert_eq!(without_token.status, 401, "metrics need the token");
    let metrics = crate::support::answer(
        http.get(format!("{}/metrics", server.base))
            .header("authorization", "Bearer scrape-token")
            .send()
            .await
            .expect("scrape"),
    )
    .await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        metrics.content_type
    );
    let text = metrics.body;
    for line in [
        r#"refunds_gateway_requests_total{face="soap",operation="getPossibleAutoRefunds",outcome="ok"} 2"#,
        r#"refunds_gateway_requests_total{face="soap",operation="getPossibleAutoRefunds",outcome="business_error"} 1"#,
        r#"refunds_gateway_requests_total{face="soap",operation="-",outcome="rejected"} 1"#,
        r#"refunds_gateway_requests_total{face="json",operation="addManualRefund",outcome="ok"} 1"#,
        r#"refunds_gateway_refunds{status="New"} 1"#,
        r#"refunds_gateway_refunds{status="Completed"} 0"#,
        "refunds_gateway_outbox_depth 0",
        r#"refunds_gateway_request_duration_seconds_count{face="soap"} 4"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    server.stop().await;
}

/// `serve` as its own process with JSON logs at debug level: the child, its log, the lines
/// read so far and the address it listens on.
fn serve_with_json_logs(
    database: &std::ffi::OsStr,
) -> (
    Running,
    BufReader<std::process::ChildStderr>,
    Vec<String>,
    String,
) {
    let mut child = gateway()
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(database)
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut log = BufReader::new(child.stderr.take().expect("stderr"));
    let mut lines = Vec::new();
    let mut address = None;
    while address.is_none() {
        let mut line = String::new();
        assert!(
            log.read_line(&mut line).expect("log") > 0,
            "the server stopped: {lines:?}"
        );
        let entry: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        address = entry["fields"]["address"].as_str().map(str::to_owned);
        lines.push(line);
    }
    (Running(child), log, lines, address.expect("address"))
}

/// Stops the server and returns every log line.
fn stop_and_read_log(
    mut server: Running,
    log: BufReader<std::process::ChildStderr>,
    mut lines: Vec<String>,
) -> Vec<String> {
    let _ = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status();
    let _ = server.0.wait();
    for line in log.lines() {
        lines.push(line.expect("log line"));
    }
    lines
}

on_both_backends!(json_logs_carry_the_request_and_no_secrets);
async fn json_logs_carry_the_request_and_no_secrets(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let (child, log, lines, address) = serve_with_json_logs(&ledger.db_arg());
    // The legacy key is valid for today's date only with a real clock: this call fails
    // authentication, which is what a log must record without the key itself.
    let key = test_key();
    let body = soap11(
        "getRefundStatus",
        "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:paymentId>1</r:paymentId>",
    );
    post(
        &client(),
        &format!("http://{address}/soap/refunds"),
        &soap11_headers("getRefundStatus"),
        body,
    )
    .await;
    let lines = stop_and_read_log(child, log, lines);
    let answered: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == "answered")
        .collect();
    assert_eq!(answered.len(), 1, "{lines:?}");
    assert_eq!(answered[0]["span"]["operation"], "getRefundStatus");
    assert!(
        answered[0]["span"]["id"].is_number(),
        "a request id on every request line: {}",
        answered[0]
    );
    let everything = lines.join("\n");
    assert!(
        !everything.contains(&key),
        "the legacy key never reaches the log"
    );
    // What the client sent that is secret: the legacy key (above). The password never
    // travels; what the ledger keeps of it must not reach the log either.
    assert!(
        !everything.contains(&refunds_gateway::refunds::password_sha1_hex(
            crate::support::TEST_PASSWORD
        )),
        "sha1(password) never reaches the log"
    );
}

on_both_backends!(an_internal_failure_is_logged_with_its_cause_and_never_sent);
/// An internal failure answers the generic fault with no cause, and the cause goes to the log
/// once, at error level, with the operation: here the audit table is dropped behind the
/// running service's back, so the write cannot append its audit entry.
async fn an_internal_failure_is_logged_with_its_cause_and_never_sent(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let key = gateway()
        .args(["key", "create", "--db"])
        .arg(ledger.db_arg())
        .args(["--name", "writer", "--scope", "read,write"])
        .output()
        .expect("key create");
    assert!(key.status.success());
    let api_key = String::from_utf8(key.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let (child, log, lines, address) = serve_with_json_logs(&ledger.db_arg());
    ledger.execute("DROP TABLE audit_log");
    let mut headers = soap11_headers("addManualRefund");
    headers.push(("x-api-key".to_owned(), api_key.clone()));
    let body = soap11(
        "addManualRefund",
        "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:refundValue>1.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency><r:refundDetails><r:paymentFormId>2</r:paymentFormId></r:refundDetails>",
    );
    let answer = post(
        &client(),
        &format!("http://{address}/soap/refunds"),
        &headers,
        body,
    )
    .await;
    let lines = stop_and_read_log(child, log, lines);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        crate::support::element_text(&answer.body, "faultCode"),
        Some("4010"),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("the cause is in the gateway's log") && !answer.body.contains("audit"),
        "{}",
        answer.body
    );
    let failures: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == "operation failed")
        .collect();
    assert_eq!(failures.len(), 1, "logged once: {lines:?}");
    assert_eq!(failures[0]["level"], "ERROR");
    assert_eq!(failures[0]["fields"]["operation"], "addManualRefund");
    let cause = failures[0]["fields"]["error"].as_str().unwrap_or_default();
    assert!(cause.contains("audit_log"), "the cause is logged: {cause}");
    assert!(
        !lines.join("\n").contains(&api_key),
        "the API key sent in X-API-KEY never reaches the log"
    );
}
