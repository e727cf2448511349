//! The PostgreSQL adapter against a real PostgreSQL: one throwaway cluster per test run, a
//! migrated template database cloned per test; the lifecycle over HTTP, several `serve`
//! processes on one database (over-refund, idempotency, confirm racing cancel), migrations, and
//! every statement of the adapter prepared against the migrated schema.
//!
//! Without PostgreSQL's binaries (`initdb`, `pg_ctl` under /usr/lib/postgresql/*/bin, or the
//! folder `PG_BIN_DIR` names) these tests say so and pass, except under `CI=true`, where they
//! fail (`.ci/install-postgres` installs them).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use refunds_gateway::store::{self, Database};

use crate::support::{
    Running, TEST_API_KEY, TestServer, assert_ledger_consistent, client, element_text,
    fixtures_dir, gateway, load_shop, post, soap11, soap11_headers, test_config_on,
};

/// The cluster of this test run, started by the first test that asks for it and stopped when
/// the test binary exits.
pub struct Cluster {
    port: u16,
}

/// What stopping the cluster at exit needs: `pg_ctl`, the data folder, whether to run it as
/// the `postgres` user, and the folder to remove afterwards.
struct StopAtExit {
    pg_ctl: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    dir: PathBuf,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
static STOP_AT_EXIT: Mutex<Option<StopAtExit>> = Mutex::new(None);
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(1);

const TEMPLATE: &str = "refunds_template";

/// The cluster, or `None` (after saying so) when PostgreSQL is not installed here.
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER
        .get_or_init(|| match bin_dir() {
            Some(bin) => Some(Cluster::start(&bin)),
            None if std::env::var("CI").as_deref() == Ok("true") => panic!(
                "CI=true but PostgreSQL's initdb and pg_ctl were not found \
                 (run .ci/install-postgres, or set PG_BIN_DIR)"
            ),
            None => {
                eprintln!(
                    "PostgreSQL's initdb/pg_ctl not found (/usr/lib/postgresql/*/bin, PG_BIN_DIR): \
                     skipping the PostgreSQL tests"
                );
                None
            }
        })
        .as_ref()
}

