//! The REST face and the legacy JSON gate over HTTP: the lifecycle with a key made by
//! `key create`, the same lifecycle through the JSON gate with legacy credentials, keys and
//! scopes, and bad requests that must change nothing.

use serde_json::{Value, json};

use crate::support::{
    Answer, Backend, TEST_API_KEY, TEST_LOGIN, TEST_READ_KEY, TestLedger, TestServer, client,
    gateway, on_both_backends, post, rest_request, test_key,
};

struct Rest {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Rest {
    async fn send(&self, method: &str, operation: &str, params: Value) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a verb");
        let response = rest_request(
            &self.http, &self.base, &self.key, method, operation, &params,
        )
        .send()
        .await
        .expect("request sent");
        let status = response.status().as_u16();
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let body: Value =
            serde_json::from_str(&response.text().await.expect("body")).expect("JSON body");
        (status, body)
    }

    async fn ok(&self, method: &str, operation: &str, params: Value) -> Value {
        let (status, body) = self.send(method, operation, params).await;
        assert_eq!(status, 200, "{operation}: {body}");
        assert!(body.get("errors").is_none(), "{body}");
        body
    }
}

fn create_key(ledger: &TestLedger, name: &str, scope: &str) -> String {
    let output = gateway()
        .args(["key", "create", "--db"])
        .arg(ledger.db_arg())
        .args(["--name", name, "--scope", scope])
        .output()
        .expect("run key create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

fn revoke_key(ledger: &TestLedger, name: &str) {
    let output = gateway()
        .args(["key", "revoke", "--db"])
        .arg(ledger.db_arg())
        .arg(name)
        .output()
        .expect("run key revoke");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

on_both_backends!(rest_lifecycle_with_a_key_from_key_create);
async fn rest_lifecycle_with_a_key_from_key_create(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let key = create_key(&ledger, "back-office", "read,write,confirm");
    assert!(key.starts_with("rgk_") && key.len() >= 40, "{key}");
    let stored = ledger.count(&format!(
        "SELECT count(*) FROM api_keys WHERE key_sha256 = '{key}' OR name = '{key}'"
    ));
    assert_eq!(stored, 0, "the key itself is never stored");
    let server = TestServer::start_with(ledger.config()).await;
    let rest = Rest {
        http: client(),
        base: server.base.clone(),
        key,
    };

    let possible = rest
        .ok(
            "GET",
            "getPossibleAutoRefunds",
            json!({"sourceType": "order", "sourceId": 2001}),
        )
        .await;
    assert_eq!(possible["results"][0]["paymentId"], json!(11));
    assert_eq!(
        possible["results"][0]["value"].to_string(),
        "200.00",
        "money is written exactly"
    );
    let added = rest
        .ok("POST", "addAutomaticRefundForOrder", json!({"sourceId": 2001, "paymentId": "11", "refundValue": 40, "refundCurrency": "PLN"}))
        .await;
    let id = added["result"]["refundId"].as_i64().expect("refundId");
    let at = json!({"sourceType": "order", "sourceId": 2001, "paymentId": id});
    let mut update = at.clone();
    update["refundValue"] = json!("45.50");
    update["refundCurrency"] = json!("PLN");
    assert_eq!(
        rest.ok("PUT", "updateRefund", update).await["result"]["updateResult"],
        json!(true)
    );
    assert_eq!(
        rest.ok("PUT", "confirmRefund", at.clone()).await["result"]["confirmResult"],
        json!(true)
    );
    let status = rest.ok("GET", "getRefundStatus", at.clone()).await;
    assert_eq!(status["result"]["refundStatus"], json!("Processing"));
    assert_eq!(status["result"]["refundValue"].to_string(), "45.50");
    assert_eq!(
        status["result"]["refundDateConfirm"],
        json!("2026-11-20 12:00:00")
    );
    let (code, body) = rest.send("PUT", "cancelRefund", at).await;
    assert_eq!(
        (code, &body["errors"]["faultCode"]),
        (207, &json!(4019)),
        "{body}"
    );

    let manual = rest
        .ok(
            "POST",
            "addManualRefund",
            json!({"sourceType": "rma", "sourceId": 801, "refundValue": "30.00", "refundCurrency": "PLN",
                   "refundDetails": {"paymentFormId": 2, "account": "PL61109010140000071219812874"}}),
        )
        .await;
    let manual_at =
        json!({"sourceType": "rma", "sourceId": 801, "paymentId": manual["result"]["refundId"]});
    let listed = rest
        .ok(
            "GET",
            "retrieveRefundsList",
            json!({"sourceType": "all", "resultsLimit": 1}),
        )
        .await;
    assert_eq!(listed["resultsNumberAll"], json!(1));
    assert_eq!(listed["results"][0]["refundValue"].to_string(), "30.00");
    assert_eq!(
        rest.ok("PUT", "cancelRefund", manual_at).await["result"]["resultStatus"],
        json!(true)
    );
    let listed = rest
        .ok("GET", "retrieveRefundsList", json!({"sourceType": "all"}))
        .await;
    assert_eq!(listed["resultsNumberAll"], json!(0));
    server.stop().await;
}

async fn gate(http: &reqwest::Client, base: &str, operation: &str, document: Value) -> Value {
    let url = format!("{base}/api/?gate=refunds/{operation}/180/json");
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let answer: Answer = post(http, &url, &headers, document.to_string().into_bytes()).await;
    assert_eq!(
        (answer.status, answer.content_type.as_str()),
        (200, "application/json"),
        "{answer:?}"
    );
    serde_json::from_str(&answer.body).expect("JSON body")
}

on_both_backends!(json_gate_lifecycle_with_legacy_credentials);
async fn json_gate_lifecycle_with_legacy_credentials(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(ledger.config()).await;
    let http = client();
    let authenticate = json!({"userLogin": TEST_LOGIN, "authenticateKey": test_key()});
    let call = |operation: &'static str, params: Value| {
        gate(
            &http,
            &server.base,
            operation,
            json!({"authenticate": authenticate.clone(), "params": params}),
        )
    };
    let added = call("addManualRefund", json!({"sourceType": "return", "sourceId": 601, "refundValue": 12.5, "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}})).await;
    assert_eq!(added["errors"], json!({"faultCode": 0, "faultString": ""}));
    let id = added["result"]["refundId"].clone();
    let at = json!({"sourceType": "return", "sourceId": 601, "paymentId": id});
    let mut update = at.clone();
    update["refundValue"] = json!(15);
    update["refundCurrency"] = json!("PLN");
    assert_eq!(
        call("updateRefund", update).await["result"]["updateResult"],
        json!(true)
    );
    assert_eq!(
        call("confirmRefund", at.clone()).await["result"]["confirmResult"],
        json!(true)
    );
    let status = call("getRefundStatus", at.clone()).await;
    assert_eq!(status["result"]["refundStatus"], json!("Completed"));
    assert_eq!(status["result"]["refundValue"].to_string(), "15.00");
    let again = call("cancelRefund", at).await;
    assert_eq!(again["errors"]["faultCode"], json!(4020));
    assert!(again.get("result").is_none());
    let unauthenticated = gate(
        &http,
        &server.base,
        "getRefundStatus",
        json!({"params": {}}),
    )
    .await;
    assert_eq!(unauthenticated["errors"]["faultCode"], json!(1));
    let aliases = gate(
        &http,
        &server.base,
        "getPossibleAutoRefunds",
        json!({"authenticate": {"system_login": TEST_LOGIN, "system_key": test_key()}, "params": {"sourceType": "return", "sourceId": 601}}),
    )
    .await;
    assert_eq!(aliases["errors"]["faultCode"], json!(0), "{aliases}");
    server.stop().await;
}

on_both_backends!(scopes_revocation_and_header_keys_on_every_face);
async fn scopes_revocation_and_header_keys_on_every_face(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(ledger.config()).await;
    let http = client();
    let reader = Rest {
        http: http.clone(),
        base: server.base.clone(),
        key: TEST_READ_KEY.to_owned(),
    };
    let (status, body) = reader
        .send(
            "POST",
            "addAutomaticRefund",
            json!({"sourceType": "return", "sourceId": 601}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["faultCode"].clone()),
        (403, json!(1)),
        "{body}"
    );
    reader
        .ok(
            "GET",
            "getPossibleAutoRefunds",
            json!({"sourceType": "return", "sourceId": 601}),
        )
        .await;

    // The SOAP and JSON gates take the same key in X-API-KEY.
    let envelope = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><addAutomaticRefund xmlns="urn:refunds-gateway:refunds"><params><sourceType>return</sourceType><sourceId>601</sourceId></params></addAutomaticRefund></soap:Body></soap:Envelope>"#;
    for (key, fault) in [
        (TEST_READ_KEY, "<faultCode>1</faultCode>"),
        (TEST_API_KEY, "<faultCode>0</faultCode>"),
    ] {
        let headers = vec![
            ("content-type".to_owned(), "text/xml".to_owned()),
            ("x-api-key".to_owned(), key.to_owned()),
        ];
        let answer = post(
            &http,
            &format!("{}/soap/refunds", server.base),
            &headers,
            envelope.as_bytes().to_vec(),
        )
        .await;
        assert!(answer.body.contains(fault), "{key}: {}", answer.body);
    }
    let headers = vec![("authorization".to_owned(), format!("Bearer {TEST_API_KEY}"))];
    let url = format!(
        "{}/api/?gate=refunds/getPossibleAutoRefunds/1/json",
        server.base
    );
    let answer = post(
        &http,
        &url,
        &headers,
        br#"{"params":{"sourceType":"rma","sourceId":801}}"#.to_vec(),
    )
    .await;
    assert!(answer.body.contains(r#""faultCode":0"#), "{}", answer.body);
    server.stop().await;

    // Revoked keys stop working (at once after a restart; on a running service within the
    // credentials' time to live, tested below).
    revoke_key(&ledger, "reader");
    let listed = gateway()
        .args(["key", "list", "--db"])
        .arg(ledger.db_arg())
        .output()
        .expect("list");
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout);
    // name, scopes, created (date and time), and for a revoked key its revocation time.
    let columns = |name: &str| {
        listed
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .map(|line| line.split_whitespace().count())
    };
    assert_eq!(columns("reader"), Some(6), "revoked: {listed}");
    assert_eq!(columns("all"), Some(4), "still live: {listed}");
    let server = TestServer::start_with(ledger.config()).await;
    let reader = Rest {
        http,
        base: server.base.clone(),
        key: TEST_READ_KEY.to_owned(),
    };
    let (status, _) = reader
        .send(
            "GET",
            "getPossibleAutoRefunds",
            json!({"sourceType": "return", "sourceId": 601}),
        )
        .await;
    assert_eq!(status, 401);
    server.stop().await;
}

on_both_backends!(a_key_revoked_on_a_running_service_stops_working_after_the_credentials_ttl);
/// Checked credentials are trusted for `credentials_ttl` without a ledger read; a key revoked
/// while the service runs stops working once that time has passed, and a wrong key is never
/// remembered.
async fn a_key_revoked_on_a_running_service_stops_working_after_the_credentials_ttl(
    backend: Backend,
) {
    let ledger = TestLedger::with_test_shop(backend);
    let mut config = ledger.config();
    config.credentials_ttl = std::time::Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    let reader = Rest {
        http: client(),
        base: server.base.clone(),
        key: TEST_READ_KEY.to_owned(),
    };
    let params = json!({"sourceType": "rma", "sourceId": 801});
    reader
        .ok("GET", "getPossibleAutoRefunds", params.clone())
        .await;
    let stranger = Rest {
        key: "rgk_not_a_key_of_this_shop".to_owned(),
        ..reader
    };
    assert_eq!(
        stranger
            .send("GET", "getPossibleAutoRefunds", params.clone())
            .await
            .0,
        401
    );
    let reader = Rest {
        key: TEST_READ_KEY.to_owned(),
        ..stranger
    };

    revoke_key(&ledger, "reader");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (status, body) = reader.send("GET", "getPossibleAutoRefunds", params).await;
    assert_eq!(status, 401, "{body}");
    server.stop().await;
}

on_both_backends!(list_pages_near_and_far_give_the_same_ordering_and_totals);
/// Pages more than 5 000 refunds into the list are read on a blocking thread instead of the
/// request's own; both give the same rows, in id order, with the kept totals.
async fn list_pages_near_and_far_give_the_same_ordering_and_totals(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    const ADDED: i64 = 5_050;
    // 0.01 PLN manual refunds of order 2001 (paid 250.00 PLN), with consecutive ids.
    ledger.execute(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ADDED})
         INSERT INTO movements (kind) SELECT 'refund' FROM n"
    ));
    const UNUSED: &str = "kind = 'refund' AND id NOT IN (SELECT id FROM refunds)";
    let first_added = ledger.count(&format!("SELECT min(id) FROM movements WHERE {UNUSED}"));
    ledger.execute(&format!(
        "INSERT INTO refunds (id, order_id, source_type, source_id, method, payment_form_id, amount_minor, currency, status, created_at, created_by)
         SELECT id, 2001, 'order', 2001, 'manual', 2, 1, 'PLN', 'New', 0, 'sql' FROM movements WHERE {UNUSED}"
    ));
    let server = TestServer::start_with(ledger.config()).await;
    let reader = Rest {
        http: client(),
        base: server.base.clone(),
        key: TEST_READ_KEY.to_owned(),
    };
    let page =
        |number: u32| json!({"sourceType": "order", "resultsPage": number, "resultsLimit": 10});
    let ids = |body: &Value| -> Vec<i64> {
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|refund| {
                let id = refund["paymentId"].as_str().expect("paymentId is a string");
                id.parse::<i64>().expect("a numeric id")
            })
            .collect()
    };
    let near = reader.ok("GET", "retrieveRefundsList", page(0)).await;
    let total = near["resultsNumberAll"].as_i64().expect("total");
    assert!(total >= ADDED, "{near}");
    let before = total - ADDED; // the test shop's own New refunds, all older than ours
    // Page 504 starts at row 5 040: past the first 5 000 rows, so it is read as a scan.
    let far = reader.ok("GET", "retrieveRefundsList", page(504)).await;
    assert_eq!(far["resultsNumberAll"].as_i64(), Some(total));
    let expected: Vec<i64> = (5_040 - before..5_050 - before)
        .filter(|offset| *offset < ADDED)
        .map(|offset| first_added + offset)
        .collect();
    assert_eq!(ids(&far), expected, "{far}");
    let last = (total - 1) / 10;
    let end = reader
        .ok("GET", "retrieveRefundsList", page(last as u32))
        .await;
    assert_eq!(
        ids(&end).last(),
        Some(&(first_added + ADDED - 1)),
        "the newest refund closes the last page"
    );
    let beyond = reader
        .ok("GET", "retrieveRefundsList", page(last as u32 + 1))
        .await;
    assert_eq!(ids(&beyond), Vec::<i64>::new());
    server.stop().await;
}

on_both_backends!(bad_requests_get_json_errors_and_change_nothing);
async fn bad_requests_get_json_errors_and_change_nothing(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(ledger.config()).await;
    let http = client();
    let url = |operation: &str| format!("{}/api/admin/v6/refunds/{operation}", server.base);
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (http.post(url("addManualRefund")).body("{\"params\": {"), 422),
        (http.post(url("addManualRefund")).body("[1, 2]"), 422),
        (http.post(url("addManualRefund")).body(r#"{"params": {"sourceType": 5, "sourceId": 2001, "refundValue": "1.00", "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}}}"#), 422),
        (http.post(url("addManualRefund")).body(r#"{"params": {"sourceType": "order", "sourceId": true, "refundValue": "1.00", "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}}}"#), 422),
        (http.post(url("addManualRefund")).body(r#"{"params": {"sourceType": "order", "sourceId": 2001, "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}}}"#), 422),
        (http.post(url("addManualRefund")).body(r#"{"params": {"sourceType": "order", "sourceId": 2001, "refundValue": ["1"], "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}}}"#), 422),
        (http.post(url("addManualRefund")).body(vec![b'{'; 2 * 1024 * 1024]), 413),
        (http.post(url("noSuchOperation")).body("{}"), 404),
        (http.get(url("addManualRefund")), 405),
        (http.post(format!("{}/api/admin/v9/refunds/addManualRefund", server.base)).body("{}"), 404),
        (http.post(format!("{}/api/?gate=refunds/addManualRefund/1/json", server.base)).body("not json"), 422),
    ];
    for (index, (request, expected)) in cases.into_iter().enumerate() {
        let response = request
            .header("x-api-key", TEST_API_KEY)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value =
            serde_json::from_str(&response.text().await.expect("body")).expect("a JSON error body");
        assert_eq!(status, expected, "case {index}: {body}");
        assert_eq!(content_type, "application/json", "case {index}");
        assert_eq!(body["errors"]["faultCode"], 2, "case {index}: {body}");
        assert!(
            !body["errors"]["faultString"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "case {index}: {body}"
        );
    }
    server.stop().await;
    let refunds = ledger.count("SELECT count(*) FROM refunds");
    assert_eq!(refunds, 0, "no bad request wrote anything");
}
