//! SQLite implementation of the ledger.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

use super::Ledger;
use crate::money::{Currency, Money};
use crate::refunds::StoredResponse;
use crate::refunds::audit::{AuditEntry, ChainedEntry, GENESIS};
use crate::refunds::types::{
    ApiKey, ApiUser, JobState, JobStep, LedgerCounts, ManualDetails, MovementId, NewRefund, Order,
    Payment, Refund, RefundJob, RefundMethod, RefundStatus, Scopes, Settlement, Source,
    SourceFilter, SourceRef, SourceType, Timestamp,
};
use crate::shop::ShopData;

/// Embedded migrations; `PRAGMA user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_ledger.sql"),
    include_str!("migrations/0002_api_keys.sql"),
    include_str!("migrations/0003_outbox.sql"),
    include_str!("migrations/0004_trust.sql"),
    include_str!("migrations/0005_counts.sql"),
    include_str!("migrations/0006_triggers_without_in_lists.sql"),
    include_str!("migrations/0007_ledger_runs.sql"),
    include_str!("migrations/0008_refunded_claims_keep_identity.sql"),
    include_str!("migrations/0009_logins_without_colon.sql"),
];

pub fn open_writer(path: &Path) -> anyhow::Result<Connection> {
    let connection =
        Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -32768;
             PRAGMA journal_size_limit = 67108864;",
        )
        .context("configuring the database connection")?;
    Ok(connection)
}

pub fn open_reader(path: &Path) -> anyhow::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening database {} for reading", path.display()))?;
    connection
        .execute_batch("PRAGMA busy_timeout = 5000;")
        .context("configuring a read connection")?;
    Ok(connection)
}

pub fn migrate(connection: &mut Connection) -> anyhow::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let version = usize::try_from(version).context("negative schema version")?;
    if version > MIGRATIONS.len() {
        bail!(
            "database schema version {version} is newer than this binary knows ({})",
            MIGRATIONS.len()
        );
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        transaction
            .execute_batch(migration)
            .with_context(|| format!("running migration {}", index + 1))?;
        transaction.pragma_update(None, "user_version", (index + 1) as i64)?;
    }
    transaction.commit().context("committing migrations")?;
    Ok(())
}

/// How to answer one write of a batch once the batch's commit has succeeded or failed.
pub type Completion = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// One request's write as the writer thread runs it inside a batch's transaction.
pub type BatchedWrite = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// Group commit: runs every write of `batch` in one `BEGIN IMMEDIATE` transaction, each in its
/// own savepoint (so a failed or panicking write leaves no trace and the others stand), commits
/// once, and only then answers each write. One fsync serves the whole batch.
///
/// `verify` runs after a successful commit and before any answer: an `Err` from it turns the
/// batch's answers into failures (the writer checks there that its files are still on disk).
pub fn run_batch(
    connection: &mut Connection,
    batch: Vec<BatchedWrite>,
    verify: impl FnOnce(&Connection) -> Result<(), String>,
) {
    let transaction = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(error) => {
            // Nothing ran. Dropping the writes drops their reply channels, which their callers
            // see as an internal failure.
            tracing::error!(%error, writes = batch.len(), "a write batch could not begin");
            return;
        }
    };
    let completions: Vec<Completion> = batch.into_iter().map(|write| write(&transaction)).collect();
    let committed = transaction
        .commit()
        .map_err(|error| format!("committing a write batch: {error}"))
        .and_then(|()| verify(connection));
    if let Err(reason) = &committed {
        tracing::error!(%reason, writes = completions.len(), "a write batch was rolled back");
    }
    for complete in completions {
        complete(committed.as_ref().map(|_| ()).map_err(String::as_str));
    }
}

/// How far the id sequence moves at a start after a run that did not close the ledger: more
/// ids than the refunds a write-ahead log holds between two checkpoints (1 000 pages), so that
/// no id acknowledged by the lost run can come back.
pub const ID_GAP_AFTER_UNCLEAN_RUN: i64 = 1_000_000;

/// Marks the ledger open by a `serve` process. If the last run did not close it, moves the
/// movements sequence forward by [`ID_GAP_AFTER_UNCLEAN_RUN`] and returns the new floor.
pub fn begin_run(connection: &mut Connection) -> anyhow::Result<Option<i64>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let was_open: bool =
        transaction.query_row("SELECT open FROM ledger_runs WHERE id = 1", [], |row| {
            row.get(0)
        })?;
    let mut floor = None;
    if was_open {
        let highest: i64 = transaction.query_row(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'movements'), 0),
                        coalesce((SELECT max(id) FROM movements), 0))",
            [],
            |row| row.get(0),
        )?;
        let moved = highest.saturating_add(ID_GAP_AFTER_UNCLEAN_RUN);
        let updated = transaction.execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'movements'",
            [moved],
        )?;
        if updated == 0 {
            transaction.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('movements', ?1)",
                [moved],
            )?;
        }
        floor = Some(moved);
    }
    transaction.execute("UPDATE ledger_runs SET open = 1 WHERE id = 1", [])?;
    transaction.commit().context("marking the ledger open")?;
    Ok(floor)
}

/// Marks the ledger closed cleanly by the writer that opened it.
pub fn end_run(connection: &mut Connection) -> anyhow::Result<()> {
    connection
        .execute("UPDATE ledger_runs SET open = 0 WHERE id = 1", [])
        .context("marking the ledger closed")?;
    Ok(())
}