/// The newest installed PostgreSQL's binaries.
fn bin_dir() -> Option<PathBuf> {
    let has_tools = |bin: &Path| bin.join("initdb").exists() && bin.join("pg_ctl").exists();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Some(PathBuf::from(dir)).filter(|bin| has_tools(bin));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// `program` run as the `postgres` user when we are root (initdb refuses root).
fn as_cluster_owner(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run_checked(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn stop_cluster_at_exit() {
    stop_cluster();
}

/// `pg_ctl -w stop` waits until the server has removed its pid file: PID 1 may reap the
/// postmaster late here, so a signal's delivery proves nothing.
fn stop_cluster() {
    let Some(stop) = STOP_AT_EXIT.lock().ok().and_then(|mut stop| stop.take()) else {
        return;
    };
    let mut command = as_cluster_owner(&stop.pg_ctl, stop.as_postgres);
    command
        .arg("-D")
        .arg(&stop.data)
        .args(["-w", "-m", "fast", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = command.status();
    let _ = std::fs::remove_dir_all(&stop.dir);
}

/// The watchdog's end of a pipe that only this process holds open.
static WATCHDOG: Mutex<Option<std::process::ChildStdin>> = Mutex::new(None);

/// A killed test binary runs no exit handler, so a watchdog in its own session waits for the
/// end of a pipe from this process (closed however the process ends), then stops the cluster
/// and removes its folder. After a normal exit it finds both gone.
fn watch_for_exit(bin: &Path, dir: &Path, as_postgres: bool) {
    let pg_ctl = bin.join("pg_ctl");
    let owner = if as_postgres {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "cat > /dev/null; {owner}'{}' -D '{}' -w -m fast stop; rm -rf '{}'",
        pg_ctl.display(),
        dir.join("data").display(),
        dir.display()
    );
    let watchdog = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut watchdog) = watchdog
        && let Ok(mut pipe) = WATCHDOG.lock()
    {
        *pipe = watchdog.stdin.take();
    }
}

impl Cluster {
    fn start(bin: &Path) -> Cluster {
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("refunds-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(&dir);
            run_checked(chown, "chown the cluster folder to postgres");
        }
        let data = dir.join("data");
        let mut initdb = as_cluster_owner(&bin.join("initdb"), as_postgres);
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run_checked(initdb, "initdb");

        let port = free_port();
        let log = dir.join("server.log");
        let mut pg_ctl = as_cluster_owner(&bin.join("pg_ctl"), as_postgres);
        pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
                dir.display()
            ))
            .arg("start");
        let started = pg_ctl.output().expect("pg_ctl start");
        if !started.status.success() {
            panic!(
                "pg_ctl start: {}\n{}",
                String::from_utf8_lossy(&started.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        watch_for_exit(bin, &dir, as_postgres);
        if let Ok(mut stop) = STOP_AT_EXIT.lock() {
            *stop = Some(StopAtExit {
                pg_ctl: bin.join("pg_ctl"),
                data,
                as_postgres,
                dir,
            });
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: registers a plain function to run at exit; it touches only its own statics.
        unsafe {
            libc::atexit(stop_cluster_at_exit);
        }

        let cluster = Cluster { port };
        cluster.create_database(TEMPLATE, None);
        let shop =
            std::fs::read_to_string(fixtures_dir().join("test-shop.json")).expect("test shop");
        load_shop(&Database::Postgres(cluster.url(TEMPLATE)), &shop);
        cluster
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `sql` on the cluster's administration database.
    fn admin(&self, sql: &str) -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
        client.batch_execute(sql)
    }

    fn create_database(&self, name: &str, template: Option<&str>) {
        let sql = match template {
            Some(template) => format!("CREATE DATABASE {name} TEMPLATE {template}"),
            None => format!("CREATE DATABASE {name}"),
        };
        // A session on the template that just ended may linger for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.admin(&sql) {
                Ok(()) => return,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => panic!("{sql}: {error}"),
            }
        }
    }

    /// A new database holding the migrated schema, the test shop, the test user and keys.
    pub fn fresh_database(&self) -> String {
        self.copy_of(TEMPLATE)
    }

    /// A new database copied from `source` (no session may be open on it).
    pub fn copy_of(&self, source: &str) -> String {
        let name = format!("test_{}", NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
        self.create_database(&name, Some(source));
        self.url(&name)
    }

    /// Drops the database at `url` (every test database is some 8 MB of PostgreSQL's own
    /// catalogs; the fixture runs make hundreds).
    pub fn drop_database(&self, url: &str) {
        let name = url.rsplit('/').next().expect("database name");
        if let Err(error) = self.admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")) {
            eprintln!("dropping {name}: {error}");
        }
    }

    /// A new database without any schema.
    pub fn empty_database(&self) -> String {
        let name = format!("empty_{}", NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
        self.create_database(&name, None);
        self.url(&name)
    }
}

/// A client for checks from a test (blocking: call it outside async code).
fn sql(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect to the test database")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs a CLI command against `url`; returns its status, stdout and stderr.
fn cli(args: &[&str], url: &str) -> (bool, String, String) {
    let output = gateway()
        .args(args)
        .args(["--db", url])
        .output()
        .expect("run the gateway's command line");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Calls `operation` over SOAP 1.1 and returns the body; asserts HTTP 200. The API key in the
/// header authenticates (the `serve` processes run on today's clock, which the legacy key of
/// the envelope does not match).
async fn soap(http: &reqwest::Client, base: &str, operation: &str, params: &str) -> String {
    let mut headers = soap11_headers(operation);
    headers.push(("x-api-key".to_owned(), TEST_API_KEY.to_owned()));
    let answer = post(
        http,
        &format!("{base}/soap/refunds"),
        &headers,
        soap11(operation, params),
    )
    .await;
    assert_eq!(answer.status, 200, "{operation}: {}", answer.body);
    answer.body
}

fn fault_code(body: &str) -> &str {
    element_text(body, "faultCode").unwrap_or("(none)")
}

#[test]
fn lifecycle_over_http_with_the_audit_chained_by_the_sealer() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    runtime().block_on(async {
        let server = TestServer::start_with(test_config_on(Database::Postgres(url.clone()))).await;
        let http = client();
        let base = server.base.clone();

        let added = soap(&http, &base, "addAutomaticRefundForOrder", "<r:sourceId>2001</r:sourceId><r:paymentId>11</r:paymentId><r:refundValue>40.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>").await;
        assert_eq!(fault_code(&added), "0", "{added}");
        assert_eq!(
            element_text(&added, "refundId"),
            Some("20"),
            "refund ids continue the imported payments' sequence"
        );
        let at = "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:paymentId>20</r:paymentId>";
        let updated = soap(&http, &base, "updateRefund", &format!("{at}<r:refundValue>45.5</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>")).await;
        assert_eq!(element_text(&updated, "updateResult"), Some("true"), "{updated}");
        let status = soap(&http, &base, "getRefundStatus", at).await;
        assert_eq!(element_text(&status, "refundStatus"), Some("New"));
        assert_eq!(element_text(&status, "refundValue"), Some("45.50"));
        let confirmed = soap(&http, &base, "confirmRefund", at).await;
        assert_eq!(element_text(&confirmed, "confirmResult"), Some("true"), "{confirmed}");
        let status = soap(&http, &base, "getRefundStatus", at).await;
        assert_eq!(element_text(&status, "refundStatus"), Some("Processing"));

        let manual = soap(&http, &base, "addManualRefund", "<r:sourceType>rma</r:sourceType><r:sourceId>801</r:sourceId><r:refundValue>30.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency><r:refundDetails><r:paymentFormId>3</r:paymentFormId></r:refundDetails>").await;
        assert_eq!(element_text(&manual, "refundId"), Some("21"), "{manual}");
        let again = soap(&http, &base, "addManualRefund", "<r:sourceType>rma</r:sourceType><r:sourceId>801</r:sourceId><r:refundValue>0.01</r:refundValue><r:refundCurrency>PLN</r:refundCurrency><r:refundDetails><r:paymentFormId>3</r:paymentFormId></r:refundDetails>").await;
        assert_eq!(fault_code(&again), "4003", "the claim is fully reserved");
        let rma_at = "<r:sourceType>rma</r:sourceType><r:sourceId>801</r:sourceId><r:paymentId>21</r:paymentId>";
        let listed = soap(&http, &base, "retrieveRefundsList", "<r:sourceType>all</r:sourceType>").await;
        assert_eq!(element_text(&listed, "resultsNumberAll"), Some("1"), "{listed}");
        assert!(listed.contains("<paymentId>21</paymentId>"), "{listed}");
        let canceled = soap(&http, &base, "cancelRefund", rma_at).await;
        assert_eq!(element_text(&canceled, "resultStatus"), Some("true"), "{canceled}");
        let status = soap(&http, &base, "getRefundStatus", rma_at).await;
        assert_eq!(element_text(&status, "refundStatus"), Some("Canceled"));
        let listed = soap(&http, &base, "retrieveRefundsList", "<r:sourceType>rma</r:sourceType>").await;
        assert_eq!(element_text(&listed, "resultsNumberAll"), Some("0"), "{listed}");

        // Five changes: add, update, confirm, add, cancel. The sealer chains them within a
        // few of its rounds.
        let database = Database::Postgres(url.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let database = database.clone();
            let (chained, pending) = tokio::task::spawn_blocking(move || {
                let (entries, pending) = store::maintenance(&database)
                    .expect("open")
                    .audit_entries(None)
                    .expect("audit entries");
                (entries.len(), pending)
            })
            .await
            .expect("audit read");
            if (chained, pending) == (5, 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the sealer chained {chained} entries, {pending} still waiting"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.stop().await;
    });
    let (ok, stdout, stderr) = cli(&["audit", "verify"], &url);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("audit chain intact: 5 entries"), "{stdout}");
    let (ok, stdout, _) = cli(&["audit", "show", "--refund", "20"], &url);
    assert!(ok);
    assert_eq!(
        stdout.lines().count(),
        3,
        "added, updated, confirmed: {stdout}"
    );
    assert_ledger_consistent(&Database::Postgres(url.clone()));

    // The chain is append-only: editing a chained entry is refused by the database itself, and
    // so is chaining an entry twice.
    let mut client = sql(&url);
    let edited = client.batch_execute("UPDATE audit_log SET amount_after = 1 WHERE seq = 1");
    assert!(edited.is_err(), "a chained entry was edited");
    let rechained =
        client.batch_execute("UPDATE audit_log SET hash = 'x', prev_hash = 'y' WHERE seq = 2");
    assert!(rechained.is_err(), "a chained entry was chained again");
    assert!(client.batch_execute("DELETE FROM audit_log").is_err());
}

/// A `serve` process on `url`, listening on a free port; killed when dropped.
fn serve(url: &str, extra: &[&str]) -> (Running, String) {
    let mut child = gateway()
        .args(["serve", "--listen", "127.0.0.1:0", "--db", url])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gateway");
    let mut log = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let mut seen = String::new();
    while log.read_line(&mut line).expect("log") > 0 {
        if let Some(at) = line.find("address=") {
            let address = line[at + "address=".len()..]
                .split_whitespace()
                .next()
                .expect("address")
                .to_owned();
            std::thread::spawn(move || for _ in log.lines() {});
            return (Running(child), format!("http://{address}"));
        }
        seen.push_str(&line);
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the gateway did not say where it listens:\n{seen}");
}

/// Three `serve` processes on one database.
fn three_instances(url: &str) -> (Vec<Running>, Vec<String>) {
    (0..3).map(|_| serve(url, &[])).unzip()
}

#[test]
fn fifty_concurrent_adds_over_three_instances_never_exceed_what_was_paid() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    let (_instances, bases) = three_instances(&url);
    // Payment 11 took 200.00 of order 2001's 250.00. Fifty automatic refunds of 10.00 each
    // against it, spread over the three instances: twenty fit.
    let (accepted, refused) = runtime().block_on(async {
        let http = client();
        let requests: Vec<_> = (0..50)
            .map(|index| {
                let http = http.clone();
                let base = bases[index % 3].clone();
                tokio::spawn(async move {
                    soap(&http, &base, "addAutomaticRefundForOrder", "<r:sourceId>2001</r:sourceId><r:paymentId>11</r:paymentId><r:refundValue>10.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>").await
                })
            })
            .collect();
        let (mut accepted, mut refused) = (0, 0);
        for request in requests {
            let body = request.await.expect("request task");
            match fault_code(&body) {
                "0" => accepted += 1,
                "4003" => refused += 1,
                other => panic!("unexpected outcome {other}: {body}"),
            }
        }
        (accepted, refused)
    });
    assert_eq!(
        (accepted, refused),
        (20, 30),
        "exactly the paid 200.00 is reserved"
    );
    let mut client = sql(&url);
    let row = client
        .query_one(
            "SELECT p.amount_minor, p.refunded_minor, (SELECT coalesce(sum(amount_minor), 0)::bigint FROM refunds r WHERE r.payment_id = p.id AND r.status IN ('New', 'Processing', 'Completed')) FROM payments p WHERE p.id = 11",
            &[],
        )
        .expect("payment totals");
    let (paid, refunded, live): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((paid, refunded, live), (20_000, 20_000, 20_000));
    let ids: i64 = client
        .query_one("SELECT count(DISTINCT id) FROM refunds", &[])
        .expect("ids")
        .get(0);
    assert_eq!(ids, 20);
    assert_ledger_consistent(&Database::Postgres(url.clone()));
}

#[test]
fn one_idempotency_key_sent_to_three_instances_at_once_makes_one_refund() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    let (_instances, bases) = three_instances(&url);
    let answers = runtime().block_on(async {
        let http = client();
        // Several rounds of three, so that the twins really meet inside the database.
        let mut answers = Vec::new();
        for round in 0..5 {
            let requests: Vec<_> = bases
                .iter()
                .map(|base| {
                    let http = http.clone();
                    let url = format!("{base}/api/admin/v6/refunds/addAutomaticRefundForOrder");
                    let key = format!("twin-{round}");
                    tokio::spawn(async move {
                        let response = http
                            .post(url)
                            .header("x-api-key", TEST_API_KEY)
                            .header("idempotency-key", key)
                            .header("content-type", "application/json")
                            .body(r#"{"params":{"sourceId":2001,"paymentId":11,"refundValue":"10.00","refundCurrency":"PLN"}}"#)
                            .send()
                            .await
                            .expect("request sent");
                        let status = response.status().as_u16();
                        (status, response.bytes().await.expect("body").to_vec())
                    })
                })
                .collect();
            let mut round_answers = Vec::new();
            for request in requests {
                round_answers.push(request.await.expect("request task"));
            }
            answers.push(round_answers);
        }
        answers
    });
    for (round, round_answers) in answers.iter().enumerate() {
        let first = &round_answers[0];
        assert_eq!(first.0, 200, "{}", String::from_utf8_lossy(&first.1));
        for other in &round_answers[1..] {
            assert_eq!(
                other, first,
                "round {round}: the twins got different answers"
            );
        }
    }
    let mut client = sql(&url);
    let refunds: i64 = client
        .query_one("SELECT count(*) FROM refunds", &[])
        .expect("count")
        .get(0);
    assert_eq!(refunds, 5, "one refund per key");
    assert_ledger_consistent(&Database::Postgres(url.clone()));
}

#[test]
fn confirm_on_one_instance_racing_cancel_on_another_lets_exactly_one_win() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    let (_instances, bases) = three_instances(&url);
    const RACES: usize = 10;
    let outcomes = runtime().block_on(async {
        let http = client();
        let mut outcomes = Vec::new();
        for _ in 0..RACES {
            let added = soap(&http, &bases[0], "addManualRefund", "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:refundValue>1.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency><r:refundDetails><r:paymentFormId>1</r:paymentFormId></r:refundDetails>").await;
            let id = element_text(&added, "refundId").expect("refundId").to_owned();
            let at = format!("<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:paymentId>{id}</r:paymentId>");
            let confirm = {
                let (http, base, at) = (http.clone(), bases[1].clone(), at.clone());
                tokio::spawn(async move { soap(&http, &base, "confirmRefund", &at).await })
            };
            let cancel = {
                let (http, base, at) = (http.clone(), bases[2].clone(), at.clone());
                tokio::spawn(async move { soap(&http, &base, "cancelRefund", &at).await })
            };
            let confirmed = confirm.await.expect("confirm");
            let canceled = cancel.await.expect("cancel");
            let status = soap(&http, &bases[0], "getRefundStatus", &at).await;
            outcomes.push((
                fault_code(&confirmed).to_owned(),
                fault_code(&canceled).to_owned(),
                element_text(&status, "refundStatus").unwrap_or("").to_owned(),
            ));
        }
        outcomes
    });
    for (confirmed, canceled, status) in &outcomes {
        match (confirmed.as_str(), canceled.as_str()) {
            // The confirm came first: the manual refund is Completed and cancel is refused.
            ("0", "4020") => assert_eq!(status, "Completed"),
            // The cancel came first: confirming a Canceled refund is refused.
            ("4013", "0") => assert_eq!(status, "Canceled"),
            other => panic!("not exactly one winner: {other:?}, status {status}"),
        }
    }
    assert_ledger_consistent(&Database::Postgres(url.clone()));
}

#[test]
fn every_statement_of_the_adapter_prepares_against_the_migrated_schema() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    let mut client = sql(&url);
    let mut failures = Vec::new();
    let mut prepared = 0;
    for statement in store::postgres::statements() {
        match client.prepare(statement) {
            Ok(_) => prepared += 1,
            Err(error) => failures.push(format!("{error}\n    in: {statement}")),
        }
    }
    assert!(
        failures.is_empty(),
        "statements that no longer fit the schema:\n{}",
        failures.join("\n")
    );
    assert!(prepared > 50, "only {prepared} statements listed");
}

#[test]
fn three_instances_started_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.empty_database();
    let (_instances, bases) = three_instances(&url);
    runtime().block_on(async {
        let http = client();
        for base in &bases {
            let ready = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .expect("readyz");
            assert_eq!(ready.status(), 200, "{base} is ready");
        }
    });
    let mut client = sql(&url);
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .expect("versions")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let known = i32::try_from(store::postgres::known_schema_version()).expect("small");
    assert_eq!(
        versions,
        (1..=known).collect::<Vec<_>>(),
        "each migration ran once"
    );
    drop(_instances);

    client
        .execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(known + 1)],
        )
        .expect("pretend a newer binary migrated");
    let output = gateway()
        .args(["serve", "--listen", "127.0.0.1:0", "--db", &url])
        .output()
        .expect("run serve");
    assert!(
        !output.status.success(),
        "an instance served a newer schema"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("newer than this binary knows"), "{stderr}");
}

#[test]
fn backup_says_it_is_postgresqls_job_and_fails() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    let (ok, stdout, stderr) = cli(&["backup", "/tmp/never-written.db"], &url);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!Path::new("/tmp/never-written.db").exists());
}

