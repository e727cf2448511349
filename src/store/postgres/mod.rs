//! The PostgreSQL adapter of the ledger port: several gateway instances on one database.
//!
//! The `postgres` crate is synchronous (a wrapper of tokio-postgres that blocks), so every
//! transaction runs on a tokio blocking thread, on a connection from a small pool of our own:
//! at most [`POOL_SIZE`] sessions per instance, and as many transactions at once (a semaphore
//! taken before the blocking thread, so waiting requests queue as futures, not as threads).
//!
//! - **Writes** run `BEGIN` … the work … `COMMIT` in READ COMMITTED. Reads that a rule decides
//!   on take row locks (`FOR UPDATE`, [`ledger`]); the running totals with their CHECKs are kept
//!   by triggers, so over-refunding fails in the database too. A serialization failure, a
//!   deadlock, or a unique violation on `idempotency_keys` (a twin request holding the same key
//!   on another instance) rolls back and runs the whole work again in a fresh transaction,
//!   after a jittered backoff, at most [`MAX_ATTEMPTS`] times.
//! - **Reads** run in `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY` (one snapshot) and end
//!   with `ROLLBACK`.
//! - Audit entries are chained by one leader at a time ([`AuditSealing::ByLeader`]).
//! - Every session sets `lock_timeout` and `statement_timeout` ([`connection`]); a session that
//!   broke (PostgreSQL restarted) is dropped and the next request connects afresh.
//!
//! [`connection`] connects and migrates, [`ledger`] is the port's `Ledger` over SQL,
//! [`maintenance`] what the command line does.

mod connection;
mod ledger;
mod maintenance;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use crate::refunds::ledger::{
    AuditSealing, LedgerFuture, LedgerStore, LedgerUnavailable, LedgerWork,
};
use connection::Connection;
use ledger::PgLedger;

pub use connection::{
    CONNECT_TIMEOUT, LOCK_TIMEOUT, MIGRATION_LOCK, STATEMENT_TIMEOUT, known_schema_version,
};
pub use maintenance::PostgresMaintenance;

/// Sessions per instance, and transactions running at once. Each transaction holds its session
/// for a few round trips; 16 keeps two cores' worth of blocking threads busy while some wait on
/// row locks, and lets several instances share PostgreSQL's default 100 connections.
pub const POOL_SIZE: usize = 16;

/// How many times a write runs before a transient failure is given up on (and answered as an
/// internal error).
pub const MAX_ATTEMPTS: u32 = 8;

/// The longest a caller waits for a transaction, queueing for a slot included. The statement
/// timeout bounds what PostgreSQL does; this bounds what it cannot: a server that stopped
/// answering (frozen, or a network that swallows packets) leaves the request to fail here
/// rather than hang. The transaction's thread goes on until its session fails, and may still
/// commit: a client that retries under its idempotency key gets the stored answer.
pub const TRANSACTION_DEADLINE: Duration = Duration::from_secs(10);

/// Half the longest wait before the first retry; the window doubles with each attempt.
const RETRY_BASE: Duration = Duration::from_millis(4);

/// Every statement the adapter prepares (its ledger, its migrations runner, its maintenance),
/// so that a test can prepare each against the migrated schema and SQL drift fails.
pub fn statements() -> impl Iterator<Item = &'static str> {
    ledger::STATEMENTS
        .iter()
        .chain(connection::STATEMENTS)
        .chain(maintenance::STATEMENTS)
        .copied()
}

/// The PostgreSQL store: a pool of sessions, transactions on blocking threads.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    config: ::postgres::Config,
    idle: Mutex<Vec<Connection>>,
    /// Bounds the transactions running at once, and so the sessions and blocking threads.
    slots: Arc<tokio::sync::Semaphore>,
    /// Set by `close`: sessions coming back from transactions still running are closed.
    closed: AtomicBool,
}

