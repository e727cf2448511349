//! Trust: idempotent writes on every face, the audit chain (and a tampered one), maker-checker,
//! readiness, and an online backup that restores with its chain intact.

use refunds_gateway::store::Database;
use serde_json::{Value, json};

use crate::support::{
    Backend, TEST_API_KEY, TEST_LOGIN, TestDatabase, TestLedger, TestServer, client, count_in,
    fixed_now, gateway, on_both_backends, rest_request, test_key, verify_once_chained,
};

struct Sent {
    status: u16,
    replayed: bool,
    body: String,
}

async fn post_rest(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    idempotency: Option<&str>,
    operation: &str,
    params: Value,
) -> Sent {
    let mut request = rest_request(http, base, key, reqwest::Method::POST, operation, &params);
    if let Some(idempotency) = idempotency {
        request = request.header("idempotency-key", idempotency);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotency-replayed").is_some();
    Sent {
        status,
        replayed,
        body: response.text().await.expect("body"),
    }
}

fn manual(value: &str) -> Value {
    json!({"sourceType": "order", "sourceId": 2001, "refundValue": value, "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}})
}

on_both_backends!(a_retried_write_is_answered_again_and_changes_nothing);
async fn a_retried_write_is_answered_again_and_changes_nothing(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(ledger.config()).await;
    let http = client();
    let base = &server.base;

    let first = post_rest(
        &http,
        base,
        TEST_API_KEY,
        Some("retry-1"),
        "addManualRefund",
        manual("10.00"),
    )
    .await;
    assert_eq!(
        (first.status, first.replayed),
        (200, false),
        "{}",
        first.body
    );
    let again = post_rest(
        &http,
        base,
        TEST_API_KEY,
        Some("retry-1"),
        "addManualRefund",
        manual("10.00"),
    )
    .await;
    assert_eq!((again.status, again.replayed), (200, true));
    assert_eq!(again.body, first.body, "replayed byte for byte");
    assert_eq!(
        ledger.count("SELECT count(*) FROM refunds"),
        1,
        "one refund for two requests"
    );

    // The same key with another request is refused, and nothing happens.
    let reused = post_rest(
        &http,
        base,
        TEST_API_KEY,
        Some("retry-1"),
        "addManualRefund",
        manual("11.00"),
    )
    .await;
    assert_eq!(reused.status, 409, "{}", reused.body);
    assert!(
        reused.body.contains("\"faultCode\":4022"),
        "{}",
        reused.body
    );
    assert_eq!(ledger.count("SELECT count(*) FROM refunds"), 1);

    // Business errors are answers too: replayed, not re-run.
    let refused = post_rest(
        &http,
        base,
        TEST_API_KEY,
        Some("retry-2"),
        "addManualRefund",
        manual("999.00"),
    )
    .await;
    let refused_again = post_rest(
        &http,
        base,
        TEST_API_KEY,
        Some("retry-2"),
        "addManualRefund",
        manual("999.00"),
    )
    .await;
    assert_eq!(
        (refused.status, refused_again.status, refused_again.replayed),
        (207, 207, true)
    );
    assert_eq!(refused.body, refused_again.body);

    // Keys belong to their caller: another caller's same key is a different request.
    ledger.maintain(|maintenance| {
        maintenance
            .create_api_key(
                "second",
                &refunds_gateway::refunds::api_key_digest("rgk_second"),
                refunds_gateway::refunds::types::Scopes::ALL,
                fixed_now(),
            )
            .expect("key")
    });
    let other = post_rest(
        &http,
        base,
        "rgk_second",
        Some("retry-1"),
        "addManualRefund",
        manual("10.00"),
    )
    .await;
    assert_eq!((other.status, other.replayed), (200, false));
    assert_eq!(ledger.count("SELECT count(*) FROM refunds"), 2);
    server.stop().await;
}

on_both_backends!(soap_and_the_json_gate_honour_idempotency_keys_too);
async fn soap_and_the_json_gate_honour_idempotency_keys_too(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(ledger.config()).await;
    let http = client();
    let envelope = format!(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:r="urn:refunds-gateway:refunds"><soap:Header><r:idempotencyKey soap:mustUnderstand="1">soap-7</r:idempotencyKey></soap:Header><soap:Body><r:addAutomaticRefundForOrder><r:authenticate><r:userLogin>{TEST_LOGIN}</r:userLogin><r:authenticateKey>{}</r:authenticateKey></r:authenticate><r:params><r:sourceId>2001</r:sourceId><r:paymentId>11</r:paymentId><r:refundValue>5.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency></r:params></r:addAutomaticRefundForOrder></soap:Body></soap:Envelope>"#,
        test_key()
    );
    let send = || async {
        http.post(format!("{}/soap/refunds", server.base))
            .header("content-type", "text/xml; charset=utf-8")
            .body(envelope.clone())
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("body")
    };
    let first = send().await;
    assert!(
        first.contains("<faultCode>0</faultCode>") && first.contains("<refundId>20</refundId>"),
        "{first}"
    );
    assert_eq!(
        send().await,
        first,
        "the SOAP header key replays the first answer"
    );
    assert_eq!(ledger.count("SELECT count(*) FROM refunds"), 1);
    // The same key in a SOAP 1.2 envelope is another request: never 1.1 bytes in a 1.2 answer.
    let soap12 = envelope.replace(
        "http://schemas.xmlsoap.org/soap/envelope/",
        "http://www.w3.org/2003/05/soap-envelope",
    );
    let other = http
        .post(format!("{}/soap/refunds", server.base))
        .header("content-type", "application/soap+xml; charset=utf-8")
        .body(soap12)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert!(
        other.contains("<faultCode>4022</faultCode>") && other.contains("2003/05/soap-envelope"),
        "{other}"
    );
    assert_eq!(ledger.count("SELECT count(*) FROM refunds"), 1);

    let gate = format!(
        "{}/api/?gate=refunds/addAutomaticRefundForOrder/1/json",
        server.base
    );
    let body = json!({"authenticate": {"userLogin": TEST_LOGIN, "authenticateKey": test_key()},
                      "params": {"sourceId": 2001, "paymentId": 11, "refundValue": "6.00", "refundCurrency": "PLN"}})
    .to_string();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = http
            .post(&gate)
            .header("idempotency-key", "gate-1")
            .body(body.clone())
            .send()
            .await
            .expect("send");
        let replayed = response.headers().contains_key("idempotency-replayed");
        answers.push((replayed, response.text().await.expect("body")));
    }
    assert!(answers[0].1.contains(r#""faultCode":0"#), "{answers:?}");
    assert_eq!(
        answers
            .iter()
            .map(|(replayed, _)| *replayed)
            .collect::<Vec<_>>(),
        [false, true, true],
        "the retries are replays"
    );
    assert!(
        answers.iter().all(|(_, answer)| answer == &answers[0].1),
        "{answers:?}"
    );
    assert_eq!(ledger.count("SELECT count(*) FROM refunds"), 2);
    server.stop().await;
}

on_both_backends!(every_change_is_in_the_audit_chain_and_tampering_is_found);
async fn every_change_is_in_the_audit_chain_and_tampering_is_found(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(ledger.config()).await;
    let http = client();
    let added = post_rest(
        &http,
        &server.base,
        TEST_API_KEY,
        None,
        "addManualRefund",
        manual("10.00"),
    )
    .await;
    let id: i64 = serde_json::from_str::<Value>(&added.body).expect("JSON")["result"]["refundId"]
        .as_i64()
        .expect("id");
    let at = json!({"sourceType": "order", "sourceId": 2001, "paymentId": id});
    let put = |operation: &str, params: Value| {
        http.put(format!("{}/api/admin/v6/refunds/{operation}", server.base))
            .header("x-api-key", TEST_API_KEY)
            .body(json!({ "params": params }).to_string())
            .send()
    };
    let mut update = at.clone();
    update["refundValue"] = json!("12.00");
    update["refundCurrency"] = json!("PLN");
    assert_eq!(
        put("updateRefund", update)
            .await
            .expect("send")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        put("confirmRefund", at)
            .await
            .expect("send")
            .status()
            .as_u16(),
        200
    );
    let verify = || {
        gateway()
            .args(["audit", "verify", "--db"])
            .arg(ledger.db_arg())
            .output()
            .expect("verify")
    };
    let intact = verify_once_chained(&ledger).await;
    server.stop().await;

    let show = gateway()
        .args(["audit", "show", "--db"])
        .arg(ledger.db_arg())
        .args(["--refund", &id.to_string()])
        .output()
        .expect("show");
    let shown = String::from_utf8_lossy(&show.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[0].contains("key:all via rest addManualRefund: - - -> New 1000 PLN"),
        "{shown}"
    );
    assert!(
        lines[1].contains("updateRefund: New 1000 -> New 1200 PLN"),
        "{shown}"
    );
    assert!(
        lines[2].contains("confirmRefund: New 1200 -> Completed 1200 PLN"),
        "{shown}"
    );
    assert!(
        lines.iter().all(|line| line.contains("(request ")) && !shown.contains("(request -)"),
        "request ids are recorded: {shown}"
    );

    assert!(intact.status.success());
    assert_eq!(
        String::from_utf8_lossy(&intact.stdout).trim(),
        "audit chain intact: 3 entries"
    );

    // Someone with the database edits an amount, past the trigger that refuses it: verify
    // names the entry.
    ledger.execute(match backend {
        Backend::Sqlite => {
            "DROP TRIGGER audit_never_updated; UPDATE audit_log SET amount_after = 100 WHERE seq = 2;"
        }
        Backend::Postgres => {
            "ALTER TABLE audit_log DISABLE TRIGGER audit_append_only; UPDATE audit_log SET amount_after = 100 WHERE seq = 2;"
        }
    });
    let tampered = verify();
    assert!(!tampered.status.success());
    assert!(
        String::from_utf8_lossy(&tampered.stderr).contains("audit chain broken at entry 2"),
        "{}",
        String::from_utf8_lossy(&tampered.stderr)
    );
}

on_both_backends!(maker_checker_needs_a_second_approver);
async fn maker_checker_needs_a_second_approver(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let mut config = ledger.config();
    config.require_second_approver = true;
    let server = TestServer::start_with(config).await;
    let http = client();
    let added = post_rest(
        &http,
        &server.base,
        TEST_API_KEY,
        None,
        "addManualRefund",
        manual("10.00"),
    )
    .await;
    let id =
        serde_json::from_str::<Value>(&added.body).expect("JSON")["result"]["refundId"].clone();
    let confirm = |key: &'static str| {
        http.put(format!(
            "{}/api/admin/v6/refunds/confirmRefund",
            server.base
        ))
        .header("x-api-key", key)
        .body(
            json!({"params": {"sourceType": "order", "sourceId": 2001, "paymentId": id}})
                .to_string(),
        )
        .send()
    };
    let own = confirm(TEST_API_KEY).await.expect("send");
    assert_eq!(own.status().as_u16(), 207);
    assert!(
        own.text()
            .await
            .expect("body")
            .contains("\"faultCode\":4021")
    );
    // The legacy user `tester` is someone else.
    let soap = format!(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><confirmRefund xmlns="urn:refunds-gateway:refunds"><authenticate><userLogin>{TEST_LOGIN}</userLogin><authenticateKey>{}</authenticateKey></authenticate><params><sourceType>order</sourceType><sourceId>2001</sourceId><paymentId>{id}</paymentId></params></confirmRefund></soap:Body></soap:Envelope>"#,
        test_key()
    );
    let other = http
        .post(format!("{}/soap/refunds", server.base))
        .header("content-type", "text/xml")
        .body(soap)
        .send()
        .await
        .expect("send");
    let other = other.text().await.expect("body");
    assert!(
        other.contains("<confirmResult>true</confirmResult>"),
        "{other}"
    );
    server.stop().await;
}

#[tokio::test]
async fn readiness_and_an_online_backup_that_restores() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let http = client();
    let ready = http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status().as_u16(), 200);
    for value in ["1.00", "2.00", "3.00"] {
        post_rest(
            &http,
            &server.base,
            TEST_API_KEY,
            None,
            "addManualRefund",
            manual(value),
        )
        .await;
    }
    // Back up while the server runs.
    let copy = database.path.with_file_name("backup.db");
    let backup = gateway()
        .args(["backup", "--db"])
        .arg(&database.path)
        .arg(&copy)
        .output()
        .expect("backup");
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    server.stop().await;
    let restored = gateway()
        .args(["audit", "verify", "--db"])
        .arg(&copy)
        .output()
        .expect("verify");
    assert_eq!(
        String::from_utf8_lossy(&restored.stdout).trim(),
        "audit chain intact: 3 entries"
    );
    assert_eq!(
        count_in(
            &Database::Sqlite(copy.clone()),
            "SELECT count(*) FROM refunds"
        ),
        3
    );
    let again = gateway()
        .args(["backup", "--db"])
        .arg(&database.path)
        .arg(&copy)
        .output()
        .expect("backup");
    assert!(!again.status.success(), "a backup never overwrites a file");
}