#[test]
fn the_schema_itself_refuses_an_over_refund() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    let mut client = sql(&url);
    let refund = |id: i64, minor: i64| {
        format!(
            "BEGIN;
             INSERT INTO movements (id, kind) VALUES ({id}, 'refund');
             INSERT INTO refunds (id, order_id, source_type, source_id, method, payment_id,
                 amount_minor, currency, status, created_at, created_by)
             VALUES ({id}, 2001, 'order', 2001, 'automatic', 11, {minor}, 'PLN', 'New', 0, 'x');
             COMMIT;"
        )
    };
    let refunded = |client: &mut postgres::Client| -> (i64, i64) {
        let row = client
            .query_one(
                "SELECT p.refunded_minor, o.refunded_minor FROM payments p JOIN orders o ON o.id = p.order_id WHERE p.id = 11",
                &[],
            )
            .expect("totals");
        (row.get(0), row.get(1))
    };
    // Payment 11 took 200.00: one grosz more is refused by the running total's CHECK.
    assert!(client.batch_execute(&refund(1000, 20_001)).is_err());
    client
        .batch_execute("ROLLBACK")
        .expect("end the failed transaction");
    assert_eq!(refunded(&mut client), (0, 0));
    client
        .batch_execute(&refund(1001, 20_000))
        .expect("exactly what was paid");
    assert_eq!(refunded(&mut client), (20_000, 20_000));
    assert!(
        client
            .batch_execute("UPDATE refunds SET amount_minor = 20001 WHERE id = 1001")
            .is_err(),
        "raising a reservation past what was paid"
    );
    assert!(
        client
            .batch_execute("UPDATE refunds SET status = 'Failed' WHERE id = 1001")
            .is_err(),
        "only a refund being processed can fail"
    );
    assert!(client.batch_execute("DELETE FROM refunds").is_err());
    client
        .batch_execute("UPDATE refunds SET status = 'Canceled' WHERE id = 1001")
        .expect("cancel");
    assert_eq!(
        refunded(&mut client),
        (0, 0),
        "canceling releases the amount"
    );
    assert!(
        client
            .batch_execute("UPDATE refunds SET status = 'New' WHERE id = 1001")
            .is_err(),
        "a final state is final"
    );
    assert_ledger_consistent(&Database::Postgres(url.clone()));
}