/// Copies every committed frame of the WAL the connection holds open (linked or not) into the
/// database file and syncs it. `Err` unless all of them were copied.
pub fn checkpoint_into_database(connection: &Connection) -> anyhow::Result<()> {
    let (busy, log, checkpointed): (i64, i64, i64) = connection
        .query_row("PRAGMA wal_checkpoint(FULL)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .context("checkpointing the write-ahead log")?;
    if busy != 0 || checkpointed != log {
        bail!("the checkpoint copied {checkpointed} of {log} frames (busy: {busy})");
    }
    Ok(())
}

/// A copy of everything the connection sees, committed, at `target` (`VACUUM INTO`).
pub fn rescue_copy(connection: &Connection, target: &Path) -> anyhow::Result<()> {
    let target = target.to_str().context("the rescue path is not UTF-8")?;
    connection
        .execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("copying the ledger to {target}"))?;
    Ok(())
}

/// Runs `work` in a savepoint of the batch's transaction: released when it returns `Ok`,
/// rolled back when it returns `Err` or panics.
pub fn in_savepoint<T, E, F>(connection: &Connection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut dyn Ledger) -> Result<T, E>,
    E: From<anyhow::Error>,
{
    run_cached(connection, "SAVEPOINT write").context("opening a write savepoint")?;
    let outcome = {
        let mut ledger = SqliteLedger { connection };
        std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut ledger)))
    };
    let (outcome, keep) = match outcome {
        Ok(Ok(value)) => (Ok(value), true),
        Ok(Err(error)) => (Err(error), false),
        Err(_) => (
            Err(anyhow!("a write operation panicked; its changes were rolled back").into()),
            false,
        ),
    };
    if !keep {
        run_cached(connection, "ROLLBACK TO write").context("undoing a write savepoint")?;
    }
    run_cached(connection, "RELEASE write").context("closing a write savepoint")?;
    outcome
}

pub fn in_read_transaction<T, E, F>(connection: &mut Connection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut dyn Ledger) -> Result<T, E>,
    E: From<anyhow::Error>,
{
    // Prepared once per connection: parsing `BEGIN` and `ROLLBACK` again for every read costs
    // more than a point read itself.
    run_cached(connection, "BEGIN DEFERRED").context("beginning a read transaction")?;
    let outcome = {
        let mut ledger = SqliteLedger {
            connection: &*connection,
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut ledger)))
    };
    // A read changes nothing, so ending it either way is the same; ROLLBACK also ends it when
    // `work` failed halfway through a statement.
    if let Err(error) = run_cached(connection, "ROLLBACK") {
        tracing::error!(%error, "ending a read transaction");
        // A connection whose transaction is still open would serve a stale snapshot later.
        if !connection.is_autocommit() {
            return Err(anyhow!("a read transaction could not be ended: {error}").into());
        }
    }
    match outcome {
        Ok(result) => result,
        Err(_) => Err(anyhow!("a read operation panicked").into()),
    }
}

fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(|_| ())
}

struct SqliteLedger<'c> {
    connection: &'c Connection,
}

fn currency(code: &str) -> rusqlite::Result<Currency> {
    Currency::parse(code).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("stored currency '{code}' is not an ISO 4217 code").into(),
        )
    })
}

fn conversion_error(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, message.into())
}

const ORDER_COLUMNS: &str = "id, currency, fulfilled, paid_minor, refunded_minor";

fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: row.get(0)?,
        currency: currency(&row.get::<_, String>(1)?)?,
        fulfilled: row.get(2)?,
        paid_minor: row.get(3)?,
        refunded_minor: row.get(4)?,
    })
}

const PAYMENT_COLUMNS: &str = "id, order_id, amount_minor, currency, payment_form_id, \
     payment_system, auto_refund, external_transaction_id, paid_at, refunded_minor";

fn payment_from_row(row: &Row<'_>) -> rusqlite::Result<Payment> {
    Ok(Payment {
        id: row.get(0)?,
        order_id: row.get(1)?,
        amount: Money {
            minor: row.get(2)?,
            currency: currency(&row.get::<_, String>(3)?)?,
        },
        payment_form_id: row.get(4)?,
        payment_system: row.get(5)?,
        auto_refund: row.get(6)?,
        external_transaction_id: row.get(7)?,
        paid_at: row.get(8)?,
        refunded_minor: row.get(9)?,
    })
}

const REFUND_COLUMNS: &str = "id, order_id, source_type, source_id, method, payment_id, \
     amount_minor, currency, status, payment_form_id, payment_system, account, client_account, \
     created_at, created_by, confirmed_at, external_id";

fn refund_from_row(row: &Row<'_>) -> rusqlite::Result<Refund> {
    let source_type: String = row.get(2)?;
    let source_type = SourceType::parse(&source_type)
        .ok_or_else(|| conversion_error(format!("stored source type '{source_type}'")))?;
    let method: String = row.get(4)?;
    let payment_id: Option<i64> = row.get(5)?;
    let method = match (method.as_str(), payment_id) {
        ("automatic", Some(payment_id)) => RefundMethod::Automatic { payment_id },
        ("manual", None) => RefundMethod::Manual,
        _ => return Err(conversion_error(format!("stored refund method '{method}'"))),
    };
    let status: String = row.get(8)?;
    let status = RefundStatus::parse(&status)
        .ok_or_else(|| conversion_error(format!("stored refund status '{status}'")))?;
    let payment_form_id: Option<i64> = row.get(9)?;
    let details = match payment_form_id {
        Some(payment_form_id) => Some(ManualDetails {
            payment_form_id,
            payment_system: row.get(10)?,
            account: row.get(11)?,
            client_account: row.get(12)?,
        }),
        None => None,
    };
    Ok(Refund {
        id: row.get(0)?,
        order_id: row.get(1)?,
        source: SourceRef {
            source_type,
            id: row.get(3)?,
        },
        method,
        amount: Money {
            minor: row.get(6)?,
            currency: currency(&row.get::<_, String>(7)?)?,
        },
        status,
        details,
        created_at: row.get(13)?,
        created_by: row.get(14)?,
        confirmed_at: row.get(15)?,
        external_id: row.get(16)?,
    })
}

