//! The command line: `import` (one transaction, idempotent, all-or-nothing), `user add`, and
//! `serve --demo` as a newcomer runs it.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Running, client, fixtures_dir, gateway, get};

/// Every row of the shop's tables, for before/after comparisons.
fn dump(database: &Path) -> Vec<String> {
    let connection = rusqlite::Connection::open(database).expect("open");
    let mut rows = Vec::new();
    for table in [
        "payment_forms",
        "orders",
        "movements",
        "payments",
        "returns",
        "rmas",
        "refunds",
    ] {
        let mut statement = connection
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1"))
            .expect("select");
        let columns = statement.column_count();
        let table_rows = statement
            .query_map([], |row| {
                let values: Vec<String> = (0..columns)
                    .map(|index| format!("{:?}", row.get_ref(index).expect("value")))
                    .collect();
                Ok(format!("{table}: {}", values.join(", ")))
            })
            .expect("query");
        rows.extend(table_rows.map(|row| row.expect("row")));
    }
    rows
}

#[test]
fn importing_the_same_file_twice_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("shop.db");
    let shop = fixtures_dir().join("test-shop.json");
    let first = gateway()
        .arg("import")
        .arg("--db")
        .arg(&database)
        .arg(&shop)
        .output()
        .expect("run import");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("7 orders, 9 payments, 4 returns, 2 claims"),
        "{stdout}"
    );
    let after_first = dump(&database);
    let second = gateway()
        .arg("import")
        .arg("--db")
        .arg(&database)
        .arg(&shop)
        .output()
        .expect("run import");
    assert!(second.status.success());
    assert_eq!(dump(&database), after_first);
    assert!(
        after_first
            .iter()
            .any(|row| row.starts_with("payments: Integer(11), Integer(2001), Integer(20000)"))
    );
}

#[test]
fn an_invalid_entry_rejects_the_whole_file_and_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("shop.db");
    let shop = fixtures_dir().join("test-shop.json");
    assert!(
        gateway()
            .arg("import")
            .arg("--db")
            .arg(&database)
            .arg(&shop)
            .status()
            .expect("import")
            .success()
    );
    let before = dump(&database);
    let cases = [
        (
            r#"{"orders":[{"orderId":1,"currency":"PLN","payments":[]},
                {"orderId":2,"currency":"PLN","payments":[{"paymentId":5,"amount":"10.005","currency":"PLN","paymentFormId":1,"paidAt":"2026-11-20 10:00:00"}]}]}"#,
            "orders[1].payments[0].amount",
        ),
        (
            r#"{"orders":[{"orderId":1,"currency":"PLN","payments":[{"paymentId":5,"amount":"10","currency":"EUR","paymentFormId":1,"paidAt":"2026-11-20 10:00:00"}]}]}"#,
            "orders[0].payments[0].currency",
        ),
        (
            r#"{"orders":[{"orderId":-3,"currency":"PLN"}]}"#,
            "orders[0].orderId",
        ),
        (
            r#"{"orders":[{"orderId":3,"currency":"XXX"}]}"#,
            "orders[0].currency",
        ),
        (
            r#"{"orders":[{"orderId":1,"currency":"PLN"}],"returns":[{"returnId":9,"orderId":77,"value":"5","currency":"PLN"}]}"#,
            "returns[0]",
        ),
        (
            r#"{"orders":[{"orderId":1,"currency":"PLN","payments":[{"paymentId":5,"amount":"1","currency":"PLN","paymentFormId":1,"paidAt":"yesterday"}]}]}"#,
            "orders[0].payments[0].paidAt",
        ),
        (r#"{"orders": ["#, "not valid JSON"),
    ];
    for (index, (document, named)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{index}.json"));
        std::fs::write(&file, document).expect("write");
        let output = gateway()
            .arg("import")
            .arg("--db")
            .arg(&database)
            .arg(&file)
            .output()
            .expect("run import");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "case {index} was accepted");
        assert!(
            stderr.contains(named),
            "case {index}: expected the message to name {named}: {stderr}"
        );
        assert_eq!(dump(&database), before, "case {index} changed the database");
    }
}

#[test]
fn serve_demo_answers_the_wsdl_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("demo.db");
    let mut child = Running(
        gateway()
            .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--db"])
            .arg(&database)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve"),
    );
    let mut log = BufReader::new(child.0.stderr.take().expect("stderr"));
    let mut address = None;
    let mut lines = Vec::new();
    for _ in 0..20 {
        let mut line = String::new();
        if log.read_line(&mut line).expect("read log") == 0 {
            break;
        }
        lines.push(line.clone());
        if let Some(at) = line.find("address=") {
            address = line[at + "address=".len()..]
                .split_whitespace()
                .next()
                .map(str::to_owned);
            break;
        }
    }
    let address = address.unwrap_or_else(|| panic!("no listening address in the log: {lines:?}"));
    assert!(
        lines.iter().any(|line| line.contains("demo shop loaded")),
        "{lines:?}"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let wsdl = runtime
        .block_on(async { get(&client(), &format!("http://{address}/soap/refunds?wsdl")).await });
    assert_eq!(wsdl.status, 200);
    assert!(
        wsdl.body
            .contains(&format!("location=\"http://{address}/soap/refunds\""))
    );
    let pid = child.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.0.wait().expect("wait");
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
}

#[test]
fn user_add_creates_a_legacy_user_with_scopes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("users.db");
    let output = gateway()
        .args(["user", "add", "--db"])
        .arg(&database)
        .args(["reader", "--password", "pw", "--scope", "read"])
        .output()
        .expect("run user add");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let connection = rusqlite::Connection::open(&database).expect("open");
    let (hash, scopes): (String, String) = connection
        .query_row(
            "SELECT password_sha1, scopes FROM api_users WHERE login = 'reader'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("user row");
    assert_eq!(
        hash, "1a91d62f7ca67399625a4368a6ab5d4a3baa6073",
        "sha1(password) in lowercase hex"
    );
    assert_eq!(scopes, "read");
    let bad = gateway()
        .args(["user", "add", "--db"])
        .arg(&database)
        .args(["x", "--password", "pw", "--scope", "admin"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--scope 'admin'"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let saved: i64 = rusqlite::Connection::open(&database)
        .expect("open")
        .query_row(
            "SELECT count(*) FROM api_users WHERE login = 'x'",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(saved, 0, "a refused user is not saved");
}

/// `key list` writes its times in the shop's time zone (`--timezone`), like every other
/// command.
#[test]
fn key_list_writes_times_in_the_given_time_zone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("keys.db");
    let created = gateway()
        .args(["key", "create", "--db"])
        .arg(&database)
        .args(["--name", "zoned"])
        .output()
        .expect("key create");
    assert!(created.status.success());
    let created_at = |zone: &str| -> String {
        let listed = gateway()
            .args(["key", "list", "--timezone", zone, "--db"])
            .arg(&database)
            .output()
            .expect("key list");
        assert!(listed.status.success());
        let text = String::from_utf8(listed.stdout).expect("utf-8");
        let line = text
            .lines()
            .find(|line| line.starts_with("zoned"))
            .unwrap_or_else(|| panic!("no key line: {text}"))
            .to_owned();
        line.split_whitespace()
            .skip(2)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let parse = |text: &str| {
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|_| panic!("a local time: {text}"))
    };
    let utc = parse(&created_at("UTC"));
    let tokyo = parse(&created_at("Asia/Tokyo"));
    assert_eq!((tokyo - utc).num_hours(), 9, "{utc} / {tokyo}");
}
