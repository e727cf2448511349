//! The ledger proof of a payment: `audit prove` (and `audit head`) against a ledger the server
//! wrote, a saved proof checked offline, and tampering found both in the database and in a
//! saved document.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{
    Backend, TEST_API_KEY, TestLedger, TestServer, client, gateway, on_both_backends, rest_request,
    verify_once_chained,
};

/// PayU payment 11 (200.00 PLN) of order 2001 in the test shop.
const PAYMENT: i64 = 11;

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    operation: &str,
    params: Value,
) -> Value {
    crate::support::rest_ok(&server.base, method, operation, params).await
}

/// Two automatic refunds on `PAYMENT`, one confirmed and one cancelled, and a manual one on the
/// same order (not drawn from the payment, so not in its proof).
async fn refunds_on_the_payment(ledger: &TestLedger) -> (i64, i64) {
    let server = TestServer::start_with(ledger.config()).await;
    let add = |value: &str| json!({"sourceId": 2001, "paymentId": PAYMENT, "refundValue": value, "refundCurrency": "PLN"});
    let post = reqwest::Method::POST;
    let first = call(
        &server,
        post.clone(),
        "addAutomaticRefundForOrder",
        add("30.00"),
    )
    .await;
    let second = call(
        &server,
        post.clone(),
        "addAutomaticRefundForOrder",
        add("45.50"),
    )
    .await;
    let manual = json!({"sourceType": "order", "sourceId": 2001, "refundValue": "5.00",
        "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}});
    call(&server, post, "addManualRefund", manual).await;
    let first = first["result"]["refundId"].as_i64().expect("id");
    let second = second["result"]["refundId"].as_i64().expect("id");
    let at = |id: i64| json!({"sourceType": "order", "sourceId": 2001, "paymentId": id});
    call(&server, reqwest::Method::PUT, "confirmRefund", at(first)).await;
    call(&server, reqwest::Method::PUT, "cancelRefund", at(second)).await;
    verify_once_chained(ledger).await;
    server.stop().await;
    (first, second)
}

fn audit(ledger: &TestLedger, args: &[&str]) -> std::process::Output {
    gateway()
        .arg("audit")
        .args(args)
        .arg("--db")
        .arg(ledger.db_arg())
        .output()
        .expect("run audit")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

on_both_backends!(a_payments_proof_holds_offline_and_tampering_breaks_it);
async fn a_payments_proof_holds_offline_and_tampering_breaks_it(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let (confirmed, cancelled) = refunds_on_the_payment(&ledger).await;

    let head = audit(&ledger, &["head"]);
    assert!(head.status.success());
    let head = stdout(&head);
    let (head_seq, head_hash) = head.trim().split_once(' ').expect("seq and hash");
    assert_eq!(head_seq, "5", "three adds, a confirm and a cancel");
    assert_eq!(head_hash.len(), 64);

    let proved = audit(&ledger, &["prove", "--payment", "11", "--json"]);
    assert!(
        proved.status.success(),
        "{}",
        String::from_utf8_lossy(&proved.stderr)
    );
    let document: Value = serde_json::from_str(&stdout(&proved)).expect("the proof is JSON");
    assert_eq!(document["format"], "refunds-gateway/ledger-proof/1");
    assert_eq!(document["paid"], json!({"minor": 20000, "currency": "PLN"}));
    assert_eq!(document["head"]["hash"], head_hash);
    let refunds = document["refunds"].as_array().expect("refunds");
    let ids: Vec<i64> = refunds
        .iter()
        .map(|r| r["refundId"].as_i64().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [confirmed, cancelled],
        "only the refunds drawn from payment 11"
    );
    let steps = |index: usize| -> Vec<String> {
        refunds[index]["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|step| {
                step["entry"]["statusAfter"]
                    .as_str()
                    .expect("status")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(steps(0), ["New", "Processing"]);
    assert_eq!(steps(1), ["New", "Canceled"]);
    assert_eq!(document["verdict"]["holds"], true);
    assert_eq!(
        document["verdict"]["liveTotalMinor"], 3000,
        "the cancelled one is released"
    );

    // Saved and checked without the database.
    let dir = tempfile::tempdir().expect("temp dir");
    let saved = dir.path().join("proof.json");
    std::fs::write(&saved, stdout(&proved)).expect("save");
    let offline = |file: &Path| {
        gateway()
            .args([
                "audit",
                "prove",
                "--db",
                "/nonexistent/never-opened.db",
                "--file",
            ])
            .arg(file)
            .output()
            .expect("run")
    };
    assert!(offline(&saved).status.success());

    // A document whose history was edited no longer recomputes.
    let mut edited = document.clone();
    edited["refunds"][0]["history"][0]["entry"]["amountAfter"] = json!(1);
    let edited_file = dir.path().join("edited.json");
    std::fs::write(&edited_file, edited.to_string()).expect("save");
    let refused = offline(&edited_file);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not match its hash"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Nor does one that hides a live refund (the running total then disagrees).
    let mut hidden = document.clone();
    hidden["refunds"].as_array_mut().expect("refunds").remove(0);
    let hidden_file = dir.path().join("hidden.json");
    std::fs::write(&hidden_file, hidden.to_string()).expect("save");
    assert!(!offline(&hidden_file).status.success());

    // An anchor: the head published before a later change is still in the chain.
    let server = TestServer::start_with(ledger.config()).await;
    let more = json!({"sourceId": 2001, "paymentId": PAYMENT, "refundValue": "1.00", "refundCurrency": "PLN"});
    call(
        &server,
        reqwest::Method::POST,
        "addAutomaticRefundForOrder",
        more,
    )
    .await;
    verify_once_chained(&ledger).await;
    server.stop().await;
    let anchored = audit(
        &ledger,
        &["prove", "--payment", "11", "--json", "--anchor", head_seq],
    );
    assert!(anchored.status.success());
    let anchored: Value = serde_json::from_str(&stdout(&anchored)).expect("JSON");
    assert_eq!(anchored["anchor"]["hash"], head_hash, "the published head");
    assert_eq!(
        anchored["anchor"]["entries"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(anchored["verdict"]["anchorInChain"], true);
    let mut forged = anchored.clone();
    forged["anchor"]["hash"] = json!("0".repeat(64));
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).expect("save");
    assert!(
        !offline(&forged_file).status.success(),
        "a head not in the chain"
    );

    // A head published beyond today's (the chain lost entries): the verdict says so.
    let beyond = audit(
        &ledger,
        &["prove", "--payment", "11", "--json", "--anchor", "999"],
    );
    assert!(!beyond.status.success());
    let beyond: Value = serde_json::from_str(&stdout(&beyond)).expect("JSON");
    assert_eq!(beyond["verdict"]["anchorInChain"], false);
    assert!(
        beyond["verdict"]["problems"][0]
            .as_str()
            .is_some_and(|problem| problem.contains("beyond the head")),
        "{beyond}"
    );

    // Someone with the database edits an audit amount, past the trigger that refuses it: the
    // proof's verdict is false.
    ledger.execute(match backend {
        Backend::Sqlite => {
            "DROP TRIGGER audit_never_updated; UPDATE audit_log SET amount_after = 100 WHERE seq = 1;"
        }
        Backend::Postgres => {
            "ALTER TABLE audit_log DISABLE TRIGGER audit_append_only; UPDATE audit_log SET amount_after = 100 WHERE seq = 1;"
        }
    });
    let after = audit(&ledger, &["prove", "--payment", "11", "--json"]);
    assert!(!after.status.success());
    let after: Value = serde_json::from_str(&stdout(&after)).expect("still a JSON proof");
    assert_eq!(after["verdict"]["holds"], false);
    assert_eq!(after["verdict"]["hashesRecompute"], false);
}

on_both_backends!(a_proof_of_something_that_is_not_a_payment_says_so);
async fn a_proof_of_something_that_is_not_a_payment_says_so(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let output = audit(&ledger, &["prove", "--payment", "999999"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("999999 is not a payment"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

on_both_backends!(the_rest_face_answers_the_same_proof_to_a_reader);
async fn the_rest_face_answers_the_same_proof_to_a_reader(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    refunds_on_the_payment(&ledger).await;
    let cli = audit(&ledger, &["prove", "--payment", "11", "--json"]);
    let cli: Value = serde_json::from_str(&stdout(&cli)).expect("JSON");
    let server = TestServer::start_with(ledger.config()).await;
    let http = client();
    let get = |key: &str, query: Value| {
        rest_request(
            &http,
            &server.base,
            key,
            reqwest::Method::GET,
            "ledgerProof",
            &query,
        )
        .send()
    };
    let answer = get(crate::support::TEST_READ_KEY, json!({"paymentId": "11"}))
        .await
        .expect("send");
    assert_eq!(answer.status(), 200);
    let served: Value = answer.json().await.expect("JSON");
    assert_eq!(
        served, cli,
        "the REST face and the command line make the same proof"
    );

    let unknown = get(TEST_API_KEY, json!({"paymentId": 999999}))
        .await
        .expect("send");
    assert_eq!(unknown.status(), 207);
    let unknown: Value = unknown.json().await.expect("JSON");
    assert_eq!(unknown["errors"]["faultCode"], 4008);
    let missing = get(TEST_API_KEY, json!({})).await.expect("send");
    assert_eq!(missing.status(), 422);
    let anonymous = get("", json!({"paymentId": 11})).await.expect("send");
    assert_eq!(anonymous.status(), 401);
    let wrong_verb = http
        .post(format!("{}/api/admin/v6/refunds/ledgerProof", server.base))
        .header("x-api-key", TEST_API_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_verb.status(), 405);
    assert_eq!(wrong_verb.headers()["allow"], "GET");
    server.stop().await;
}

/// On PostgreSQL the sealer chains entries after commit: the proof shows them pending until
/// then, and holds before and after.
#[test]
fn a_payments_proof_holds_on_postgres_once_the_sealer_has_chained_its_steps() {
    let Some(cluster) = crate::postgresql::cluster() else {
        return;
    };
    let url = cluster.fresh_database();
    crate::postgresql::runtime().block_on(async {
        let database = refunds_gateway::store::Database::Postgres(url.clone());
        let server = TestServer::start_with(crate::support::test_config_on(database)).await;
        let add = json!({"sourceId": 2001, "paymentId": PAYMENT, "refundValue": "30.00", "refundCurrency": "PLN"});
        let added = call(&server, reqwest::Method::POST, "addAutomaticRefundForOrder", add).await;
        let id = added["result"]["refundId"].as_i64().expect("id");
        let at = json!({"sourceType": "order", "sourceId": 2001, "paymentId": id});
        call(&server, reqwest::Method::PUT, "cancelRefund", at).await;
        let http = client();
        let mut proof = Value::Null;
        for _ in 0..100 {
            proof = rest_request(&http, &server.base, TEST_API_KEY, reqwest::Method::GET, "ledgerProof", &json!({"paymentId": PAYMENT}))
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("JSON");
            assert_eq!(proof["verdict"]["holds"], true, "{proof}");
            if proof["refunds"][0]["pending"].as_array().is_some_and(Vec::is_empty) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let history = proof["refunds"][0]["history"].as_array().expect("history");
        let steps: Vec<&str> = history.iter().map(|step| step["entry"]["statusAfter"].as_str().expect("status")).collect();
        assert_eq!(steps, ["New", "Canceled"], "chained by the sealer: {proof}");
        assert_eq!(proof["verdict"]["liveTotalMinor"], 0);
        server.stop().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let saved = dir.path().join("proof.json");
        std::fs::write(&saved, proof.to_string()).expect("save");
        let offline = gateway()
            .args(["audit", "prove", "--file"])
            .arg(&saved)
            .output()
            .expect("run");
        assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    });
}