impl Ledger for SqliteLedger<'_> {
    fn order(&mut self, order_id: i64) -> anyhow::Result<Option<Order>> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
        let mut statement = self.connection.prepare_cached(&sql)?;
        Ok(statement.query_row([order_id], order_from_row).optional()?)
    }

    fn payment(&mut self, payment_id: MovementId) -> anyhow::Result<Option<Payment>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1");
        let mut statement = self.connection.prepare_cached(&sql)?;
        Ok(statement
            .query_row([payment_id], payment_from_row)
            .optional()?)
    }

    fn order_payments(&mut self, order_id: i64) -> anyhow::Result<Vec<Payment>> {
        // Sorted here, not by `ORDER BY`: with an ORDER BY over the index this query uses,
        // SQLite re-plans the statement each time `?1` is bound, which costs several times
        // the query itself (a test below checks that no hot read is re-planned).
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = ?1");
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map([order_id], payment_from_row)?;
        let mut payments: Vec<Payment> = rows.collect::<Result<_, _>>()?;
        payments.sort_by_key(|payment| (payment.paid_at, payment.id));
        Ok(payments)
    }

    fn source(&mut self, source: SourceRef) -> anyhow::Result<Option<Source>> {
        let claim_table = match source.source_type {
            SourceType::Order => {
                let order = self.order(source.id)?;
                return Ok(order.map(|order| Source {
                    source,
                    outstanding_minor: order.refundable_minor(),
                    order,
                }));
            }
            SourceType::Return => "returns",
            SourceType::Rma => "rmas",
        };
        let sql = format!(
            "SELECT order_id, value_minor - refunded_minor FROM {claim_table} WHERE id = ?1"
        );
        let mut statement = self.connection.prepare_cached(&sql)?;
        let claim = statement
            .query_row([source.id], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .optional()?;
        let Some((order_id, outstanding_minor)) = claim else {
            return Ok(None);
        };
        let order = self.order(order_id)?.with_context(|| {
            format!("{claim_table} {} names missing order {order_id}", source.id)
        })?;
        Ok(Some(Source {
            source,
            order,
            outstanding_minor,
        }))
    }

    fn refund(&mut self, refund_id: MovementId) -> anyhow::Result<Option<Refund>> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = ?1");
        let mut statement = self.connection.prepare_cached(&sql)?;
        Ok(statement
            .query_row([refund_id], refund_from_row)
            .optional()?)
    }

    fn payment_form_exists(&mut self, payment_form_id: i64) -> anyhow::Result<bool> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT 1 FROM payment_forms WHERE id = ?1")?;
        Ok(statement.exists([payment_form_id])?)
    }

    fn unapproved_refunds(
        &mut self,
        filter: SourceFilter,
        offset: u64,
        limit: u32,
    ) -> anyhow::Result<(u64, Vec<Refund>)> {
        // SQLite re-plans a statement at every bind when a bound value takes part in planning:
        // whether the partial index of unapproved refunds applies, or a bare `LIMIT ?`. So the
        // source type is written into the statement (one of three words of ours, never the
        // caller's text), and the limit and offset are expressions (`?1 + 0`) the planner
        // leaves alone.
        let (count_sql, page_sql) = match filter {
            SourceFilter::Only(source_type) => {
                let word = source_type.as_str();
                (
                    format!(
                        "SELECT n FROM refund_counts WHERE status = 'New' AND source_type = '{word}'"
                    ),
                    format!(
                        "SELECT {REFUND_COLUMNS} FROM refunds
                         WHERE status = 'New' AND source_type = '{word}'
                         ORDER BY id LIMIT ?1 + 0 OFFSET ?2 + 0"
                    ),
                )
            }
            SourceFilter::All => (
                "SELECT sum(n) FROM refund_counts WHERE status = 'New'".to_owned(),
                format!(
                    "SELECT {REFUND_COLUMNS} FROM refunds WHERE status = 'New'
                     ORDER BY id LIMIT ?1 + 0 OFFSET ?2 + 0"
                ),
            ),
        };
        let total: i64 = self
            .connection
            .prepare_cached(&count_sql)?
            .query_row([], |row| row.get(0))?;
        let offset = i64::try_from(offset).context("page offset out of range")?;
        let rows = self
            .connection
            .prepare_cached(&page_sql)?
            .query_map(params![limit, offset], refund_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let total = u64::try_from(total).context("negative count")?;
        Ok((total, rows))
    }

    fn api_user(&mut self, login: &str) -> anyhow::Result<Option<ApiUser>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT login, password_sha1, scopes FROM api_users WHERE login = ?1",
        )?;
        let row = statement
            .query_row([login], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        row.map(|(login, password_sha1_hex, scopes)| {
            let scopes = Scopes::parse(&scopes)
                .with_context(|| format!("stored scopes '{scopes}' of user {login}"))?;
            Ok(ApiUser {
                login,
                password_sha1_hex,
                scopes,
            })
        })
        .transpose()
    }

    fn api_key(&mut self, key_sha256: &str) -> anyhow::Result<Option<ApiKey>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT name, scopes, created_at, revoked_at FROM api_keys WHERE key_sha256 = ?1",
        )?;
        statement
            .query_row([key_sha256], api_key_from_row)
            .optional()?
            .transpose()
    }

    fn counts(&mut self) -> anyhow::Result<LedgerCounts> {
        let mut refunds_by_status = Vec::new();
        let mut statement = self
            .connection
            .prepare_cached("SELECT coalesce(sum(n), 0) FROM refund_counts WHERE status = ?1")?;
        for status in ["New", "Processing", "Completed", "Failed", "Canceled"] {
            refunds_by_status.push((
                status.to_owned(),
                statement.query_row([status], |row| row.get(0))?,
            ));
        }
        let outbox_pending = self
            .connection
            .prepare_cached("SELECT count(*) FROM outbox WHERE state <> 'done'")?
            .query_row([], |row| row.get(0))?;
        Ok(LedgerCounts {
            refunds_by_status,
            outbox_pending,
        })
    }

    fn audit_head(&mut self) -> anyhow::Result<String> {
        let head: Option<String> = self
            .connection
            .prepare_cached("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
            .query_row([], |row| row.get(0))
            .optional()?;
        Ok(head.unwrap_or_else(|| GENESIS.to_owned()))
    }

    fn append_audit(
        &mut self,
        entry: &AuditEntry,
        prev_hash: &str,
        hash: &str,
    ) -> anyhow::Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO audit_log (at, actor, channel, operation, refund_id, status_before,
                     status_after, amount_before, amount_after, currency, request_id, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                entry.at,
                entry.actor,
                entry.channel,
                entry.operation,
                entry.refund_id,
                entry.status_before,
                entry.status_after,
                entry.amount_before,
                entry.amount_after,
                entry.currency,
                entry.request_id,
                prev_hash,
                hash
            ])
            .context("appending to the audit trail")?;
        Ok(())
    }

    fn idempotent_answer(
        &mut self,
        principal: &str,
        key: &str,
    ) -> anyhow::Result<Option<(String, StoredResponse)>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT request_hash, status, content_type, body FROM idempotency_keys
             WHERE principal = ?1 AND key = ?2",
        )?;
        Ok(statement
            .query_row([principal, key], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    StoredResponse {
                        status: row.get(1)?,
                        content_type: row.get(2)?,
                        body: row.get(3)?,
                    },
                ))
            })
            .optional()?)
    }

    fn remember_answer(
        &mut self,
        principal: &str,
        key: &str,
        request_digest: &str,
        answer: &StoredResponse,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO idempotency_keys (principal, key, request_hash, status, content_type, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![principal, key, request_digest, answer.status, answer.content_type, answer.body, now])
            .context("remembering an idempotent answer")?;
        Ok(())
    }

    fn forget_expired_answer(
        &mut self,
        principal: &str,
        key: &str,
        at: Timestamp,
    ) -> anyhow::Result<()> {
        self.connection
            .prepare_cached(
                "DELETE FROM idempotency_keys WHERE principal = ?1 AND key = ?2 AND created_at <= ?3",
            )?
            .execute(params![principal, key, at])
            .context("forgetting an expired idempotent answer")?;
        Ok(())
    }

    fn purge_answers(&mut self, before: Timestamp) -> anyhow::Result<u64> {
        let purged = self
            .connection
            .prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?
            .execute([before])?;
        Ok(purged as u64)
    }

    fn savepoint(&mut self) -> anyhow::Result<()> {
        run_cached(self.connection, "SAVEPOINT operation")?;
        Ok(())
    }

    fn release_savepoint(&mut self) -> anyhow::Result<()> {
        run_cached(self.connection, "RELEASE operation")?;
        Ok(())
    }

    fn rollback_to_savepoint(&mut self) -> anyhow::Result<()> {
        run_cached(self.connection, "ROLLBACK TO operation")?;
        run_cached(self.connection, "RELEASE operation")?;
        Ok(())
    }

    fn enqueue_job(
        &mut self,
        refund_id: MovementId,
        operator: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO outbox (refund_id, operator, state, next_attempt_ms, created_ms, updated_ms)
                 VALUES (?1, ?2, 'send', ?3, ?3, ?3)",
            )?
            .execute(params![refund_id, operator, now_ms])
            .context("adding an outbox job")?;
        Ok(())
    }

    fn claim_due_jobs(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<RefundJob>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM {JOB_FROM}
             WHERE o.state <> 'done' AND o.next_attempt_ms <= ?1
             ORDER BY o.next_attempt_ms, o.refund_id LIMIT ?2"
        );
        let jobs: Vec<RefundJob> = self
            .connection
            .prepare_cached(&sql)?
            .query_map(params![now_ms, limit], job_from_row)?
            .collect::<Result<_, _>>()?;
        // A claimed send may reach the operator even if this worker dies before recording the
        // answer, so whoever takes the job after the lease asks for the status first.
        let mut lease = self.connection.prepare_cached(
            "UPDATE outbox SET next_attempt_ms = ?2, updated_ms = ?3,
                 state = CASE state WHEN 'send' THEN 'query' ELSE state END
             WHERE refund_id = ?1",
        )?;
        for job in &jobs {
            lease.execute(params![job.refund_id, now_ms + lease_ms, now_ms])?;
        }
        Ok(jobs)
    }

    fn job(&mut self, refund_id: MovementId) -> anyhow::Result<Option<RefundJob>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE o.refund_id = ?1");
        Ok(self
            .connection
            .prepare_cached(&sql)?
            .query_row([refund_id], job_from_row)
            .optional()?)
    }

    fn record_job_step(&mut self, step: &JobStep, now_ms: i64) -> anyhow::Result<()> {
        let changed = self
            .connection
            .prepare_cached(
                "UPDATE outbox SET state = ?2, attempts = ?3, next_attempt_ms = ?4, last_error = ?5,
                     updated_ms = ?6
                 WHERE refund_id = ?1 AND state <> 'done'",
            )?
            .execute(params![
                step.refund_id,
                step.state.as_str(),
                step.attempts,
                step.next_attempt_ms,
                step.last_error,
                now_ms
            ])?;
        if changed != 1 {
            bail!("outbox job {} is missing or already done", step.refund_id);
        }
        Ok(())
    }

    fn settle(&mut self, refund_id: MovementId, settlement: &Settlement) -> anyhow::Result<()> {
        let changed = match settlement {
            Settlement::Completed { external_id } => self
                .connection
                .prepare_cached(
                    "UPDATE refunds SET status = 'Completed', external_id = ?2
                     WHERE id = ?1 AND status = 'Processing'",
                )?
                .execute(params![refund_id, external_id])?,
            Settlement::Failed { .. } => self
                .connection
                .prepare_cached(
                    "UPDATE refunds SET status = 'Failed' WHERE id = ?1 AND status = 'Processing'",
                )?
                .execute([refund_id])?,
        };
        ensure_one_row(changed, refund_id)
    }

    fn reserve_refund(&mut self, refund: &NewRefund) -> anyhow::Result<MovementId> {
        self.connection
            .prepare_cached("INSERT INTO movements (kind) VALUES ('refund')")?
            .execute([])?;
        let id = self.connection.last_insert_rowid();
        let (method, payment_id) = match refund.method {
            RefundMethod::Automatic { payment_id } => ("automatic", Some(payment_id)),
            RefundMethod::Manual => ("manual", None),
        };
        let details = refund.details.as_ref();
        self.connection
            .prepare_cached(
                "INSERT INTO refunds (id, order_id, source_type, source_id, method, payment_id,
                     amount_minor, currency, status, payment_form_id, payment_system, account,
                     client_account, created_at, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'New', ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                id,
                refund.order_id,
                refund.source.source_type.as_str(),
                refund.source.id,
                method,
                payment_id,
                refund.amount.minor,
                refund.amount.currency.code(),
                details.map(|d| d.payment_form_id),
                details.and_then(|d| d.payment_system),
                details.and_then(|d| d.account.as_deref()),
                details.and_then(|d| d.client_account.as_deref()),
                refund.created_at,
                refund.created_by,
            ])
            .context("inserting a refund")?;
        Ok(id)
    }

    fn change_reserved_amount(&mut self, refund_id: MovementId, minor: i64) -> anyhow::Result<()> {
        let changed = self
            .connection
            .prepare_cached(
                "UPDATE refunds SET amount_minor = ?2 WHERE id = ?1 AND status = 'New'",
            )?
            .execute(params![refund_id, minor])?;
        ensure_one_row(changed, refund_id)
    }

    fn confirm(
        &mut self,
        refund_id: MovementId,
        status: RefundStatus,
        at: Timestamp,
    ) -> anyhow::Result<()> {
        let changed = self
            .connection
            .prepare_cached(
                "UPDATE refunds SET status = ?2, confirmed_at = ?3 WHERE id = ?1 AND status = 'New'",
            )?
            .execute(params![refund_id, status.as_str(), at])?;
        ensure_one_row(changed, refund_id)
    }

    fn cancel(&mut self, refund_id: MovementId) -> anyhow::Result<()> {
        let changed = self
            .connection
            .prepare_cached(
                "UPDATE refunds SET status = 'Canceled' WHERE id = ?1 AND status = 'New'",
            )?
            .execute([refund_id])?;
        ensure_one_row(changed, refund_id)
    }
}

