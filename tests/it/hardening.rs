//! Faults found by probing the release binary from outside (issue 12): each test provokes one
//! against a real `serve` process and ends by proving that nothing a client was told is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    ServeProcess, TEST_API_KEY, TestDatabase, assert_nothing_lost, client, rest_request,
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
