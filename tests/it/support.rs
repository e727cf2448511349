//! Starting the real server for a test, and talking to it.

use std::path::{Path, PathBuf};

use refunds_gateway::clock::{Clock, parse_local_datetime};
use refunds_gateway::refunds::types::{ApiUser, Scopes};
use refunds_gateway::refunds::{api_key_digest, password_sha1_hex};
use refunds_gateway::shop::ShopData;
use refunds_gateway::store::{self, Database, Maintenance};
use std::sync::Arc;

use refunds_gateway::refunds::ledger::LedgerStore;
use refunds_gateway::{Config, run_on};

/// The gateway's command line: the binary cargo built for these tests, or the one
/// `REFUNDS_GATEWAY_BIN` names (to run the process-level tests against a release build).
pub fn gateway() -> std::process::Command {
    std::process::Command::new(
        std::env::var("REFUNDS_GATEWAY_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_refunds-gateway").to_owned()),
    )
}

/// A child process killed (and reaped) when dropped, so that a failing test does not leave a
/// server running.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ledger's derived state agrees with its refunds: every payment's and order's running
/// total equals its live refunds (and an order's stays within what was paid), and the kept
/// counts by source type and status equal the refunds (summed over PostgreSQL's shards; one
/// row per pair on SQLite). The same queries on either backend.
pub fn assert_ledger_consistent(ledger: &(impl LedgerAt + ?Sized)) {
    let database = ledger.database();
    let count = |sql: &str| count_in(&database, sql);
    const LIVE: &str = "r.status IN ('New', 'Processing', 'Completed')";
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM payments p WHERE p.refunded_minor <> (SELECT coalesce(sum(amount_minor), 0) FROM refunds r WHERE r.payment_id = p.id AND {LIVE})"
        )),
        0,
        "every payment's running total equals its live refunds"
    );
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM orders o WHERE o.refunded_minor <> (SELECT coalesce(sum(amount_minor), 0) FROM refunds r WHERE r.order_id = o.id AND {LIVE}) OR o.refunded_minor > o.paid_minor"
        )),
        0,
        "every order's running total equals its live refunds and stays within what was paid"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM (SELECT source_type, status, sum(n) AS n FROM refund_counts GROUP BY source_type, status) c WHERE c.n <> (SELECT count(*) FROM refunds r WHERE r.source_type = c.source_type AND r.status = c.status)"
        ),
        0,
        "the kept counts by source type and status equal the refunds"
    );
}

/// The one number `sql` selects (SQL both backends read alike).
pub fn count_in(database: &Database, sql: &str) -> i64 {
    match database {
        Database::Sqlite(path) => rusqlite::Connection::open(path)
            .expect("open ledger")
            .query_row(sql, [], |row| row.get(0))
            .expect(sql),
        Database::Postgres(url) => off_runtime(|| {
            postgres::Client::connect(url, postgres::NoTls)
                .expect("connect to the test database")
                // A sum of bigints is a numeric on PostgreSQL: read it back as a bigint.
                .query_one(&format!("SELECT ({sql})::bigint"), &[])
                .expect(sql)
                .get(0)
        }),
    }
}

/// The value of `--db` that names `database` on the command line.
pub fn db_arg(database: &Database) -> std::ffi::OsString {
    match database {
        Database::Sqlite(path) => path.clone().into_os_string(),
        Database::Postgres(url) => url.into(),
    }
}

/// Whatever names a ledger: a test's ledger, a `Database`, or an SQLite file's path.
pub trait LedgerAt {
    fn database(&self) -> Database;
}

impl LedgerAt for Database {
    fn database(&self) -> Database {
        self.clone()
    }
}

impl LedgerAt for Path {
    fn database(&self) -> Database {
        Database::Sqlite(self.to_owned())
    }
}

impl LedgerAt for PathBuf {
    fn database(&self) -> Database {
        Database::Sqlite(self.clone())
    }
}

impl LedgerAt for TestLedger {
    fn database(&self) -> Database {
        self.database.clone()
    }
}

/// Which adapter of the ledger port a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How many worker threads a test's runtime has (as `#[tokio::test]`'s flavors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    One,
    Two,
}

