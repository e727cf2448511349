//! The admin panel in a real browser: `tests/browser/panel.mjs` (playwright-core driving the
//! system Chromium) against the real server over a real SQLite file. The flow, axe-core on
//! every page, keyboard reachability, a cross-origin form and a signed-out cookie are checked
//! there; here the server is started and seeded, and afterwards the ledger and the CSP report
//! endpoint are read.
//!
//! Needs `/usr/bin/chromium`, node and `tests/browser/node_modules` (`.ci/install-browser`
//! installs them). Without them the test says it skips, except under `CI=true`, where it fails.
//! `UPDATE_SCREENSHOTS=1 cargo test --test it admin_browser` rewrites `docs/admin-*.png`.

use std::path::{Path, PathBuf};
use std::process::Command;

use refunds_gateway::refunds::types::Scopes;
use serde_json::json;

use crate::admin::add_panel_user;
use crate::support::{TEST_API_KEY, TestDatabase, TestServer, rest_request};

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What is missing to run the browser, if anything.
fn missing() -> Option<String> {
    if !chromium().exists() {
        return Some(format!(
            "{} (Debian package chromium)",
            chromium().display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node".to_owned());
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some("tests/browser/node_modules (npm ci in tests/browser)".to_owned());
    }
    None
}

async fn add_refund(
    http: &reqwest::Client,
    base: &str,
    operation: &str,
    params: serde_json::Value,
) -> i64 {
    let response = rest_request(
        http,
        base,
        TEST_API_KEY,
        reqwest::Method::POST,
        operation,
        &params,
    )
    .send()
    .await
    .expect("sent");
    let body: serde_json::Value = response.json().await.expect("json");
    body["result"]["refundId"]
        .as_i64()
        .or_else(|| body["result"]["paymentId"].as_i64())
        .or_else(|| body["result"].as_i64())
        .unwrap_or_else(|| panic!("no refund id in {body}"))
}

fn status_of(database: &Path, refund: i64) -> String {
    rusqlite::Connection::open(database)
        .expect("open")
        .query_row(
            "SELECT status FROM refunds WHERE id = ?1",
            [refund],
            |row| row.get(0),
        )
        .expect("refund")
}

#[tokio::test]
async fn the_panel_works_in_a_real_browser() {
    if let Some(missing) = missing() {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("the browser test needs {missing}; run .ci/install-browser");
        }
        eprintln!(
            "skipping the browser test: {missing} is missing (.ci/install-browser installs it)"
        );
        return;
    }
    let database = TestDatabase::with_test_shop();
    add_panel_user(&database.path, "clerk", "clerk-pw", Scopes::ALL);
    let server = TestServer::start(&database.path).await;
    let http = reqwest::Client::new();
    let automatic = |value: &str| json!({"sourceId": 2001, "paymentId": 11, "refundValue": value, "refundCurrency": "PLN"});
    let pending = add_refund(
        &http,
        &server.base,
        "addAutomaticRefundForOrder",
        automatic("10.00"),
    )
    .await;
    let spare = add_refund(
        &http,
        &server.base,
        "addAutomaticRefundForOrder",
        automatic("11.00"),
    )
    .await;
    add_refund(
        &http,
        &server.base,
        "addManualRefund",
        json!({"sourceType": "rma", "sourceId": 801, "refundValue": "5.00", "refundCurrency": "PLN",
               "refundDetails": {"paymentFormId": 5}}),
    )
    .await;

    let mut command = Command::new("node");
    command
        .arg(browser_dir().join("panel.mjs"))
        .env("PANEL_URL", &server.base)
        .env("PANEL_LOGIN", "clerk")
        .env("PANEL_PASSWORD", "clerk-pw")
        .env("PENDING_REFUND", pending.to_string())
        .env("SPARE_REFUND", spare.to_string())
        .env("CHROMIUM", chromium());
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        command.env(
            "SCREENSHOT_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"),
        );
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser flow failed:\n{stdout}\n{stderr}"
    );

    assert_eq!(status_of(&database.path, pending), "Canceled");
    assert_eq!(
        status_of(&database.path, spare),
        "New",
        "the cross-origin form changed nothing"
    );
    let reports = http
        .get(format!("{}/admin/csp-report", server.base))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    assert_eq!(
        reports.trim(),
        "0",
        "CSP violations were reported during the run"
    );
    server.stop().await;
}