const JOB_COLUMNS: &str = "o.refund_id, o.operator, o.state, o.attempts, o.next_attempt_ms, \
     o.last_error, o.created_ms, p.external_transaction_id, r.amount_minor, r.currency";

const JOB_FROM: &str =
    "outbox o JOIN refunds r ON r.id = o.refund_id JOIN payments p ON p.id = r.payment_id";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<RefundJob> {
    let state: String = row.get(2)?;
    let state = JobState::parse(&state)
        .ok_or_else(|| conversion_error(format!("stored job state '{state}'")))?;
    Ok(RefundJob {
        refund_id: row.get(0)?,
        operator: row.get(1)?,
        state,
        attempts: row.get(3)?,
        next_attempt_ms: row.get(4)?,
        last_error: row.get(5)?,
        created_ms: row.get(6)?,
        payment_external_id: row.get::<_, Option<String>>(7)?.unwrap_or_default(),
        amount: Money {
            minor: row.get(8)?,
            currency: currency(&row.get::<_, String>(9)?)?,
        },
    })
}

fn ensure_one_row(changed: usize, refund_id: MovementId) -> anyhow::Result<()> {
    if changed != 1 {
        bail!("refund {refund_id} was not in the state its change expects ({changed} rows)");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub payment_forms: usize,
    pub orders: usize,
    pub payments: usize,
    pub returns: usize,
    pub rmas: usize,
}

pub fn import_shop(connection: &mut Connection, shop: &ShopData) -> anyhow::Result<ImportSummary> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (index, form) in shop.payment_forms.iter().enumerate() {
        transaction
            .execute(
                "INSERT INTO payment_forms (id, name) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                params![form.payment_form_id, form.name],
            )
            .with_context(|| format!("paymentForms[{index}]"))?;
    }
    let mut payments = 0;
    for (order_index, order) in shop.orders.iter().enumerate() {
        let at = || format!("orders[{order_index}] (orderId {})", order.order_id);
        transaction
            .execute(
                "INSERT INTO orders (id, currency, fulfilled) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET currency = excluded.currency,
                     fulfilled = excluded.fulfilled",
                params![order.order_id, order.currency.code(), order.fulfilled],
            )
            .with_context(at)?;
        for (payment_index, payment) in order.payments.iter().enumerate() {
            let at = || {
                format!(
                    "orders[{order_index}].payments[{payment_index}] (paymentId {})",
                    payment.payment_id
                )
            };
            transaction
                .execute(
                    "INSERT INTO movements (id, kind) VALUES (?1, 'payment')
                     ON CONFLICT (id) DO NOTHING",
                    [payment.payment_id],
                )
                .with_context(at)?;
            let kind: String = transaction
                .query_row(
                    "SELECT kind FROM movements WHERE id = ?1",
                    [payment.payment_id],
                    |r| r.get(0),
                )
                .with_context(at)?;
            if kind != "payment" {
                bail!("{}: paymentId is already the id of a refund", at());
            }
            transaction
                .execute(
                    "INSERT INTO payments (id, order_id, amount_minor, currency, payment_form_id,
                         payment_system, auto_refund, external_transaction_id, paid_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (id) DO UPDATE SET order_id = excluded.order_id,
                         amount_minor = excluded.amount_minor, currency = excluded.currency,
                         payment_form_id = excluded.payment_form_id,
                         payment_system = excluded.payment_system,
                         auto_refund = excluded.auto_refund,
                         external_transaction_id = excluded.external_transaction_id,
                         paid_at = excluded.paid_at",
                    params![
                        payment.payment_id,
                        order.order_id,
                        payment.amount.minor,
                        payment.amount.currency.code(),
                        payment.payment_form_id,
                        payment.payment_system,
                        payment.auto_refund,
                        payment.external_transaction_id,
                        payment.paid_at,
                    ],
                )
                .with_context(at)?;
            payments += 1;
        }
    }
    for (table, field, claims) in [
        ("returns", "returns", &shop.returns),
        ("rmas", "rmas", &shop.rmas),
    ] {
        for (index, claim) in claims.iter().enumerate() {
            let at = || format!("{field}[{index}] (id {})", claim.id);
            let order_currency: Option<String> = transaction
                .query_row(
                    "SELECT currency FROM orders WHERE id = ?1",
                    [claim.order_id],
                    |r| r.get(0),
                )
                .optional()
                .with_context(at)?;
            match order_currency {
                None => bail!("{}: orderId {} is not a known order", at(), claim.order_id),
                Some(code) if code != claim.value.currency.code() => bail!(
                    "{}: currency {} differs from the order's currency {code}",
                    at(),
                    claim.value.currency
                ),
                Some(_) => {}
            }
            check_refunded_claim(&transaction, table, claim)
                .map_err(|why| anyhow!("{}: {why}", at()))?;
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {table} (id, order_id, value_minor, currency)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (id) DO UPDATE SET order_id = excluded.order_id,
                             value_minor = excluded.value_minor, currency = excluded.currency"
                    ),
                    params![
                        claim.id,
                        claim.order_id,
                        claim.value.minor,
                        claim.value.currency.code()
                    ],
                )
                .with_context(at)?;
        }
    }
    transaction.commit().context("committing the import")?;
    Ok(ImportSummary {
        payment_forms: shop.payment_forms.len(),
        orders: shop.orders.len(),
        payments,
        returns: shop.returns.len(),
        rmas: shop.rmas.len(),
    })
}