impl Backend {
    /// Runs `test` on this backend in a fresh runtime. On PostgreSQL, without its binaries, it
    /// says so and returns (under `CI=true` it fails instead: `postgresql::cluster`). The
    /// cluster is started here, outside the runtime, because the blocking `postgres` client
    /// refuses to run inside one.
    pub fn run<F>(self, threads: Threads, test: impl FnOnce(Backend) -> F)
    where
        F: std::future::Future<Output = ()>,
    {
        if self == Backend::Postgres && crate::postgresql::cluster().is_none() {
            return;
        }
        let runtime = match threads {
            Threads::One => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            Threads::Two => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        }
        .expect("runtime");
        runtime.block_on(test(self));
    }
}

/// Instantiates the async test `fn NAME(backend: Backend)` once per backend, as
/// `NAME::on_sqlite` and `NAME::on_postgres`: one body, both adapters of the ledger port.
/// `on_both_backends!(NAME, multi_thread)` gives it two worker threads.
macro_rules! on_both_backends {
    ($name:ident) => {
        $crate::support::on_both_backends!($name, $crate::support::Threads::One);
    };
    ($name:ident, multi_thread) => {
        $crate::support::on_both_backends!($name, $crate::support::Threads::Two);
    };
    ($name:ident, $threads:expr) => {
        mod $name {
            #[test]
            fn on_sqlite() {
                $crate::support::Backend::Sqlite.run($threads, super::$name);
            }

            #[test]
            fn on_postgres() {
                $crate::support::Backend::Postgres.run($threads, super::$name);
            }
        }
    };
}
pub(crate) use on_both_backends;

/// Runs `work` on a thread of its own: the blocking `postgres` client panics when called from
/// inside a tokio runtime, and the tests call these helpers from async code.
pub fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(work).join().expect("blocking work"))
}

/// A fresh ledger for one test, on either backend: an SQLite file in a temporary folder, or a
/// PostgreSQL database of the test cluster (cloned from the migrated template when it holds the
/// test shop), dropped with this value.
pub struct TestLedger {
    pub database: Database,
    _dir: Option<tempfile::TempDir>,
}

impl TestLedger {
    /// `fixtures/test-shop.json`, the test user and the test keys.
    pub fn with_test_shop(backend: Backend) -> TestLedger {
        match backend {
            Backend::Sqlite => TestLedger::from_sqlite(TestDatabase::with_test_shop()),
            Backend::Postgres => {
                let url = off_runtime(|| cluster().fresh_database());
                TestLedger {
                    database: Database::Postgres(url),
                    _dir: None,
                }
            }
        }
    }

    /// `shop_json`, the test user and the test keys.
    pub fn with_shop(backend: Backend, shop_json: &str) -> TestLedger {
        match backend {
            Backend::Sqlite => TestLedger::from_sqlite(TestDatabase::with_shop(shop_json)),
            Backend::Postgres => {
                let database = off_runtime(|| {
                    let database = Database::Postgres(cluster().empty_database());
                    load_shop(&database, shop_json);
                    database
                });
                TestLedger {
                    database,
                    _dir: None,
                }
            }
        }
    }

    /// A ledger that does not exist yet (SQLite) or has no schema (PostgreSQL): the first
    /// command or server that opens it creates it.
    pub fn empty(backend: Backend) -> TestLedger {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                TestLedger {
                    database: Database::Sqlite(dir.path().join("refunds.db")),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => TestLedger {
                database: Database::Postgres(off_runtime(|| cluster().empty_database())),
                _dir: None,
            },
        }
    }

    fn from_sqlite(database: TestDatabase) -> TestLedger {
        TestLedger {
            database: Database::Sqlite(database.path),
            _dir: Some(database._dir),
        }
    }

    /// [`test_config`] over this ledger.
    pub fn config(&self) -> Config {
        test_config_on(self.database.clone())
    }

    /// The value of `--db` for the command line.
    pub fn db_arg(&self) -> std::ffi::OsString {
        db_arg(&self.database)
    }

    /// The one number `sql` selects (SQL both backends read alike).
    pub fn count(&self, sql: &str) -> i64 {
        count_in(&self.database, sql)
    }

    /// The one text `sql` selects.
    pub fn text(&self, sql: &str) -> String {
        match &self.database {
            Database::Sqlite(path) => rusqlite::Connection::open(path)
                .expect("open ledger")
                .query_row(sql, [], |row| row.get(0))
                .expect(sql),
            Database::Postgres(url) => off_runtime(|| {
                postgres::Client::connect(url, postgres::NoTls)
                    .expect("connect to the test database")
                    .query_one(sql, &[])
                    .expect(sql)
                    .get(0)
            }),
        }
    }

