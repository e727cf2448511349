//! Observability: liveness, readiness, Prometheus metrics, and JSON logs that carry request ids
//! and never a secret.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{
    TEST_API_KEY, TestDatabase, TestServer, client, get, post, soap11, soap11_headers, test_key,
};

#[tokio::test]
async fn metrics_count_requests_by_face_operation_and_outcome() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
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
    let metrics = get(&http, &format!("{}/metrics", server.base)).await;
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

#[test]
fn json_logs_carry_the_request_and_no_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("logs.db");
    let import = Command::new(env!("CARGO_BIN_EXE_refunds-gateway"))
        .args(["import", "--db"])
        .arg(&database)
        .arg(crate::support::fixtures_dir().join("test-shop.json"))
        .output()
        .expect("import");
    assert!(import.status.success());
    let user = Command::new(env!("CARGO_BIN_EXE_refunds-gateway"))
        .args(["user", "add", "--db"])
        .arg(&database)
        .args([
            crate::support::TEST_LOGIN,
            "--password",
            crate::support::TEST_PASSWORD,
        ])
        .output()
        .expect("user add");
    assert!(user.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_refunds-gateway"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(&database)
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
    let address = address.expect("address");
    // The legacy key is valid for today's date only with a real clock: this call fails
    // authentication, which is what a log must record without the key itself.
    let key = test_key();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let body = soap11("getRefundStatus", "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:paymentId>1</r:paymentId>");
        post(&client(), &format!("http://{address}/soap/refunds"), &soap11_headers("getRefundStatus"), body).await;
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    for line in log.lines() {
        lines.push(line.expect("log line"));
    }
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
    assert!(!everything.contains(crate::support::TEST_PASSWORD));
}