/// Refuses to re-import a return or claim that has refunds onto another order or currency, or
/// below what is refunded from it (the triggers of migration 0008 and the `CHECK` constraints
/// refuse it too; this says why in the import's own words).
fn check_refunded_claim(
    connection: &Connection,
    table: &str,
    claim: &crate::shop::ShopClaim,
) -> anyhow::Result<()> {
    let source_type = if table == "returns" { "return" } else { "rma" };
    let stored: Option<(i64, String, i64, bool)> = connection
        .query_row(
            &format!(
                "SELECT order_id, currency, refunded_minor,
                        EXISTS (SELECT 1 FROM refunds WHERE source_type = ?2 AND source_id = ?1)
                 FROM {table} WHERE id = ?1"
            ),
            params![claim.id, source_type],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    let Some((order_id, currency, refunded_minor, has_refunds)) = stored else {
        return Ok(());
    };
    if has_refunds && order_id != claim.order_id {
        bail!(
            "it has refunds, so it stays on order {order_id} (not {})",
            claim.order_id
        );
    }
    if has_refunds && currency != claim.value.currency.code() {
        bail!(
            "it has refunds, so it stays in {currency} (not {})",
            claim.value.currency
        );
    }
    if claim.value.minor < refunded_minor {
        let currency = claim.value.currency;
        bail!(
            "value {} {currency} is below the {} {currency} already refunded from it",
            claim.value.to_decimal(),
            crate::money::minor_to_decimal(refunded_minor, currency)
        );
    }
    Ok(())
}

pub fn put_api_user(
    connection: &mut Connection,
    user: &ApiUser,
    now: Timestamp,
) -> anyhow::Result<()> {
    connection
        .execute(
            "INSERT INTO api_users (login, password_sha1, scopes, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (login) DO UPDATE SET password_sha1 = excluded.password_sha1,
                 scopes = excluded.scopes",
            params![user.login, user.password_sha1_hex, user.scopes.to_list(), now],
        )
        .context("saving the API user")?;
    Ok(())
}

pub fn is_empty(connection: &mut Connection) -> anyhow::Result<bool> {
    let orders: i64 = connection.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))?;
    Ok(orders == 0)
}