    /// Runs `sql` (one or more statements) on the ledger, as someone with the database would.
    pub fn execute(&self, sql: &str) {
        if let Err(error) = self.try_execute(sql) {
            panic!("{sql}: {error}");
        }
    }

    /// [`TestLedger::execute`], returning the database's refusal (its message) instead.
    pub fn try_execute(&self, sql: &str) -> Result<(), String> {
        match &self.database {
            Database::Sqlite(path) => rusqlite::Connection::open(path)
                .expect("open ledger")
                .execute_batch(sql)
                .map_err(|error| error.to_string()),
            Database::Postgres(url) => off_runtime(|| {
                postgres::Client::connect(url, postgres::NoTls)
                    .expect("connect to the test database")
                    .batch_execute(sql)
                    .map_err(|error| match error.as_db_error() {
                        Some(refusal) => refusal.message().to_owned(),
                        None => error.to_string(),
                    })
            }),
        }
    }

    /// Runs `work` with the command line's side of the ledger.
    pub fn maintain<T: Send>(&self, work: impl FnOnce(&mut dyn Maintenance) -> T + Send) -> T {
        off_runtime(|| {
            let mut maintenance = store::maintenance(&self.database).expect("open the ledger");
            work(&mut *maintenance)
        })
    }
}

impl Drop for TestLedger {
    fn drop(&mut self) {
        // Each PostgreSQL test database is some 8 MB of catalogs; the cluster lives as long as
        // the test binary.
        if let Database::Postgres(url) = &self.database {
            off_runtime(|| cluster().drop_database(url));
        }
    }
}

/// The test run's PostgreSQL cluster; only asked for once [`Backend::run`] found it.
fn cluster() -> &'static crate::postgresql::Cluster {
    crate::postgresql::cluster().expect("the PostgreSQL cluster is running")
}

/// Where the repository's fixtures live.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The instant every fixture runs at: 2026-11-20 12:00:00 in Warsaw.
pub fn fixed_now() -> i64 {
    parse_local_datetime("2026-11-20 12:00:00", chrono_tz::Europe::Warsaw).expect("valid time")
}

/// The legacy user of the fixtures: `tester` with password `secret` (all scopes).
pub const TEST_LOGIN: &str = "tester";
pub const TEST_PASSWORD: &str = "secret";

/// API keys of the fixture database: one with every scope, one that may only read.
pub const TEST_API_KEY: &str = "rgk_test_key_with_every_scope";
pub const TEST_READ_KEY: &str = "rgk_test_key_that_only_reads";

/// A database in a temporary folder, loaded with `fixtures/test-shop.json` and the test user.
pub struct TestDatabase {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestDatabase {
    pub fn with_test_shop() -> TestDatabase {
        let shop =
            std::fs::read_to_string(fixtures_dir().join("test-shop.json")).expect("test shop");
        TestDatabase::with_shop(&shop)
    }

    pub fn with_shop(shop_json: &str) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("refunds.db");
        load_shop(&Database::Sqlite(path.clone()), shop_json);
        TestDatabase { _dir: dir, path }
    }

    /// A copy of this database (taken while no server runs on it).
    pub fn copy(&self) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("refunds.db");
        let connection = rusqlite::Connection::open(&self.path).expect("open for copy");
        connection
            .execute("VACUUM INTO ?1", [path.to_str().expect("utf-8 temp path")])
            .expect("copy database");
        TestDatabase { _dir: dir, path }
    }
}

/// Loads `shop_json`, the test user and the test API keys into `database` (either backend).
pub fn load_shop(database: &Database, shop_json: &str) {
    let shop = ShopData::parse(shop_json, chrono_tz::Europe::Warsaw).expect("shop parses");
    let mut maintenance = store::maintenance(database).expect("open database");
    maintenance.import_shop(&shop).expect("import shop");
    add_user(&mut *maintenance, TEST_LOGIN, TEST_PASSWORD, Scopes::ALL);
    let read_only = Scopes {
        read: true,
        write: false,
        confirm: false,
    };
    for (name, key, scopes) in [
        ("all", TEST_API_KEY, Scopes::ALL),
        ("reader", TEST_READ_KEY, read_only),
    ] {
        maintenance
            .create_api_key(name, &api_key_digest(key), scopes, fixed_now())
            .expect("add key");
    }
}

