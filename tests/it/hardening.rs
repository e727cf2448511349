//! Faults found by probing the release binary from outside (issue 12): each test provokes one
//! against a real `serve` process and ends by proving that nothing a client was told is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    Backend, ServeProcess, TEST_API_KEY, TestDatabase, TestLedger, assert_nothing_lost, client,
    on_both_backends, rest_request,
};

/// A shop with one large order, so that thousands of small manual refunds fit in it.
const BIG_SHOP: &str = r#"{"orders": [{"orderId": 9100, "currency": "PLN", "fulfilled": false,
    "payments": [{"paymentId": 9101, "amount": "1000000.00", "currency": "PLN",
    "paymentFormId": 2, "autoRefund": false, "paidAt": "2026-11-19 10:00:00"}]}]}"#;

/// Adds a 0.01 PLN manual refund on order 9100; its id if the gateway answered one.
async fn add_small_refund(http: &reqwest::Client, address: &str) -> Option<i64> {
    let params = json!({"sourceType": "order", "sourceId": 9100, "refundValue": "0.01",
        "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}});
    let response = rest_request(
        http,
        &format!("http://{address}"),
        TEST_API_KEY,
        reqwest::Method::POST,
        "addManualRefund",
        &params,
    )
    .timeout(Duration::from_secs(10))
    .send()
    .await
    .ok()?;
    if response.status() != 200 {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["result"]["refundId"].as_i64()
}

fn wal_of(database: &Path) -> std::path::PathBuf {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// Issue 12, item 1: `rm refunds.db-wal` under a running service. The service must notice at
/// its next commit, save what the unlinked WAL holds into the database file, stop with an
/// error, and never hand out an acknowledged id again after its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_wal_stops_the_service_without_losing_or_reissuing_ids() {
    let database = TestDatabase::with_shop(BIG_SHOP);
    let mut gateway = ServeProcess::start(&database.path, &[]);
    let http = client();
    let mut acknowledged = Vec::new();
    for _ in 0..150 {
        acknowledged.push(
            add_small_refund(&http, &gateway.address)
                .await
                .expect("refund added before the deletion"),
        );
    }
    std::fs::remove_file(wal_of(&database.path)).expect("delete the WAL");
    // Keep writing, as batch clients would, until the service stops answering (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after_deletion = 0;
    while Instant::now() < deadline && after_deletion < 300 {
        after_deletion += 1;
        match add_small_refund(&http, &gateway.address).await {
            Some(id) => acknowledged.push(id),
            None => break,
        }
    }
    let exited = gateway.wait_for_exit(Duration::from_secs(10));
    let error_logged = gateway.log_lines("write-ahead log (-wal) was deleted");
    drop(gateway);

    let restarted = ServeProcess::start(&database.path, &[]);
    let next = add_small_refund(&http, &restarted.address)
        .await
        .expect("a refund after the restart");
    restarted.stop();
    assert!(
        acknowledged.iter().all(|&id| id < next),
        "the id {next} given after the restart was already given before it"
    );
    acknowledged.push(next);
    assert_nothing_lost(&database.path, &acknowledged);

    let status = exited.expect("the service stopped by itself after its WAL was deleted");
    assert!(!status.success(), "and said so with its exit status");
    assert!(
        !error_logged.is_empty(),
        "the deletion was logged as an error"
    );
    assert!(
        after_deletion < 300,
        "the service stopped accepting writes after the deletion"
    );
}

/// Runs `refunds-gateway import FILE` on `database` with `document`; its success and stderr.
fn import(ledger: &TestLedger, document: &Value) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("shop.json");
    std::fs::write(&file, document.to_string()).expect("write shop");
    let output = crate::support::gateway()
        .args(["import", "--db"])
        .arg(ledger.db_arg())
        .arg(&file)
        .output()
        .expect("run import");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Adds a manual refund of `value` `currency` for a return or claim; the answer's JSON.
async fn add_claim_refund(
    http: &reqwest::Client,
    address: &str,
    source_type: &str,
    source_id: i64,
    value: &str,
    currency: &str,
) -> Value {
    let params = json!({"sourceType": source_type, "sourceId": source_id, "refundValue": value,
        "refundCurrency": currency, "refundDetails": {"paymentFormId": 1}});
    rest_request(
        http,
        &format!("http://{address}"),
        TEST_API_KEY,
        reqwest::Method::POST,
        "addManualRefund",
        &params,
    )
    .send()
    .await
    .expect("answered")
    .json()
    .await
    .expect("JSON")
}

on_both_backends!(
    a_refunded_return_or_claim_keeps_its_order_currency_and_value_on_reimport,
    multi_thread
);
/// Issue 12, item 3: once a return or claim has refunds, re-importing it onto another order or
/// currency, or below what is refunded, rejects the whole file and names the entry.
async fn a_refunded_return_or_claim_keeps_its_order_currency_and_value_on_reimport(
    backend: Backend,
) {
    let order = |id: i64, currency: &str, payment: i64, amount: &str| {
        json!({"orderId": id, "currency": currency, "fulfilled": false, "payments": [{
            "paymentId": payment, "amount": amount, "currency": currency, "paymentFormId": 2,
            "autoRefund": false, "paidAt": "2026-11-19 10:00:00"}]})
    };
    let shop = json!({
        "orders": [order(9002, "EUR", 9201, "100.00"), order(9003, "PLN", 9301, "500.00")],
        "returns": [{"returnId": 9601, "orderId": 9002, "value": "30.00", "currency": "EUR"}],
        "rmas": [{"rmaId": 9701, "orderId": 9002, "value": "20.00", "currency": "EUR"}],
    });
    let ledger = TestLedger::with_shop(backend, &shop.to_string());
    let gateway = ServeProcess::start(ledger.db_arg(), &[]);
    let http = client();
    let mut acknowledged = Vec::new();
    for (source_type, id, value) in [("return", 9601, "30.00"), ("rma", 9701, "20.00")] {
        let added = add_claim_refund(&http, &gateway.address, source_type, id, value, "EUR").await;
        acknowledged.push(added["result"]["refundId"].as_i64().expect("refund added"));
    }

    let claims = |returns: Value, rmas: Value| {
        json!({"orders": [order(9003, "PLN", 9301, "500.00")
            .as_object().cloned().map(|mut o| { o.insert("fulfilled".into(), json!(true)); o })],
            "returns": returns, "rmas": rmas})
    };
    let this_return = |order: i64, value: &str, currency: &str| json!([{"returnId": 9601, "orderId": order, "value": value, "currency": currency}]);
    let this_rma = |order: i64, value: &str, currency: &str| json!([{"rmaId": 9701, "orderId": order, "value": value, "currency": currency}]);
    let refused = [
        (
            claims(this_return(9003, "100.00", "PLN"), json!([])),
            "returns[0] (id 9601): it has refunds, so it stays on order 9002",
        ),
        (
            claims(json!([]), this_rma(9003, "100.00", "PLN")),
            "rmas[0] (id 9701): it has refunds, so it stays on order 9002",
        ),
        (
            claims(this_return(9002, "10.00", "EUR"), json!([])),
            "returns[0] (id 9601): value 10.00 EUR is below the 30.00 EUR already refunded",
        ),
    ];
    for (document, message) in refused {
        let (imported, stderr) = import(&ledger, &document);
        assert!(!imported, "refused: {document}");
        assert!(
            stderr.contains(message),
            "names the entry and why: {stderr}"
        );
    }
    assert_eq!(
        ledger.count(
            "SELECT count(*) FROM returns WHERE id = 9601 AND order_id = 9002 AND value_minor = 3000 AND currency = 'EUR'"
        ),
        1,
        "the return keeps its order, value and currency"
    );
    assert_eq!(
        ledger.count(
            "SELECT count(*) FROM rmas WHERE id = 9701 AND order_id = 9002 AND value_minor = 2000 AND currency = 'EUR'"
        ),
        1,
        "the claim keeps its order, value and currency"
    );
    assert_eq!(
        ledger.count("SELECT count(*) FROM orders WHERE id = 9003 AND fulfilled"),
        0,
        "the whole file was rejected"
    );
    // The schema refuses it too, whatever code path writes.
    let moved =
        ledger.try_execute("UPDATE returns SET order_id = 9003, currency = 'PLN' WHERE id = 9601");
    assert!(
        moved
            .as_ref()
            .is_err_and(|error| error.contains("keeps its order and currency")),
        "{moved:?}"
    );

    // Raising the value on the same order and currency still imports, and the rest can be
    // refunded in the return's own currency only.
    let (imported, stderr) = import(
        &ledger,
        &claims(this_return(9002, "40.00", "EUR"), json!([])),
    );
    assert!(
        imported,
        "a higher value on the same order imports: {stderr}"
    );
    let pln = add_claim_refund(&http, &gateway.address, "return", 9601, "10.00", "PLN").await;
    assert_eq!(pln["errors"]["faultCode"], 4004, "{pln}");
    let eur = add_claim_refund(&http, &gateway.address, "return", 9601, "10.00", "EUR").await;
    acknowledged.push(eur["result"]["refundId"].as_i64().expect("refund added"));
    gateway.stop();
    assert_nothing_lost(&ledger, &acknowledged);
}

on_both_backends!(
    a_legacy_login_cannot_take_an_api_keys_caller_login,
    multi_thread
);
/// Issue 12, item 5: a legacy login named like an API key's caller login (`key:rt`) must never
/// share that key's idempotency keys or audit name.
async fn a_legacy_login_cannot_take_an_api_keys_caller_login(backend: Backend) {
    let ledger = TestLedger::with_shop(backend, BIG_SHOP);
    let run = |args: &[&str]| {
        crate::support::gateway()
            .args(args)
            .arg("--db")
            .arg(ledger.db_arg())
            .output()
            .expect("run")
    };
    let refused = run(&["user", "add", "key:rt", "--password", "pw"]);
    assert!(!refused.status.success(), "user add 'key:rt' is refused");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("must not contain ':'"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let created = run(&["key", "create", "--name", "rt"]);
    assert!(created.status.success());
    let key = String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    // A login stored by a version that still took it (past today's schema rule).
    let lift_the_rule = match backend {
        Backend::Sqlite => "DROP TRIGGER IF EXISTS api_users_login_without_colon;",
        Backend::Postgres => "ALTER TABLE api_users DROP CONSTRAINT api_users_login_without_colon;",
    };
    ledger.execute(&format!(
        "{lift_the_rule}
         INSERT INTO api_users (login, password_sha1, scopes, created_at)
         VALUES ('key:rt', '{}', 'read,write,confirm', 0);",
        refunds_gateway::refunds::password_sha1_hex("pw")
    ));

    let gateway = ServeProcess::start(ledger.db_arg(), &[]);
    let http = client();
    let params = json!({"sourceType": "order", "sourceId": 9100, "refundValue": "0.01",
        "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}});
    let by_key: Value = rest_request(
        &http,
        &format!("http://{}", gateway.address),
        &key,
        reqwest::Method::POST,
        "addManualRefund",
        &params,
    )
    .header("idempotency-key", "shared-1")
    .send()
    .await
    .expect("answered")
    .json()
    .await
    .expect("JSON");
    let refund = by_key["result"]["refundId"].as_i64().expect("refund added");

    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Warsaw)
        .format("%Y%m%d")
        .to_string();
    let legacy_key = refunds_gateway::refunds::legacy_key(
        &today,
        &refunds_gateway::refunds::password_sha1_hex("pw"),
    );
    let by_login: Value = http
        .post(format!(
            "http://{}/api/?gate=refunds/addManualRefund/1/json",
            gateway.address
        ))
        .header("idempotency-key", "shared-1")
        .body(
            json!({"authenticate": {"userLogin": "key:rt", "authenticateKey": legacy_key},
                "params": params})
            .to_string(),
        )
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        by_login["errors"]["faultCode"], 1,
        "the login 'key:rt' is not let in, let alone given key rt's answer: {by_login}"
    );
    gateway.stop();
    assert_nothing_lost(&ledger, &[refund]);
}

on_both_backends!(
    an_idempotent_retry_matches_the_amount_by_value_not_spelling,
    multi_thread
);
/// Issue 12, item 6: a retry under the same idempotency key replays the first answer whatever
/// the spelling of its amount (`"1.00"`, `"1.0"`, `1`, `1e0`); another amount is refused.
async fn an_idempotent_retry_matches_the_amount_by_value_not_spelling(backend: Backend) {
    let ledger = TestLedger::with_shop(backend, BIG_SHOP);
    let gateway = ServeProcess::start(ledger.db_arg(), &[]);
    let http = client();
    let add = |value: Value| {
        let params = json!({"sourceType": "order", "sourceId": 9100, "refundValue": value,
            "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}});
        let request = rest_request(
            &http,
            &format!("http://{}", gateway.address),
            TEST_API_KEY,
            reqwest::Method::POST,
            "addManualRefund",
            &params,
        )
        .header("idempotency-key", "amount-spelling-1");
        async move {
            let response = request.send().await.expect("answered");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
    };
    let (status, first) = add(json!("1.00")).await;
    assert_eq!(status, 200, "{first}");
    let refund = serde_json::from_str::<Value>(&first).expect("JSON")["result"]["refundId"]
        .as_i64()
        .expect("refund added");
    // `1e0` goes out as the raw JSON number text, like the others.
    let number = |text: &str| serde_json::from_str::<Value>(text).expect("a JSON number");
    for value in [
        json!("1.0"),
        json!("1"),
        number("1"),
        number("1.000"),
        number("1e0"),
    ] {
        let (status, again) = add(value.clone()).await;
        assert_eq!(
            (status, &again),
            (200, &first),
            "{value} replays the first answer"
        );
    }
    let (status, other) = add(json!("1.01")).await;
    assert_eq!(
        status, 409,
        "another amount under the same key is refused: {other}"
    );

    gateway.stop();
    assert_nothing_lost(&ledger, &[refund]);
    assert_eq!(
        ledger.count("SELECT count(*) FROM refunds"),
        1,
        "the retries added nothing"
    );
}

/// A client whose connections leave from `address` (any of 127.0.0.0/8), so that a test can
/// speak as several client addresses.
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().expect("address"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// The legacy key of `password` for today in the shop's time zone (the process runs on the
/// system clock).
fn todays_legacy_key(password: &str) -> String {
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Warsaw)
        .format("%Y%m%d")
        .to_string();
    refunds_gateway::refunds::legacy_key(
        &today,
        &refunds_gateway::refunds::password_sha1_hex(password),
    )
}

/// A JSON gate getRefundStatus call as `login` with `key`; the HTTP status and the body.
async fn gate_status_call(
    http: &reqwest::Client,
    address: &str,
    login: &str,
    key: &str,
) -> (u16, Value) {
    let response = http
        .post(format!(
            "http://{address}/api/?gate=refunds/getRefundStatus/1/json"
        ))
        .body(
            json!({"authenticate": {"userLogin": login, "authenticateKey": key},
                "params": {"sourceType": "order", "sourceId": 9100, "paymentId": 1}})
            .to_string(),
        )
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

on_both_backends!(
    failed_authentications_are_throttled_per_login_and_per_address,
    multi_thread
);
/// Issue 12, item 4: failed authentications are throttled per login and per client address,
/// with a clear fault at once; other logins and addresses are served meanwhile.
async fn failed_authentications_are_throttled_per_login_and_per_address(backend: Backend) {
    let ledger = TestLedger::with_shop(backend, BIG_SHOP);
    let gateway = ServeProcess::start(ledger.db_arg(), &[]);
    let address = gateway.address.clone();
    let guesser = client_from("127.0.0.3");
    let wrong = "0".repeat(40);
    for attempt in 0..refunds_gateway::refunds::throttle::LOGIN_LIMIT {
        let (_, body) =
            gate_status_call(&guesser, &address, crate::support::TEST_LOGIN, &wrong).await;
        let message = body["errors"]["faultString"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("authentication failed"),
            "attempt {attempt}: {body}"
        );
    }
    let throttled = |body: &Value| {
        body["errors"]["faultCode"] == 1
            && body["errors"]["faultString"]
                .as_str()
                .is_some_and(|text| text.starts_with("too many failed authentications"))
    };
    let (_, body) = gate_status_call(&guesser, &address, crate::support::TEST_LOGIN, &wrong).await;
    assert!(throttled(&body), "the login is throttled: {body}");
    // Per login: even its right key, from another address, waits for the window to end.
    let (_, body) = gate_status_call(
        &client_from("127.0.0.4"),
        &address,
        crate::support::TEST_LOGIN,
        &todays_legacy_key(crate::support::TEST_PASSWORD),
    )
    .await;
    assert!(
        throttled(&body),
        "the login is throttled everywhere: {body}"
    );

    // Per address: wrong API keys from one address, whatever they are.
    let spray = client_from("127.0.0.5");
    let rest_with = |http: &reqwest::Client, key: &str| {
        rest_request(
            http,
            &format!("http://{address}"),
            key,
            reqwest::Method::GET,
            "getRefundStatus",
            &json!({"sourceType": "order", "sourceId": 9100, "paymentId": 1}),
        )
        .send()
    };
    for attempt in 0..refunds_gateway::refunds::throttle::ADDRESS_LIMIT {
        let status = rest_with(&spray, &format!("rgk_wrong_{attempt}"))
            .await
            .expect("answered")
            .status();
        assert_eq!(status, 401, "attempt {attempt}");
    }
    let refused = rest_with(&spray, TEST_API_KEY).await.expect("answered");
    assert_eq!(
        refused.status(),
        429,
        "the address is throttled, right key or not"
    );
    let body: Value = refused.json().await.expect("JSON");
    assert!(throttled(&body), "{body}");

    // Another address is served meanwhile.
    let refund = add_small_refund(&client_from("127.0.0.6"), &address)
        .await
        .expect("a well-behaved client is served");
    gateway.stop();
    assert_nothing_lost(&ledger, &[refund]);
}

/// Issue 12, item 4: a wrong key costs the same whether the login exists or not. Measured at
/// the service's door (over HTTP the difference drowns in the round trip), over thousands of
/// back-to-back pairs spread over logins below the throttle's limit; the median of the paired
/// differences must stay within a fifth of a call's median cost. No call is timed against a
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_costs_the_same_for_known_and_unknown_logins() {
    use refunds_gateway::refunds::{
        Channel, Credentials, LegacyCredentials, Origin, Policy, RefundError, RefundService, Scope,
    };
    const LOGINS: usize = 400;
    const ATTEMPTS: usize = 5;
    let database = TestDatabase::with_shop(BIG_SHOP);
    {
        let mut ledger = rusqlite::Connection::open(&database.path).expect("open ledger");
        let users = ledger.transaction().expect("transaction");
        for n in 0..LOGINS {
            users
                .execute(
                    "INSERT INTO api_users (login, password_sha1, scopes, created_at)
                     VALUES (?1, ?2, 'read', 0)",
                    rusqlite::params![
                        format!("known-{n}"),
                        refunds_gateway::refunds::password_sha1_hex(&format!("pw-{n}"))
                    ],
                )
                .expect("add user");
        }
        users.commit().expect("commit users");
    }
    let store = refunds_gateway::store::open(&refunds_gateway::store::Database::Sqlite(
        database.path.clone(),
    ))
    .expect("open store");
    let routing = refunds_gateway::operators::OperatorsConfig::default()
        .build()
        .expect("operators")
        .routing
        .clone();
    let service = RefundService::new(
        store.clone(),
        refunds_gateway::clock::Clock::System,
        chrono_tz::Europe::Warsaw,
        Policy::new(routing),
    );
    let wrong = "f".repeat(40);
    let mut costs = Vec::new();
    // Known minus unknown within each back-to-back pair: drift cancels out of these.
    let mut differences = Vec::new();
    for attempt in 0..ATTEMPTS {
        for n in 0..LOGINS {
            // Alternate which kind goes first, so that order favours neither.
            let pair = if (n + attempt) % 2 == 0 {
                [(true, format!("known-{n}")), (false, format!("ghost-{n}"))]
            } else {
                [(false, format!("ghost-{n}")), (true, format!("known-{n}"))]
            };
            let mut difference = 0.0;
            for (is_known, login) in pair {
                let credentials = Credentials::Legacy(LegacyCredentials {
                    login,
                    key: wrong.clone(),
                });
                let origin = Origin {
                    channel: Channel::Rest,
                    request_id: None,
                };
                let started = Instant::now();
                let outcome = service
                    .authenticate(Some(credentials), Scope::Read, origin)
                    .await;
                let took = started.elapsed().as_secs_f64() * 1e6;
                assert!(
                    matches!(outcome, Err(RefundError::Unauthenticated)),
                    "refused, below the throttle's limit"
                );
                costs.push(took);
                difference += if is_known { took } else { -took };
            }
            differences.push(difference);
        }
    }
    let median = |samples: &mut Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    };
    let (cost, difference) = (median(&mut costs), median(&mut differences));
    eprintln!(
        "a wrong legacy key: median {cost:.1} µs a call; known minus unknown login, median over {} pairs: {difference:.1} µs",
        differences.len()
    );
    store.close();
    assert_nothing_lost(&database.path, &[]);
    assert!(
        difference.abs() < cost / 5.0,
        "a wrong key for a known login costs {difference:.1} µs more than for an unknown one \
         (a call: {cost:.1} µs)"
    );
}

/// Raises this process's soft limit of open files to at least `wanted` (servers started from
/// here inherit it); panics, saying so, when the hard limit does not allow it.
fn raise_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit),
            0,
            "getrlimit"
        );
        if limit.rlim_cur >= wanted {
            return;
        }
        assert!(
            limit.rlim_max >= wanted,
            "this test needs {wanted} open files; the hard limit is {} (raise ulimit -n)",
            limit.rlim_max
        );
        limit.rlim_cur = wanted;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
            0,
            "cannot raise the open-files limit to {wanted}"
        );
    }
}

/// The resident set of process `pid`, in MiB, from `/proc/{pid}/status`.
fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// Issue 12, item 2: 2,000 connections from ten addresses each park an unfinished 1 MiB SOAP
/// body (declared, all but its end sent, as far as the server takes it). The server's resident memory stays under
/// 200 MB, and well-formed calls from another client address are answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_unfinished_bodies_do_not_pin_memory_and_others_are_served() {
    use std::io::Write as _;
    const PARKED: usize = 2_000;
    const ADDRESSES: usize = 10;
    const BODY: usize = 1024 * 1024;
    raise_open_files((PARKED * 2 + 1_024) as u64);
    let database = TestDatabase::with_shop(BIG_SHOP);
    let gateway = ServeProcess::start(&database.path, &[]);
    let pid = gateway.process.0.id();
    let address = gateway.address.clone();
    let resident_at_start = resident_mib(pid);

    // Spread over ten client addresses, each under the cap of unauthenticated connections, so
    // that only the body budget stands between them and the server's memory.
    let target: std::net::SocketAddr = address.parse().expect("address");
    let mut streams = Vec::with_capacity(PARKED);
    for n in 0..PARKED {
        let local: std::net::IpAddr = format!("127.0.3.{}", 1 + n % ADDRESSES)
            .parse()
            .expect("address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::new(local, 0))
            .expect("bind a loopback address");
        let stream = socket.connect(target).await.expect("connect");
        streams.push(stream.into_std().expect("std stream"));
    }
    let parked = tokio::task::spawn_blocking(move || {
        let head = format!(
            "POST /soap/refunds HTTP/1.1\r\nHost: {target}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {BODY}\r\n\r\n"
        );
        let filler = vec![b' '; BODY - 1];
        let mut connections = Vec::with_capacity(PARKED);
        for mut stream in streams {
            stream.set_nonblocking(false).expect("blocking");
            stream.write_all(head.as_bytes()).expect("head");
            stream.set_nonblocking(true).expect("non-blocking");
            connections.push((stream, 0usize));
        }
        // Send all but the last byte, as far as each connection takes it (bounded rounds).
        for _ in 0..20 {
            let mut progressed = false;
            for (stream, sent) in connections.iter_mut() {
                while *sent < filler.len() {
                    match stream.write(&filler[*sent..]) {
                        Ok(0) | Err(_) => break,
                        Ok(written) => {
                            *sent += written;
                            progressed = true;
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let sent: usize = connections.iter().map(|(_, sent)| sent).sum();
        (connections, sent)
    })
    .await
    .expect("parking connections");
    let (connections, sent) = parked;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resident_parked = resident_mib(pid);

    // Meanwhile, another client address is served: REST writes and SOAP reads, both with an
    // API key header. (Legacy callers, whose credentials are in the body, share the anonymous
    // part of the budget with the parked bodies.)
    let other = client_from("127.0.0.2");
    let mut acknowledged = Vec::new();
    for _ in 0..10 {
        acknowledged.push(
            add_small_refund(&other, &address)
                .await
                .expect("a REST write from another address is answered"),
        );
    }
    for _ in 0..5 {
        let answer = other
            .post(format!("http://{address}/soap/refunds"))
            .headers(reqwest::header::HeaderMap::from_iter(
                crate::support::soap11_headers("getRefundStatus")
                    .into_iter()
                    .map(|(name, value)| {
                        (
                            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                                .expect("name"),
                            value.parse().expect("value"),
                        )
                    }),
            ))
            .body(crate::support::soap11(
                "getRefundStatus",
                &format!(
                    "<r:sourceType>order</r:sourceType><r:sourceId>9100</r:sourceId><r:paymentId>{}</r:paymentId>",
                    acknowledged[0]
                ),
            ))
            // Known from its header, so it never waits behind the anonymous bodies.
            .header("x-api-key", TEST_API_KEY)
            .send()
            .await
            .expect("a SOAP call from another address is answered");
        assert_eq!(answer.status(), 200);
    }
    let resident_peak = resident_parked.max(resident_mib(pid));
    eprintln!(
        "{PARKED} parked connections, {} MiB of unfinished bodies sent: server resident {resident_at_start:.0} MiB at start, {resident_peak:.0} MiB while parked",
        sent / (1024 * 1024)
    );
    drop(connections);
    gateway.stop();
    assert_nothing_lost(&database.path, &acknowledged);
    assert!(
        resident_peak < 200.0,
        "the server's resident memory reached {resident_peak:.0} MiB"
    );
}

/// Issue 12, item 2: a REST body is read only for a caller its headers prove: without a valid
/// API key the call is answered 401 from its headers, before a byte of its body is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_body_without_a_valid_key_is_not_waited_for() {
    use std::io::{Read as _, Write as _};
    let database = TestDatabase::with_shop(BIG_SHOP);
    let gateway = ServeProcess::start(&database.path, &[]);
    let address = gateway.address.clone();
    let answers = tokio::task::spawn_blocking(move || {
        ["", "X-API-KEY: rgk_not_a_key\r\n"].map(|key| {
            let mut stream = std::net::TcpStream::connect(&address).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            write!(
                stream,
                "POST /api/admin/v6/refunds/addManualRefund HTTP/1.1\r\nHost: {address}\r\n{key}Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
            )
            .expect("head");
            let mut answer = [0u8; 12];
            stream.read_exact(&mut answer).expect("an answer before the body");
            String::from_utf8_lossy(&answer).into_owned()
        })
    })
    .await
    .expect("raw exchanges");
    for answer in answers {
        assert_eq!(answer, "HTTP/1.1 401");
    }
    let refund = add_small_refund(&client(), &gateway.address)
        .await
        .expect("a call with a valid key is served");
    gateway.stop();
    assert_nothing_lost(&database.path, &[refund]);
}

/// Issue 12, item 7: a memory-mapped file failing under the process (here the `-shm`,
/// truncated; `chattr +i` does the same) kills it with SIGBUS. It must say so in its log, and a
/// restart must recover with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigbus_from_the_shm_is_logged_and_a_restart_recovers() {
    use std::os::unix::process::ExitStatusExt as _;
    let database = TestDatabase::with_shop(BIG_SHOP);
    let mut gateway = ServeProcess::start(&database.path, &[]);
    let http = client();
    let mut acknowledged = Vec::new();
    for _ in 0..20 {
        acknowledged.push(
            add_small_refund(&http, &gateway.address)
                .await
                .expect("refund added"),
        );
    }
    let mut shm = database.path.as_os_str().to_owned();
    shm.push("-shm");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shm)
        .expect("open the -shm")
        .set_len(0)
        .expect("truncate the -shm");
    // The next ledger access touches the mapping (bounded attempts).
    for _ in 0..20 {
        match add_small_refund(&http, &gateway.address).await {
            Some(id) => acknowledged.push(id),
            None => break,
        }
    }
    let status = gateway
        .wait_for_exit(Duration::from_secs(10))
        .expect("the process died of the truncated -shm");
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reported = gateway.log_lines("fatal signal SIGBUS");
    assert_eq!(
        reported.len(),
        1,
        "the cause is logged once: {:?}",
        gateway.log.lock().expect("log")
    );
    drop(gateway);

    let restarted = ServeProcess::start(&database.path, &[]);
    acknowledged.push(
        add_small_refund(&http, &restarted.address)
            .await
            .expect("the restarted service takes refunds"),
    );
    restarted.stop();
    assert_nothing_lost(&database.path, &acknowledged);
}

/// Issue 12, smaller: the fault for too many namespace declarations is in our words; the
/// parser's advice ("raise the limit with …") goes to the log only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_namespaces_get_our_words_and_the_log_gets_the_parsers() {
    let database = TestDatabase::with_shop(BIG_SHOP);
    let gateway = ServeProcess::start(&database.path, &[]);
    let declarations: String = (0..300)
        .map(|n| format!(" xmlns:n{n}=\"urn:example:{n}\""))
        .collect();
    let envelope = format!(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body{declarations}><r:getRefundStatus xmlns:r="urn:refunds-gateway:refunds"/></soap:Body></soap:Envelope>"#
    );
    let answer = client()
        .post(format!("http://{}/soap/refunds", gateway.address))
        .header("content-type", "text/xml; charset=utf-8")
        .body(envelope)
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 500, "a SOAP 1.1 Client fault");
    let fault = answer.text().await.expect("body");
    assert!(
        fault.contains("too many namespace declarations: at most 256 may be in scope"),
        "{fault}"
    );
    assert!(!fault.contains("set_max_namespace_bindings"), "{fault}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        gateway.log_lines("set_max_namespace_bindings").len(),
        1,
        "the parser's text is logged"
    );
    gateway.stop();
    assert_nothing_lost(&database.path, &[]);
}

on_both_backends!(an_idempotency_ttl_of_zero_replays_nothing, multi_thread);
/// Issue 12, smaller: `--idempotency-ttl-hours 0` keeps no key, even before the next purge: a
/// second call under the same key is a new request, not a replay.
async fn an_idempotency_ttl_of_zero_replays_nothing(backend: Backend) {
    let ledger = TestLedger::with_shop(backend, BIG_SHOP);
    let gateway = ServeProcess::start(ledger.db_arg(), &["--idempotency-ttl-hours", "0"]);
    let http = client();
    let mut acknowledged = Vec::new();
    for _ in 0..2 {
        let params = json!({"sourceType": "order", "sourceId": 9100, "refundValue": "0.01",
            "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}});
        let response = rest_request(
            &http,
            &format!("http://{}", gateway.address),
            TEST_API_KEY,
            reqwest::Method::POST,
            "addManualRefund",
            &params,
        )
        .header("idempotency-key", "kept-for-no-time")
        .send()
        .await
        .expect("answered");
        assert!(
            response.headers().get("idempotency-replayed").is_none(),
            "not a replay"
        );
        let body: Value = response.json().await.expect("JSON");
        acknowledged.push(body["result"]["refundId"].as_i64().expect("refund added"));
    }
    gateway.stop();
    assert_ne!(acknowledged[0], acknowledged[1], "two refunds");
    assert_nothing_lost(&ledger, &acknowledged);
}

/// Issue 12, smaller: `serve` opens and migrates its database before it says it is listening,
/// so a database it cannot open stops the start with the cause and no such claim.
#[test]
fn serve_opens_its_database_before_it_says_it_listens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("missing-folder").join("refunds.db");
    let output = crate::support::gateway()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&database)
        .env("RUST_LOG", "info")
        .env("REFUNDS_LOG_FORMAT", "text")
        .output()
        .expect("run serve");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("opening database"),
        "the cause is named: {log}"
    );
    assert!(!log.contains("listening"), "no claim to listen: {log}");
    // No ledger, so no refunds to look for: nothing was half-created either.
    assert!(!database.exists());
}

/// Issue 12, smaller: `/metrics` (refund counts, outbox depth) is off without a token, and with
/// one answers only to `Authorization: Bearer {token}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_only_with_the_token() {
    let database = TestDatabase::with_shop(BIG_SHOP);
    let http = client();
    let gateway = ServeProcess::start(&database.path, &[]);
    let refund = add_small_refund(&http, &gateway.address)
        .await
        .expect("refund added");
    let scrape = |address: &str, token: Option<&str>| {
        let mut request = http.get(format!("http://{address}/metrics"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        async move {
            let response = request.send().await.expect("answered");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
    };
    let (status, body) = scrape(&gateway.address, None).await;
    assert_eq!(status, 404, "off without a token");
    assert!(!body.contains("refunds_gateway_refunds"), "{body}");
    gateway.stop();

    let token = "a-scrape-token-for-this-test";
    let gateway = ServeProcess::start(&database.path, &["--metrics-token", token]);
    for wrong in [None, Some("not-the-token")] {
        let (status, body) = scrape(&gateway.address, wrong).await;
        assert_eq!(status, 401, "{wrong:?}");
        assert!(!body.contains("refunds_gateway_refunds"), "{body}");
    }
    let (status, body) = scrape(&gateway.address, Some(token)).await;
    assert_eq!(status, 200);
    assert!(
        body.lines()
            .any(|line| line == r#"refunds_gateway_refunds{status="New"} 1"#),
        "{body}"
    );
    gateway.stop();
    assert_nothing_lost(&database.path, &[refund]);
}

/// Issue 12, item 1, with no client write after the deletion: the writer still notices (at the
/// outbox worker's next claim, or its own idle check a second later) and stops the service
/// with an error, keeping what was answered. (The idle check alone is proved in-process below,
/// without an outbox.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_deleted_while_idle_stops_the_service_too() {
    let database = TestDatabase::with_shop(BIG_SHOP);
    let mut gateway = ServeProcess::start(&database.path, &[]);
    let http = client();
    let mut acknowledged = Vec::new();
    for _ in 0..30 {
        acknowledged.push(
            add_small_refund(&http, &gateway.address)
                .await
                .expect("refund added"),
        );
    }
    std::fs::remove_file(wal_of(&database.path)).expect("delete the WAL");
    let status = gateway
        .wait_for_exit(Duration::from_secs(10))
        .expect("the service stopped by itself");
    assert!(!status.success(), "{status:?}");
    drop(gateway);
    let restarted = ServeProcess::start(&database.path, &[]);
    let next = add_small_refund(&http, &restarted.address)
        .await
        .expect("a refund after the restart");
    restarted.stop();
    assert!(acknowledged.iter().all(|&id| id < next), "{next} is new");
    acknowledged.push(next);
    assert_nothing_lost(&database.path, &acknowledged);
}

/// Issue 12, item 1: once the writer has found its WAL gone, the service is not ready and
/// refuses writes (at the service's door: the process leaves soon after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_wal_is_deleted_the_service_is_not_ready_and_refuses_writes() {
    use refunds_gateway::refunds::{Policy, RefundService};
    let database = TestDatabase::with_shop(BIG_SHOP);
    let store = refunds_gateway::store::open(&refunds_gateway::store::Database::Sqlite(
        database.path.clone(),
    ))
    .expect("open store");
    let routing = refunds_gateway::operators::OperatorsConfig::default()
        .build()
        .expect("operators")
        .routing
        .clone();
    let service = RefundService::new(
        store.clone(),
        refunds_gateway::clock::Clock::System,
        chrono_tz::Europe::Warsaw,
        Policy::new(routing),
    );
    assert!(service.ready().await.is_ok());
    std::fs::remove_file(wal_of(&database.path)).expect("delete the WAL");
    tokio::time::timeout(Duration::from_secs(5), store.stopped_for_good())
        .await
        .expect("the writer notices within its idle check");
    assert!(service.ready().await.is_err(), "not ready");
    let refused = store.write(|_ledger| Ok::<_, anyhow::Error>(())).await;
    assert!(refused.is_err(), "writes are refused");
    store.close();
    assert_nothing_lost(&database.path, &[]);
}

/// Issue 12, item 2: one client address may hold at most 256 connections on which nobody has
/// authenticated; more are closed as they come, while other addresses are served, and the
/// address is served again once it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_capped_per_address() {
    const CAP: usize = 256;
    const OPENED: usize = 300;
    raise_open_files(4_096);
    let database = TestDatabase::with_shop(BIG_SHOP);
    let gateway = ServeProcess::start(&database.path, &[]);
    let address = gateway.address.clone();
    let target: std::net::SocketAddr = address.parse().expect("address");
    let local: std::net::IpAddr = "127.0.0.7".parse().expect("address");
    let mut idle = Vec::with_capacity(OPENED);
    for _ in 0..OPENED {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::new(local, 0))
            .expect("bind 127.0.0.7");
        idle.push(socket.connect(target).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = idle
        .iter()
        .filter(|stream| {
            !matches!(stream.try_read(&mut [0u8; 1]), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(
        closed,
        OPENED - CAP,
        "connections past the cap are closed at once"
    );
    assert!(
        add_small_refund(&client_from("127.0.0.7"), &address)
            .await
            .is_none(),
        "the capped address gets no new connection"
    );
    let mut acknowledged = vec![
        add_small_refund(&client_from("127.0.0.8"), &address)
            .await
            .expect("another address is served"),
    ];
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    acknowledged.push(
        add_small_refund(&client_from("127.0.0.7"), &address)
            .await
            .expect("served again once it let go"),
    );
    gateway.stop();
    assert_nothing_lost(&database.path, &acknowledged);
}