/// `GET getPossibleAutoRefunds` of order 2001 with `key` on `base`: the HTTP status.
async fn read_with_key(http: &reqwest::Client, base: &str, key: &str) -> u16 {
    http.get(format!(
        "{base}/api/admin/v6/refunds/getPossibleAutoRefunds?sourceType=order&sourceId=2001"
    ))
    .header("x-api-key", key)
    .send()
    .await
    .expect("request sent")
    .status()
    .as_u16()
}

#[test]
fn every_command_takes_a_postgres_url_and_a_key_revoked_there_stops_on_every_instance() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.empty_database();
    let shop = fixtures_dir().join("test-shop.json");
    let (ok, stdout, stderr) = cli(&["import", shop.to_str().expect("utf-8 path")], &url);
    assert!(ok, "import: {stdout}{stderr}");
    let (ok, _, stderr) = cli(&["user", "add", "clerk", "--password", "pw"], &url);
    assert!(ok, "user add: {stderr}");
    let (ok, key, stderr) = cli(&["key", "create", "--name", "batch"], &url);
    assert!(ok, "key create: {stderr}");
    let key = key.trim().to_owned();
    let (ok, listed, _) = cli(&["key", "list"], &url);
    assert!(ok && listed.contains("batch"), "{listed}");

    const TTL_MS: u64 = 300;
    let instances: Vec<(Running, String)> = (0..3)
        .map(|_| serve(&url, &["--credentials-ttl-ms", &TTL_MS.to_string()]))
        .collect();
    let bases: Vec<String> = instances.iter().map(|(_, base)| base.clone()).collect();
    let refund_id = runtime().block_on(async {
        let http = client();
        let added = http
            .post(format!("{}/api/admin/v6/refunds/addAutomaticRefundForOrder", bases[0]))
            .header("x-api-key", &key)
            .body(r#"{"params":{"sourceId":2001,"paymentId":11,"refundValue":"10.00","refundCurrency":"PLN"}}"#)
            .send()
            .await
            .expect("add");
        assert_eq!(added.status(), 200);
        let added: serde_json::Value = added.json().await.expect("json");
        let refund_id = added["result"]["refundId"].as_i64().expect("refundId");
        let confirmed = http
            .put(format!("{}/api/admin/v6/refunds/confirmRefund", bases[1]))
            .header("x-api-key", &key)
            .body(format!(r#"{{"params":{{"sourceType":"order","sourceId":2001,"paymentId":{refund_id}}}}}"#))
            .send()
            .await
            .expect("confirm");
        assert_eq!(confirmed.status(), 200, "{}", confirmed.text().await.unwrap_or_default());
        for base in &bases {
            assert_eq!(read_with_key(&http, base, &key).await, 200, "{base} accepts the key");
        }
        refund_id
    });
    let (ok, jobs, _) = cli(&["outbox", "--all"], &url);
    assert!(ok && jobs.contains(&refund_id.to_string()), "{jobs}");

    let (ok, _, stderr) = cli(&["key", "revoke", "batch"], &url);
    assert!(ok, "key revoke: {stderr}");
    let revoked_at = Instant::now();
    runtime().block_on(async {
        let http = client();
        for base in &bases {
            loop {
                if read_with_key(&http, base, &key).await == 401 {
                    break;
                }
                assert!(
                    revoked_at.elapsed() < Duration::from_millis(TTL_MS + 1000),
                    "{base} still accepts a key revoked {:?} ago",
                    revoked_at.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    drop(instances);

    let (ok, stdout, stderr) = cli(&["audit", "verify"], &url);
    assert!(
        ok && stdout.contains("audit chain intact"),
        "{stdout}{stderr}"
    );
    let (ok, history, _) = cli(&["audit", "show", "--refund", &refund_id.to_string()], &url);
    assert!(
        ok && history.lines().count() >= 2,
        "added and confirmed: {history}"
    );
    assert_ledger_consistent(&Database::Postgres(url.clone()));
}

/// What the proxy between a gateway and PostgreSQL does with traffic.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Forwarding,
    /// Holds every byte and answers nothing, connections stay open: a frozen server.
    Frozen,
    /// Closes every connection and every new one: a server that is down.
    Refusing,
}

/// A TCP proxy in front of the cluster, so that a test can take PostgreSQL away from one
/// gateway (and give it back) without touching the cluster the other tests use.
struct Proxy {
    port: u16,
    state: std::sync::Arc<Mutex<(Link, Vec<std::net::TcpStream>)>>,
}

impl Proxy {
    fn start(target_port: u16) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        let state = std::sync::Arc::new(Mutex::new((Link::Forwarding, Vec::new())));
        let shared = state.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                let mut state = shared.lock().expect("proxy state");
                match state.0 {
                    Link::Refusing => drop(inbound),
                    Link::Frozen => state.1.push(inbound),
                    Link::Forwarding => {
                        let Ok(outbound) = std::net::TcpStream::connect(("127.0.0.1", target_port))
                        else {
                            continue;
                        };
                        for (from, to) in [(&inbound, &outbound), (&outbound, &inbound)] {
                            let (from, to) = (
                                from.try_clone().expect("clone"),
                                to.try_clone().expect("clone"),
                            );
                            let shared = shared.clone();
                            std::thread::spawn(move || pump(from, to, &shared));
                        }
                        state.1.push(inbound);
                        state.1.push(outbound);
                    }
                }
            }
        });
        Proxy { port, state }
    }

    fn set(&self, link: Link) {
        let mut state = self.state.lock().expect("proxy state");
        state.0 = link;
        if link == Link::Refusing {
            for stream in state.1.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Link::Refusing);
    }
}

/// Copies `from` to `to` while the link forwards; holds what it read while it is frozen.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    state: &Mutex<(Link, Vec<std::net::TcpStream>)>,
) {
    use std::io::{Read as _, Write as _};
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer) else {
            return;
        };
        if read == 0 {
            let _ = to.shutdown(std::net::Shutdown::Write);
            return;
        }
        loop {
            let link = state.lock().map(|state| state.0).unwrap_or(Link::Refusing);
            match link {
                Link::Forwarding => break,
                Link::Frozen => std::thread::sleep(Duration::from_millis(10)),
                Link::Refusing => return,
            }
        }
        if to.write_all(&buffer[..read]).is_err() {
            return;
        }
    }
}