/// A session of the `postgres` crate blocks on its own runtime when dropped, which panics on a
/// thread that drives async tasks; the last reference to the store may well go there (the
/// server's state is dropped on one), so the idle sessions are closed on a thread of their own.
impl Drop for StoreInner {
    fn drop(&mut self) {
        let idle = match self.idle.get_mut() {
            Ok(idle) => std::mem::take(idle),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("ledger-close".to_owned())
                .spawn(move || drop(idle));
        }
    }
}

impl PostgresStore {
    /// Connects to `url` and runs the migrations this binary has not run (under an advisory
    /// lock, so instances started together migrate once).
    pub fn open(url: &str) -> anyhow::Result<PostgresStore> {
        let config = connection::config(url)?;
        let mut client = connection::connect(&config)?;
        connection::migrate(&mut client)?;
        Ok(PostgresStore {
            inner: Arc::new(StoreInner {
                config,
                idle: Mutex::new(vec![Connection::new(client)]),
                slots: Arc::new(tokio::sync::Semaphore::new(POOL_SIZE)),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Runs `transaction` on a blocking thread with a pooled session, once a slot is free;
    /// gives up waiting after [`TRANSACTION_DEADLINE`].
    fn spawn(
        &self,
        work: LedgerWork,
        transaction: fn(&StoreInner, &mut Connection, LedgerWork) -> anyhow::Result<()>,
    ) -> LedgerFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            let ran = tokio::time::timeout(TRANSACTION_DEADLINE, async move {
                let slot = inner
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| anyhow!("the store is closed"))?;
                tokio::task::spawn_blocking(move || {
                    // The slot is the thread's: a transaction given up on by its caller still
                    // counts against the pool until its thread is done.
                    let _slot = slot;
                    // Not reaching PostgreSQL, or losing the session mid-way, is an outage.
                    let mut connection = inner.checkout().context(LedgerUnavailable)?;
                    let result = transaction(&inner, &mut connection, work);
                    let lost = connection.client.is_closed();
                    inner.checkin(connection);
                    match result {
                        Err(error) if lost => Err(error.context(LedgerUnavailable)),
                        result => result,
                    }
                })
                .await
                .map_err(|error| anyhow!("a ledger transaction's thread failed: {error}"))?
            })
            .await;
            ran.unwrap_or_else(|_| {
                Err(anyhow!(
                    "PostgreSQL did not finish a transaction within {TRANSACTION_DEADLINE:?}"
                )
                .context(LedgerUnavailable))
            })
        })
    }
}

impl StoreInner {
    fn checkout(&self) -> anyhow::Result<Connection> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match pooled {
            Some(connection) if !connection.client.is_closed() => Ok(connection),
            _ => Ok(Connection::new(connection::connect(&self.config)?)),
        }
    }

    /// Only a live session outside any transaction goes back to the pool, and only while the
    /// store is open (this runs on the transaction's blocking thread, where dropping is safe).
    fn checkin(&self, connection: Connection) {
        if connection.client.is_closed()
            || connection.in_transaction
            || self.closed.load(Ordering::Acquire)
        {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(connection);
        }
    }

    /// `BEGIN`, retried once on a fresh session when the pooled one turns out to be broken
    /// (PostgreSQL restarted since it was last used); nothing of the work has run yet.
    fn begin(&self, connection: &mut Connection, sql: &str) -> anyhow::Result<()> {
        match connection.client.batch_execute(sql) {
            Ok(()) => {}
            Err(error) if connection.client.is_closed() => {
                tracing::warn!(%error, "a pooled PostgreSQL session had broken; reconnecting");
                *connection = Connection::new(connection::connect(&self.config)?);
                connection
                    .client
                    .batch_execute(sql)
                    .context("beginning a transaction")?;
            }
            Err(error) => {
                return Err(anyhow::Error::from(error).context("beginning a transaction"));
            }
        }
        connection.in_transaction = true;
        Ok(())
    }
}

/// Ends a transaction that must leave nothing behind. A session whose rollback failed stays
/// marked as in a transaction, so it is closed rather than pooled.
fn rollback(connection: &mut Connection) -> anyhow::Result<()> {
    connection
        .client
        .batch_execute("ROLLBACK")
        .context("rolling back a transaction")?;
    connection.in_transaction = false;
    Ok(())
}