type ApiKeyRow = anyhow::Result<ApiKey>;

fn api_key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    let name: String = row.get(0)?;
    let scopes: String = row.get(1)?;
    let created_at = row.get(2)?;
    let revoked_at = row.get(3)?;
    Ok(Scopes::parse(&scopes)
        .with_context(|| format!("stored scopes '{scopes}' of API key {name}"))
        .map(|scopes| ApiKey {
            name,
            scopes,
            created_at,
            revoked_at,
        }))
}

pub fn create_api_key(
    connection: &mut Connection,
    name: &str,
    key_sha256: &str,
    scopes: Scopes,
    now: Timestamp,
) -> anyhow::Result<()> {
    let taken: bool = connection
        .prepare("SELECT 1 FROM api_keys WHERE name = ?1")?
        .exists([name])?;
    if taken {
        bail!("an API key named '{name}' already exists (revoked keys keep their names)");
    }
    connection
        .execute(
            "INSERT INTO api_keys (name, key_sha256, scopes, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, key_sha256, scopes.to_list(), now],
        )
        .context("saving the API key")?;
    Ok(())
}

pub fn api_keys(connection: &mut Connection) -> anyhow::Result<Vec<ApiKey>> {
    let mut statement = connection.prepare(
        "SELECT name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at, name",
    )?;
    let rows = statement.query_map([], api_key_from_row)?;
    rows.map(|row| row?).collect()
}

