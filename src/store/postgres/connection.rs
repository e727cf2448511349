//! Connecting (with the session's timeouts), the per-connection statement cache, and the
//! embedded migrations run under an advisory lock.

use std::collections::HashMap;
use std::time::Duration;

use ::postgres::types::ToSql;
use ::postgres::{Client, NoTls, Row, Statement};
use anyhow::{Context as _, bail};

use crate::store::redacted;

/// Embedded migrations; the table `schema_migrations` holds one row per migration run.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_ledger.sql"),
    include_str!("migrations/0002_webhooks_and_claims.sql"),
    include_str!("migrations/0003_admin.sql"),
];

/// The advisory lock every instance takes while it migrates, so that instances started at once
/// migrate one after another (the later ones find nothing left to do).
pub const MIGRATION_LOCK: i64 = 0x7265_6675_6e64_0001;

/// How long a statement may wait for a row lock, and how long it may run: a request never hangs
/// on the database for longer, and a lock held by a stuck transaction costs a failed request,
/// not a queue of them.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take before the request fails (PostgreSQL down or unreachable).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
     version    integer PRIMARY KEY,
     applied_at timestamptz NOT NULL DEFAULT now())";
pub const SCHEMA_VERSION: &str = "SELECT coalesce(max(version), 0) FROM schema_migrations";
pub const RECORD_MIGRATION: &str = "INSERT INTO schema_migrations (version) VALUES ($1)";
pub const TAKE_MIGRATION_LOCK: &str = "SELECT pg_advisory_lock($1)";
pub const RELEASE_MIGRATION_LOCK: &str = "SELECT pg_advisory_unlock($1)";

/// The statements of this file, for the test that prepares every statement of the adapter.
pub const STATEMENTS: &[&str] = &[
    SCHEMA_VERSION,
    RECORD_MIGRATION,
    TAKE_MIGRATION_LOCK,
    RELEASE_MIGRATION_LOCK,
];

/// Reads a `postgres://` URL into a client configuration with our connect timeout and name.
pub fn config(url: &str) -> anyhow::Result<::postgres::Config> {
    let mut config: ::postgres::Config = url
        .parse()
        .with_context(|| format!("reading the database URL {}", redacted(url)))?;
    // Keepalives and the user timeout notice a peer that vanished (a network partition), so
    // that a session waiting on it fails instead of waiting for TCP's retransmissions.
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(10));
    if config.get_application_name().is_none() {
        config.application_name("refunds-gateway");
    }
    Ok(config)
}

/// A session with the adapter's settings: READ COMMITTED, the lock and statement timeouts, and
/// no NOTICEs ("already exists, skipping" would land in every command's output).
pub fn connect(config: &::postgres::Config) -> anyhow::Result<Client> {
    let mut client = config.connect(NoTls).context("connecting to PostgreSQL")?;
    client
        .batch_execute(&format!(
            "SET lock_timeout = {}; SET statement_timeout = {};
             SET default_transaction_isolation = 'read committed';
             SET client_min_messages = warning;",
            LOCK_TIMEOUT.as_millis(),
            STATEMENT_TIMEOUT.as_millis()
        ))
        .context("configuring the PostgreSQL session")?;
    Ok(client)
}

/// A pooled session and the statements prepared on it.
pub struct Connection {
    pub client: Client,
    /// Between a `BEGIN` and the `COMMIT` or `ROLLBACK` that ended it: a session whose
    /// transaction could not be ended is closed, never pooled.
    pub in_transaction: bool,
    /// Keyed by the address and length of the statement's text: every statement is a `const`,
    /// so this is a pointer comparison, not a hash of the SQL, on each call.
    statements: HashMap<(usize, usize), Statement>,
}

impl Connection {
    pub fn new(client: Client) -> Connection {
        Connection {
            client,
            in_transaction: false,
            statements: HashMap::new(),
        }
    }

    /// The statement for `sql`, prepared on first use (one round trip, once per connection).
    pub fn statement(&mut self, sql: &'static str) -> Result<Statement, ::postgres::Error> {
        let key = (sql.as_ptr() as usize, sql.len());
        if let Some(statement) = self.statements.get(&key) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(key, statement.clone());
        Ok(statement)
    }

    pub fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ::postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query(&statement, params)
    }

    pub fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, ::postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.execute(&statement, params)
    }
}

/// Runs the migrations this binary has not run yet, under the migration lock; refuses a schema
/// newer than this binary knows.
///
/// Waiting for another instance's migration, and a migration itself, may take longer than a
/// request's timeouts, so the session lifts them meanwhile; the lock timeout is back while
/// migrating (a migration that cannot get its table locks fails rather than queue every
/// request behind it).
pub fn migrate(client: &mut Client) -> anyhow::Result<()> {
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .context("lifting the timeouts to wait for the migration lock")?;
    client
        .query_one(TAKE_MIGRATION_LOCK, &[&MIGRATION_LOCK])
        .context("waiting for the migration lock")?;
    let migrated = client
        .batch_execute(&format!("SET lock_timeout = {}", LOCK_TIMEOUT.as_millis()))
        .context("restoring the lock timeout")
        .and_then(|()| migrate_locked(client));
    // The lock is the session's; a failed unlock ends with the session anyway.
    let _ = client.query_one(RELEASE_MIGRATION_LOCK, &[&MIGRATION_LOCK]);
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            STATEMENT_TIMEOUT.as_millis()
        ))
        .context("restoring the statement timeout")?;
    migrated
}

fn migrate_locked(client: &mut Client) -> anyhow::Result<()> {
    client
        .batch_execute(CREATE_MIGRATIONS_TABLE)
        .context("creating the schema_migrations table")?;
    let version: i32 = client
        .query_one(SCHEMA_VERSION, &[])
        .context("reading the schema version")?
        .get(0);
    let version = usize::try_from(version).context("negative schema version")?;
    if version > MIGRATIONS.len() {
        bail!(
            "database schema version {version} is newer than this binary knows ({}); \
             run a newer refunds-gateway",
            MIGRATIONS.len()
        );
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let number = i32::try_from(index + 1).context("too many migrations")?;
        let mut transaction = client.transaction()?;
        transaction
            .batch_execute(migration)
            .with_context(|| format!("running migration {number}"))?;
        transaction
            .execute(RECORD_MIGRATION, &[&number])
            .with_context(|| format!("recording migration {number}"))?;
        transaction
            .commit()
            .with_context(|| format!("committing migration {number}"))?;
        tracing::info!(version = number, "PostgreSQL schema migrated");
    }
    Ok(())
}

/// How many migrations this binary knows.
pub fn known_schema_version() -> usize {
    MIGRATIONS.len()
}