/// `COMMIT`. A failed COMMIT ends the transaction too (PostgreSQL rolls it back), so the
/// session is reusable unless it broke.
fn commit(connection: &mut Connection) -> Result<(), ::postgres::Error> {
    let committed = connection.client.batch_execute("COMMIT");
    connection.in_transaction = false;
    committed
}

/// The write runner (contract points 1 to 6).
fn write_transaction(
    inner: &StoreInner,
    connection: &mut Connection,
    mut work: LedgerWork,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        inner.begin(connection, "BEGIN")?;
        let mut ledger = PgLedger::new(connection, true);
        let keep = std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut ledger)));
        let committable = ledger.committable();
        let transient = ledger.state.transient.take();
        let keep = match keep {
            Ok(keep) => keep,
            Err(_) => {
                rollback(connection)?;
                return Err(anyhow!(
                    "a write operation panicked; its changes were rolled back"
                ));
            }
        };
        if let Some(reason) = transient {
            rollback(connection)?;
            if attempt < MAX_ATTEMPTS && started.elapsed() < TRANSACTION_DEADLINE {
                tracing::debug!(attempt, %reason, "a write met a transient failure; running it again");
                std::thread::sleep(backoff(attempt));
                continue;
            }
            return Err(anyhow!(
                "a write failed {attempt} times for a transient reason, the last: {reason}"
            ));
        }
        if !keep {
            return rollback(connection);
        }
        if !committable {
            // COMMIT of an aborted transaction rolls back without an error; say so instead.
            rollback(connection)?;
            return Err(anyhow!(
                "a statement of the write failed and was not undone by its work; nothing was kept"
            ));
        }
        match commit(connection) {
            Ok(()) => return Ok(()),
            Err(error)
                if attempt < MAX_ATTEMPTS
                    && started.elapsed() < TRANSACTION_DEADLINE
                    && is_transient(&error) =>
            {
                std::thread::sleep(backoff(attempt));
            }
            Err(error) => {
                return Err(anyhow::Error::from(error).context("committing a write"));
            }
        }
    }
}

/// The read runner (contract point 7): one snapshot, read-only, nothing locked.
fn read_transaction(
    inner: &StoreInner,
    connection: &mut Connection,
    mut work: LedgerWork,
) -> anyhow::Result<()> {
    inner.begin(
        connection,
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    )?;
    let outcome = {
        let mut ledger = PgLedger::new(connection, false);
        std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut ledger)))
    };
    rollback(connection)?;
    outcome
        .map(|_| ())
        .map_err(|_| anyhow!("a read operation panicked"))
}

fn is_transient(error: &::postgres::Error) -> bool {
    use ::postgres::error::SqlState;
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// Full jitter over an exponential window (after the first attempt up to 8 ms, after the
/// seventh up to 512 ms), so that two transactions that collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let window = RETRY_BASE.saturating_mul(1 << attempt.min(8));
    let random = getrandom::u64().unwrap_or(u64::from(std::process::id()));
    let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random % nanos.max(1))
}

impl LedgerStore for PostgresStore {
    fn run_write(&self, work: LedgerWork) -> LedgerFuture {
        self.spawn(work, write_transaction)
    }

    fn run_read(&self, work: LedgerWork) -> LedgerFuture {
        self.spawn(work, read_transaction)
    }

    /// The same as a short read: every transaction runs on a blocking thread here.
    fn run_scan(&self, work: LedgerWork) -> LedgerFuture {
        self.spawn(work, read_transaction)
    }

    fn audit_sealing(&self) -> AuditSealing {
        AuditSealing::ByLeader
    }

    /// Closes the idle sessions (`close` runs on a blocking thread). Transactions still running
    /// finish on theirs, which are closed when they end.
    fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.slots.close();
        if let Ok(mut idle) = self.inner.idle.lock() {
            idle.clear();
        }
    }
}