pub fn add_user(maintenance: &mut dyn Maintenance, login: &str, password: &str, scopes: Scopes) {
    let user = ApiUser {
        login: login.to_owned(),
        password_sha1_hex: password_sha1_hex(password),
        scopes,
    };
    maintenance
        .put_api_user(&user, fixed_now())
        .expect("add user");
}

/// A running server; stopped (gracefully) when dropped or by `stop`.
pub struct TestServer {
    pub base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The configuration tests start from: the clock fixed at `fixed_now()` and no outbox worker
/// (so that `Processing` refunds stay as the fixtures recorded them).
pub fn test_config(database: &Path) -> Config {
    test_config_on(Database::Sqlite(database.to_owned()))
}

/// [`test_config`] over any backend.
pub fn test_config_on(database: Database) -> Config {
    let mut config = Config::new(database);
    config.clock = Clock::Fixed(fixed_now());
    config.run_outbox = false;
    config.metrics_token = Some(refunds_gateway::MetricsToken(METRICS_TOKEN.to_owned()));
    config
}

/// The `/metrics` token of [`test_config`].
pub const METRICS_TOKEN: &str = "scrape-token";

/// The metrics text of a server started with [`test_config`].
pub async fn scrape_metrics(http: &reqwest::Client, base: &str) -> String {
    let response = http
        .get(format!("{base}/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200, "metrics with the token");
    response.text().await.expect("metrics text")
}

impl TestServer {
    /// Starts the server on `127.0.0.1:0` over `database`, with [`test_config`].
    pub async fn start(database: &Path) -> TestServer {
        TestServer::start_with(test_config(database)).await
    }

    /// Starts the server over a store opened already (a test's own adapter of the port).
    pub async fn start_on(config: Config, store: Arc<dyn LedgerStore>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_on(listener, config, store, async {
            let _ = stop.await;
        }));
        TestServer {
            base,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub async fn start_with(config: Config) -> TestServer {
        let database = config.database.clone();
        let store = tokio::task::spawn_blocking(move || store::open(&database))
            .await
            .expect("opening the store")
            .expect("the store opens");
        TestServer::start_on(config, store).await
    }

    /// Stops the server and waits until it has closed the store.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// An HTTP answer as a test inspects it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client")
}

/// POSTs `body` to `base + path` with `headers`.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Answer {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("request sent");
    answer(response).await
}

pub async fn get(client: &reqwest::Client, url: &str) -> Answer {
    answer(client.get(url).send().await.expect("request sent")).await
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.text().await.expect("response body");
    Answer {
        status,
        content_type,
        body,
    }
}

/// The legacy key of the test user at the fixed clock.
pub fn test_key() -> String {
    refunds_gateway::refunds::legacy_key("20261120", &password_sha1_hex(TEST_PASSWORD))
}

/// A SOAP 1.1 request for `operation` with `params` (inner XML, `r:` prefix bound to our
/// namespace), authenticated as the test user.
pub fn soap11(operation: &str, params: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:r="urn:refunds-gateway:refunds"><soap:Body><r:{operation}><r:authenticate><r:userLogin>{TEST_LOGIN}</r:userLogin><r:authenticateKey>{key}</r:authenticateKey></r:authenticate><r:params>{params}</r:params></r:{operation}></soap:Body></soap:Envelope>"#,
        key = test_key()
    )
    .into_bytes()
}

pub fn soap11_headers(operation: &str) -> Vec<(String, String)> {
    vec![
        (
            "content-type".to_owned(),
            "text/xml; charset=utf-8".to_owned(),
        ),
        (
            "soapaction".to_owned(),
            format!("\"urn:refunds-gateway:refunds#{operation}\""),
        ),
    ]
}

/// The text of the first element named `name` in `xml` (a test's quick look, not a parser).
pub fn element_text<'x>(xml: &'x str, name: &str) -> Option<&'x str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// The golden-file discipline of the fixture runners: with `UPDATE_FIXTURES` set, `actual` is
/// written to `golden`; otherwise `compare` judges the golden text. Returns a failure line.
pub fn check_golden(
    golden: &Path,
    label: &str,
    actual: String,
    compare: impl FnOnce(&str) -> Result<(), String>,
) -> Option<String> {
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(golden, actual).expect("write golden");
        return None;
    }
    match std::fs::read_to_string(golden) {
        Err(_) => Some(format!(
            "{label}: no golden file (run with UPDATE_FIXTURES=1 and review)"
        )),
        Ok(text) => compare(&text)
            .err()
            .map(|difference| format!("{label}: {difference}")),
    }
}