pub fn revoke_api_key(
    connection: &mut Connection,
    name: &str,
    now: Timestamp,
) -> anyhow::Result<bool> {
    let changed = connection.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        params![name, now],
    )?;
    Ok(changed == 1)
}

pub fn jobs(connection: &mut Connection, include_done: bool) -> anyhow::Result<Vec<RefundJob>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE ?1 OR o.state <> 'done' ORDER BY o.refund_id"
    );
    let mut statement = connection.prepare(&sql)?;
    let rows = statement.query_map([include_done], job_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn audit_entries(
    connection: &mut Connection,
    refund_id: Option<MovementId>,
) -> anyhow::Result<Vec<ChainedEntry>> {
    let mut statement = connection.prepare(
        "SELECT seq, at, actor, channel, operation, refund_id, status_before, status_after,
             amount_before, amount_after, currency, request_id, prev_hash, hash
         FROM audit_log WHERE ?1 IS NULL OR refund_id = ?1 ORDER BY seq",
    )?;
    let rows = statement.query_map([refund_id], |row| {
        Ok(ChainedEntry {
            seq: row.get(0)?,
            entry: AuditEntry {
                at: row.get(1)?,
                actor: row.get(2)?,
                channel: row.get(3)?,
                operation: row.get(4)?,
                refund_id: row.get(5)?,
                status_before: row.get(6)?,
                status_after: row.get(7)?,
                amount_before: row.get(8)?,
                amount_after: row.get(9)?,
                currency: row.get(10)?,
                request_id: row.get(11)?,
            },
            prev_hash: row.get(12)?,
            hash: row.get(13)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn backup(connection: &mut Connection, target: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!target.exists(), "{} already exists", target.display());
    let target = target.to_str().context("the backup path is not UTF-8")?;
    connection
        .execute("VACUUM INTO ?1", [target])
        .context("copying the database")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A write that adds payment form `id` and then succeeds, fails, or panics.
    fn write(
        id: i64,
        ending: &'static str,
        answers: mpsc::Sender<(i64, Result<(), String>)>,
    ) -> BatchedWrite {
        Box::new(move |connection| {
            let outcome: Result<(), anyhow::Error> = in_savepoint(connection, |_ledger| {
                connection.execute(
                    "INSERT INTO payment_forms (id, name) VALUES (?1, 'x')",
                    [id],
                )?;
                match ending {
                    "fail" => Err(anyhow!("refused")),
                    "panic" => panic!("a bug"),
                    _ => Ok(()),
                }
            });
            Box::new(move |committed| {
                let result = committed
                    .map_err(str::to_owned)
                    .and(outcome.map_err(|e| e.to_string()));
                let _ = answers.send((id, result));
            })
        })
    }

    /// How many times the statements prepared on `connection` were re-planned since they
    /// were prepared.
    fn reprepares(connection: &Connection) -> i32 {
        let mut total = 0;
        // SAFETY: the handle is valid while `connection` lives; sqlite3_next_stmt and
        // sqlite3_stmt_status only read the connection's list of prepared statements, and no
        // statement is finalized meanwhile (this thread holds the connection).
        unsafe {
            let db = connection.handle();
            let mut statement = rusqlite::ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !statement.is_null() {
                total += rusqlite::ffi::sqlite3_stmt_status(
                    statement,
                    rusqlite::ffi::SQLITE_STMTSTATUS_REPREPARE,
                    0,
                );
                statement = rusqlite::ffi::sqlite3_next_stmt(db, statement);
            }
        }
        total
    }

    /// A read on a hot path is planned once per connection and then only re-bound: SQLite
    /// re-plans some statements every time a parameter is bound (an ORDER BY over an index
    /// with an equality on `?1`, for one), which made getPossibleAutoRefunds several times
    /// slower.
    #[test]
    fn hot_reads_are_planned_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.db");
        let mut writer = open_writer(&path).unwrap();
        migrate(&mut writer).unwrap();
        let shop = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/test-shop.json"),
        )
        .unwrap();
        let shop = ShopData::parse(&shop, chrono_tz::Europe::Warsaw).unwrap();
        import_shop(&mut writer, &shop).unwrap();

        let mut reader = open_reader(&path).unwrap();
        let sources = [
            SourceRef {
                source_type: SourceType::Order,
                id: 2001,
            },
            SourceRef {
                source_type: SourceType::Order,
                id: 2002,
            },
            SourceRef {
                source_type: SourceType::Return,
                id: 601,
            },
            SourceRef {
                source_type: SourceType::Rma,
                id: 801,
            },
        ];
        let mut after_first_round = None;
        for round in 0..3 {
            if round == 1 {
                // The first round loads the schema, which re-plans what was prepared before it.
                after_first_round = Some(reprepares(&reader));
            }
            for source in sources {
                let found: anyhow::Result<()> = in_read_transaction(&mut reader, |ledger| {
                    let order = ledger.source(source)?.map(|found| found.order.id);
                    if let Some(order) = order {
                        let payments = ledger.order_payments(order)?;
                        assert!(payments.iter().all(|payment| payment.order_id == order));
                        assert!(
                            payments.windows(2).all(|pair| (pair[0].paid_at, pair[0].id)
                                <= (pair[1].paid_at, pair[1].id)),
                            "oldest first"
                        );
                        ledger.order(order)?;
                    }
                    ledger.payment(11 + round)?;
                    ledger.refund(20 + round)?;
                    ledger.api_key("0".repeat(64).as_str())?;
                    ledger.api_user(&format!("user{round}"))?;
                    for filter in [SourceFilter::All, SourceFilter::Only(source.source_type)] {
                        ledger.unapproved_refunds(filter, source.id.unsigned_abs() % 3, 10)?;
                    }
                    ledger.counts()?;
                    Ok(())
                });
                found.unwrap();
            }
        }
        assert_eq!(
            Some(reprepares(&reader)),
            after_first_round,
            "a hot read was re-planned"
        );
    }

    /// A ledger made before the kept counts (schema 4) gets them filled from its refunds, and
    /// the rewritten triggers go on keeping its totals.
    #[test]
    fn the_counts_migration_counts_the_refunds_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = open_writer(&dir.path().join("old.db")).unwrap();
        for migration in &MIGRATIONS[..4] {
            connection.execute_batch(migration).unwrap();
        }
        connection.pragma_update(None, "user_version", 4).unwrap();
        connection
            .execute_batch(
                "INSERT INTO orders (id, currency, fulfilled, paid_minor, refunded_minor)
                 VALUES (1, 'PLN', 0, 0, 0);
                 INSERT INTO movements (id, kind) VALUES (1, 'payment');
                 INSERT INTO payments (id, order_id, amount_minor, currency, payment_form_id,
                     auto_refund, paid_at)
                 VALUES (1, 1, 100000, 'PLN', 2, 1, 0);",
            )
            .unwrap();
        let statuses = ["New", "Canceled", "Processing", "New", "Completed", "New"];
        for (index, status) in statuses.iter().enumerate() {
            let id = 10 + index as i64;
            connection
                .execute(
                    "INSERT INTO movements (id, kind) VALUES (?1, 'refund')",
                    [id],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO refunds (id, order_id, source_type, source_id, method,
                         payment_id, amount_minor, currency, status, created_at, created_by)
                     VALUES (?1, 1, 'order', 1, 'automatic', 1, 100, 'PLN', 'New', 0, 'x')",
                    [id],
                )
                .unwrap();
            if *status != "New" {
                connection
                    .execute(
                        "UPDATE refunds SET status = ?2 WHERE id = ?1",
                        params![id, status],
                    )
                    .unwrap();
            }
        }

        migrate(&mut connection).unwrap();
        let count = |status: &str| -> i64 {
            connection
                .query_row(
                    "SELECT n FROM refund_counts WHERE source_type = 'order' AND status = ?1",
                    [status],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!(
            ["New", "Processing", "Completed", "Failed", "Canceled"].map(count),
            [3, 1, 1, 0, 1]
        );
        let total = || -> i64 {
            connection
                .query_row(
                    "SELECT refunded_minor FROM orders WHERE id = 1",
                    [],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!(total(), 500, "five live refunds of 1.00");
        connection
            .execute("UPDATE refunds SET status = 'Canceled' WHERE id = 10", [])
            .unwrap();
        assert_eq!(total(), 400, "canceling releases the amount");
        assert_eq!((count("New"), count("Canceled")), (2, 2));
    }

    #[test]
    fn a_batch_commits_its_good_writes_and_undoes_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = open_writer(&dir.path().join("batch.db")).unwrap();
        migrate(&mut connection).unwrap();
        let (answers, answered) = mpsc::channel();
        let batch = vec![
            write(10, "ok", answers.clone()),
            write(11, "fail", answers.clone()),
            write(12, "panic", answers.clone()),
            write(13, "ok", answers),
        ];
        run_batch(&mut connection, batch, |_| Ok(()));
        let mut results: Vec<(i64, bool)> = answered
            .iter()
            .map(|(id, result)| (id, result.is_ok()))
            .collect();
        results.sort();
        assert_eq!(results, [(10, true), (11, false), (12, false), (13, true)]);
        let kept: Vec<i64> = connection
            .prepare("SELECT id FROM payment_forms WHERE id >= 10 ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            kept,
            [10, 13],
            "the failed and the panicking write left nothing behind"
        );
    }
}