#[test]
fn an_outage_fails_requests_within_the_deadline_and_the_instance_recovers_by_itself() {
    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    // Declared before the proxy, so dropped after it: a failing assertion lets the proxy
    // refuse (ending the transactions it froze) before the runtime waits for their threads.
    let runtime = runtime();
    let proxy = Proxy::start(cluster.port);
    let proxied = url.replace(&format!(":{}/", cluster.port), &format!(":{}/", proxy.port));
    runtime.block_on(async {
        let server =
            TestServer::start_with(test_config_on(Database::Postgres(proxied.clone()))).await;
        let http = client();
        let base = server.base.clone();
        let ready = |http: reqwest::Client, base: String| async move {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .expect("readyz")
                .status()
                .as_u16()
        };
        let status_of = "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:paymentId>20</r:paymentId>";
        let added = soap(&http, &base, "addAutomaticRefundForOrder", "<r:sourceId>2001</r:sourceId><r:paymentId>11</r:paymentId><r:refundValue>10.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>").await;
        assert_eq!(fault_code(&added), "0", "{added}");
        assert_eq!(ready(http.clone(), base.clone()).await, 200);

        // Frozen: nothing answers, nothing fails at the TCP level. Requests fail at the
        // transaction deadline instead of hanging.
        proxy.set(Link::Frozen);
        let soap_url = format!("{base}/soap/refunds");
        let headers = [
            soap11_headers("getRefundStatus"),
            vec![("x-api-key".to_owned(), TEST_API_KEY.to_owned())],
        ]
        .concat();
        let started = Instant::now();
        let (readiness, answer, rest_answer) = tokio::join!(
            ready(http.clone(), base.clone()),
            post(
                &http,
                &soap_url,
                &headers,
                soap11("getRefundStatus", status_of),
            ),
            crate::support::rest_request(
                &http,
                &base,
                TEST_API_KEY,
                reqwest::Method::GET,
                "getRefundStatus",
                &serde_json::json!({"sourceType": "order", "sourceId": 2001, "paymentId": 20}),
            )
            .send()
        );
        let rest_answer = rest_answer.expect("the REST request is answered");
        assert_eq!(
            rest_answer.status(),
            503,
            "REST says the database is unavailable (try again later)"
        );
        // The adapter's transaction deadline is 10 s; a hang would show here.
        assert!(
            started.elapsed() < Duration::from_secs(14),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(readiness, 503);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            (
                fault_code(&answer.body),
                element_text(&answer.body, "faultString")
            ),
            ("3", Some("operation failed; the cause is in the gateway's log")),
            "the generic failure, no internal text"
        );

        // Down: every session breaks and new ones are refused; requests fail at once.
        proxy.set(Link::Refusing);
        let started = Instant::now();
        assert_eq!(ready(http.clone(), base.clone()).await, 503);
        assert!(
            started.elapsed() < refunds_gateway::store::postgres::CONNECT_TIMEOUT + Duration::from_secs(1),
            "a refused connection took {:?}",
            started.elapsed()
        );

        // Back: the instance reconnects by itself.
        proxy.set(Link::Forwarding);
        let deadline = Instant::now() + Duration::from_secs(20);
        while ready(http.clone(), base.clone()).await != 200 {
            assert!(Instant::now() < deadline, "the instance did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = soap(&http, &base, "getRefundStatus", status_of).await;
        assert_eq!(element_text(&status, "refundStatus"), Some("New"), "{status}");
        let added = soap(&http, &base, "addAutomaticRefundForOrder", "<r:sourceId>2001</r:sourceId><r:paymentId>11</r:paymentId><r:refundValue>10.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>").await;
        assert_eq!(fault_code(&added), "0", "{added}");
        server.stop().await;
    });
    assert_ledger_consistent(&Database::Postgres(url.clone()));
}

#[test]
fn two_hundred_automatic_refunds_over_three_instances_one_killed_each_refunded_exactly_once() {
    use crate::crash::rest;
    use crate::operators::{Reply, SECRET, Script, TestOperator};
    use serde_json::{Value, json};

    const REFUNDS: i64 = 200;
    let Some(cluster) = cluster() else { return };
    let url = cluster.empty_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let orders: Vec<Value> = (1..=REFUNDS)
        .map(|n| {
            json!({"orderId": 5000 + n, "currency": "PLN", "payments": [{"paymentId": 6000 + n, "amount": "50.00", "currency": "PLN",
                "paymentFormId": 12, "paymentSystem": 27, "autoRefund": true, "externalTransactionId": format!("EXT-{n}"),
                "paidAt": "2026-11-19 10:00:00"}]})
        })
        .collect();
    let shop = dir.path().join("shop.json");
    std::fs::write(&shop, json!({ "orders": orders }).to_string()).expect("shop");
    let (ok, _, stderr) = cli(&["import", shop.to_str().expect("utf-8 path")], &url);
    assert!(ok, "import: {stderr}");
    let (ok, key, stderr) = cli(&["key", "create", "--name", "crash"], &url);
    assert!(ok, "key create: {stderr}");
    let key = key.trim().to_owned();

    let runtime = runtime();
    runtime.block_on(async {
        // 40 ms per refund; one refund per idempotency key; "completed" when asked again.
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
        let operators = operators.to_str().expect("utf-8 path").to_owned();
        let mut instances: Vec<(Running, String)> = (0..3)
            .map(|_| serve(&url, &["--operators", &operators]))
            .collect();
        // `rest` takes host:port.
        let bases: Vec<String> = instances
            .iter()
            .map(|(_, base)| base.trim_start_matches("http://").to_owned())
            .collect();
        let http = client();
        let mut ids = Vec::new();
        for n in 1..=REFUNDS {
            let base = &bases[n as usize % 3];
            let added = rest(&http, base, &key, reqwest::Method::POST, "addAutomaticRefundForOrder", json!({"sourceId": 5000 + n, "paymentId": 6000 + n, "refundValue": "50.00", "refundCurrency": "PLN"})).await;
            ids.push((5000 + n, added["result"]["refundId"].as_i64().expect("refundId")));
        }
        // Confirm them all at once over the three; SIGKILL the first once the operator has
        // seen a quarter of the sends. Its claimed jobs go to the others after their lease.
        let confirms: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(index, &(order, id))| {
                let (http, base, key) = (http.clone(), bases[index % 3].clone(), key.clone());
                tokio::spawn(async move {
                    rest(&http, &base, &key, reqwest::Method::PUT, "confirmRefund", json!({"sourceType": "order", "sourceId": order, "paymentId": id})).await
                })
            })
            .collect();
        for _ in 0..1000 {
            if operator.count("POST") as i64 >= REFUNDS / 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (mut killed, _) = instances.remove(0);
        killed.0.kill().expect("SIGKILL");
        killed.0.wait().expect("reap");
        let sends_before_kill = operator.count("POST");
        assert!(
            sends_before_kill > 0 && (sends_before_kill as i64) < REFUNDS,
            "the kill must land while refunds are on their way: {sends_before_kill} of {REFUNDS} sent"
        );
        for confirm in confirms {
            let _ = confirm.await;
        }

        // The two left confirm what the kill left unconfirmed and settle everything.
        let survivors = &bases[1..];
        let mut settled = 0;
        for _ in 0..600 {
            settled = 0;
            for (index, &(order, id)) in ids.iter().enumerate() {
                let base = &survivors[index % 2];
                let at = json!({"sourceType": "order", "sourceId": order, "paymentId": id});
                let status = rest(&http, base, &key, reqwest::Method::GET, "getRefundStatus", at.clone()).await;
                match status["result"]["refundStatus"].as_str() {
                    Some("Completed") => settled += 1,
                    Some("New") => {
                        rest(&http, base, &key, reqwest::Method::PUT, "confirmRefund", at).await;
                    }
                    _ => {}
                }
            }
            if settled == REFUNDS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(settled, REFUNDS, "every refund completed on the two instances left");

        let effective = operator.state.lock().expect("state").effective.clone();
        let refunded: std::collections::HashSet<String> = effective.keys().cloned().collect();
        let confirmed: std::collections::HashSet<String> =
            ids.iter().map(|(_, id)| id.to_string()).collect();
        assert_eq!(refunded, confirmed, "the operator refunded exactly the confirmed refunds");
        assert!(
            effective.values().all(|&count| count == 1),
            "no refund was made twice: {effective:?}"
        );
        eprintln!(
            "PostgreSQL crash test: {REFUNDS} refunds over three instances; {sends_before_kill} sends before SIGKILL of one; {} sends and {} status queries in all",
            operator.count("POST"),
            operator.count("GET")
        );

        // Every entry chained by the survivors' sealer, then `audit verify` clean.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ok, stdout, stderr) = cli(&["audit", "verify"], &url);
            assert!(ok, "audit verify: {stdout}{stderr}");
            if !stdout.contains("not chained yet") {
                break;
            }
            assert!(Instant::now() < deadline, "entries left unchained: {stdout}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(instances);
    });
    let output = gateway()
        .args(["outbox", "--db", &url])
        .output()
        .expect("outbox");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "0 job(s)",
        "nothing is left in the outbox"
    );
    let mut client = sql(&url);
    let completed: i64 = client
        .query_one(
            "SELECT count(*) FROM refunds WHERE status = 'Completed' AND external_id = 'OP-' || id",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(completed, REFUNDS);
    assert_ledger_consistent(&Database::Postgres(url.clone()));
}

/// The recorded SOAP fixtures answer byte for byte (canonically) as their goldens, which the
/// SQLite run records: both backends behave alike for every case.
#[test]
fn soap_fixtures_match_their_goldens_on_postgres() {
    use crate::soap_fixtures::{cases, compare_with_golden, run_case, run_setup};

    let Some(cluster) = cluster() else { return };
    let fixture = cluster.fresh_database();
    let runtime = runtime();
    runtime.block_on(run_setup(fixture_config(&fixture)));
    let fixture_name = fixture
        .rsplit('/')
        .next()
        .expect("database name")
        .to_owned();
    let http = client();
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let url = cluster.copy_of(&fixture_name);
        let (answer, _) = runtime.block_on(run_case(&http, fixture_config(&url), case));
        cluster.drop_database(&url);
        failures.extend(compare_with_golden(case, &answer));
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixture cases differ on PostgreSQL:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// The fixtures' configuration (fixed clock, no outbox worker) on PostgreSQL.
fn fixture_config(url: &str) -> refunds_gateway::Config {
    test_config_on(Database::Postgres(url.to_owned()))
}

/// The REST fixtures likewise (status, headers and JSON body against the goldens).
#[test]
fn rest_fixtures_match_their_goldens_on_postgres() {
    use crate::rest_fixtures::{failures_of, rest_cases, run_case_on};
    use crate::soap_fixtures::run_setup;

    let Some(cluster) = cluster() else { return };
    let fixture = cluster.fresh_database();
    let runtime = runtime();
    runtime.block_on(run_setup(fixture_config(&fixture)));
    let fixture_name = fixture
        .rsplit('/')
        .next()
        .expect("database name")
        .to_owned();
    let http = client();
    let cases = rest_cases();
    let mut failures = Vec::new();
    for case in &cases {
        let url = cluster.copy_of(&fixture_name);
        let reply = runtime.block_on(run_case_on(fixture_config(&url), &http, case));
        cluster.drop_database(&url);
        failures.extend(failures_of(case, reply));
    }
    assert!(
        failures.is_empty(),
        "{} of {} REST fixture cases differ on PostgreSQL:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Contract point 5 on its own: two stores (two instances' pools) claiming due outbox jobs at
/// once never claim one job twice within its lease. (The crash test cannot show this: its
/// operator shrugs off a second send, and a lease that runs out under load rightly hands a
/// job to another worker.)
#[test]
fn concurrent_claims_from_two_instances_never_take_one_job_twice() {
    use refunds_gateway::refunds::ledger::LedgerStore;
    use refunds_gateway::store::postgres::PostgresStore;
    use std::sync::Arc;

    const JOBS: i64 = 120;
    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    // 120 Processing automatic refunds of 0.01 on payment 11, each with a due job.
    let mut client = sql(&url);
    for n in 0..JOBS {
        let id = 1000 + n;
        client
            .batch_execute(&format!(
                "INSERT INTO movements (id, kind) VALUES ({id}, 'refund');
                 INSERT INTO refunds (id, order_id, source_type, source_id, method, payment_id,
                     amount_minor, currency, status, created_at, created_by)
                 VALUES ({id}, 2001, 'order', 2001, 'automatic', 11, 1, 'PLN', 'New', 0, 'x');
                 UPDATE refunds SET status = 'Processing' WHERE id = {id};
                 INSERT INTO outbox (refund_id, operator, state, next_attempt_ms, created_ms, updated_ms)
                 VALUES ({id}, 'testpay', 'send', 0, 0, 0);"
            ))
            .expect("a due job");
    }
    drop(client);
    let stores: Vec<Arc<dyn LedgerStore>> = (0..2)
        .map(|_| Arc::new(PostgresStore::open(&url).expect("open")) as Arc<dyn LedgerStore>)
        .collect();
    let claimed = runtime().block_on(async {
        let claimers: Vec<_> = (0..8)
            .map(|index| {
                let store = stores[index % 2].clone();
                tokio::spawn(async move {
                    let mut claimed = Vec::new();
                    loop {
                        let jobs = store
                            .write(|ledger| ledger.claim_due_jobs(1_000, 60_000, 3))
                            .await
                            .expect("claim");
                        if jobs.is_empty() {
                            return claimed;
                        }
                        claimed.extend(jobs.into_iter().map(|job| (job.refund_id, job.lease)));
                    }
                })
            })
            .collect();
        let mut claimed = Vec::new();
        for claimer in claimers {
            claimed.extend(claimer.await.expect("claimer"));
        }
        claimed
    });
    for store in &stores {
        store.close();
    }
    let mut ids: Vec<i64> = claimed.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let claims = ids.len();
    ids.dedup();
    assert_eq!(
        (claims, ids.len()),
        (JOBS as usize, JOBS as usize),
        "every job claimed, and none twice"
    );
    assert!(
        claimed.iter().all(|(_, lease)| *lease == 1),
        "one claim, one fencing token each"
    );
}

/// Two writes on two instances that lock two payments in opposite orders deadlock; PostgreSQL
/// aborts one (40P01), and the runner runs its work again in a fresh transaction, so both
/// succeed.
#[test]
fn a_deadlock_between_two_instances_is_retried_and_both_writes_succeed() {
    use refunds_gateway::refunds::ledger::LedgerStore;
    use refunds_gateway::store::postgres::PostgresStore;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    let Some(cluster) = cluster() else { return };
    let url = cluster.fresh_database();
    let stores: Vec<Arc<dyn LedgerStore>> = (0..2)
        .map(|_| Arc::new(PostgresStore::open(&url).expect("open")) as Arc<dyn LedgerStore>)
        .collect();
    let runs = Arc::new(AtomicUsize::new(0));
    let outcomes = runtime().block_on(async {
        let writes: Vec<_> = [(11, 13), (13, 11)]
            .into_iter()
            .zip(stores.iter().cloned())
            .map(|((first, second), store)| {
                let runs = runs.clone();
                tokio::spawn(async move {
                    store
                        .write(move |ledger| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            ledger.payment(first)?;
                            // Both hold their first lock before either asks for its second.
                            std::thread::sleep(Duration::from_millis(300));
                            ledger.payment(second)?;
                            Ok::<_, anyhow::Error>(())
                        })
                        .await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for write in writes {
            outcomes.push(
                write
                    .await
                    .expect("write task")
                    .map_err(|e| format!("{e:#}")),
            );
        }
        outcomes
    });
    for store in &stores {
        store.close();
    }
    assert_eq!(outcomes, [Ok(()), Ok(())], "both writes succeed");
    // At least three: the victim ran once more. On a loaded machine the victim's retry can meet
    // the survivor's locks once again and be retried again; what must hold is that both succeed.
    let runs = runs.load(Ordering::SeqCst);
    assert!(runs >= 3, "the deadlock's victim ran again ({runs} runs)");
}

/// An instance that starts while another migrates waits for it, however long that takes: the
/// wait is not cut by the lock and statement timeouts that bound requests.
#[test]
fn an_instance_waits_for_a_migration_longer_than_the_statement_timeout() {
    use refunds_gateway::store::postgres::{MIGRATION_LOCK, STATEMENT_TIMEOUT};

    let Some(cluster) = cluster() else { return };
    let url = cluster.empty_database();
    // Another instance's long migration, as far as the lock is concerned.
    let mut migrating = sql(&url);
    migrating
        .query_one("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .expect("take the migration lock");
    // `serve` migrates before it listens, so it says where it listens only after the lock.
    let starting = std::thread::spawn({
        let url = url.clone();
        move || serve(&url, &[])
    });
    std::thread::sleep(STATEMENT_TIMEOUT + Duration::from_secs(1));
    assert!(
        !starting.is_finished(),
        "the instance waits for the migration lock before it listens"
    );
    migrating
        .query_one("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .expect("release the migration lock");
    let (_instance, base) = starting.join().expect("the instance started");
    runtime().block_on(async {
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = http.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|ready| ready.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the instance gave up waiting for the migration"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