/// A REST Admin API request: GET parameters in the query, POST/PUT parameters as
/// `{"params": …}`, the API key in `X-API-KEY`. `base` is `http://host:port`.
pub fn rest_request(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: reqwest::Method,
    operation: &str,
    params: &serde_json::Value,
) -> reqwest::RequestBuilder {
    let url = format!("{base}/api/admin/v6/refunds/{operation}");
    let request = if method == reqwest::Method::GET {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in params.as_object().expect("params object") {
            query.append_pair(
                name,
                &value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned),
            );
        }
        http.get(format!("{url}?{}", query.finish()))
    } else {
        http.request(method, url)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "params": params }).to_string())
    };
    request.header("x-api-key", key)
}

/// A `serve` process on `127.0.0.1:0` over `database`, started with `args` after the database;
/// its log lines (stderr) are kept in `log` for the test to read.
pub struct ServeProcess {
    pub process: Running,
    /// `host:port`.
    pub address: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    pub fn start(database: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> ServeProcess {
        use std::io::BufRead as _;
        let mut child = gateway()
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(database)
            .args(args)
            .env("RUST_LOG", "info")
            .env("REFUNDS_LOG_FORMAT", "text")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let stderr = child.stderr.take().expect("stderr");
        let process = Running(child);
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (address_sender, address) = std::sync::mpsc::channel();
        let lines = log.clone();
        // Keeps draining the log so that the gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("address=") {
                    let address = line[at + "address=".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = address_sender.send(address);
                }
                lines.lock().expect("log").push(line);
            }
        });
        let address = address
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "the gateway did not say where it listens: {:?}",
                    log.lock().expect("log")
                )
            });
        ServeProcess {
            process,
            address,
            log,
        }
    }

    /// The log lines so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|line| line.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits up to `within` for the process to exit by itself; its exit status, if it did.
    pub fn wait_for_exit(
        &mut self,
        within: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.process.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then waits (up to 15 s) for a clean exit.
    pub fn stop(mut self) {
        let pid = self.process.0.id() as libc::pid_t;
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = self
            .wait_for_exit(std::time::Duration::from_secs(15))
            .expect("the gateway stops on SIGTERM");
        assert!(status.success(), "the gateway stopped cleanly: {status:?}");
    }
}

/// Nothing lost, nothing twice: each refund id a client was told about is in the ledger exactly
/// once (ids are primary keys, so "once" is a count of the distinct ids told), the ledger's
/// running totals agree with its refunds, and `audit verify` passes. On either backend.
pub fn assert_nothing_lost(ledger: &(impl LedgerAt + ?Sized), acknowledged: &[i64]) {
    let database = ledger.database();
    let distinct: std::collections::BTreeSet<i64> = acknowledged.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        acknowledged.len(),
        "no refund id was told to two clients"
    );
    let missing: Vec<i64> = distinct
        .iter()
        .copied()
        .filter(|id| {
            count_in(
                &database,
                &format!("SELECT count(*) FROM refunds WHERE id = {id}"),
            ) != 1
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged refunds are not in the ledger: {missing:?}",
        missing.len(),
        distinct.len()
    );
    assert_ledger_consistent(&database);
    let verify = gateway()
        .args(["audit", "verify", "--db"])
        .arg(db_arg(&database))
        .output()
        .expect("audit verify");
    assert!(
        verify.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// `audit verify` once every audit entry is in the chain: where a leader chains entries after
/// commit (PostgreSQL), that takes moments, so this asks again for up to five seconds while
/// the answer says some are not chained yet. Returns the last answer.
pub async fn verify_once_chained(ledger: &TestLedger) -> std::process::Output {
    let verify = || {
        gateway()
            .args(["audit", "verify", "--db"])
            .arg(ledger.db_arg())
            .output()
            .expect("audit verify")
    };
    let mut answer = verify();
    for _ in 0..100 {
        if !String::from_utf8_lossy(&answer.stdout).contains("not chained yet") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        answer = verify();
    }
    answer
}

/// A REST call with the all-scopes test key that must answer 200; its JSON body.
pub async fn rest_ok(
    base: &str,
    method: reqwest::Method,
    operation: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let response = rest_request(&client(), base, TEST_API_KEY, method, operation, &params)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "{operation}");
    response.json().await.expect("JSON")
}
