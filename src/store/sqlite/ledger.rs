//! The domain's ledger port over one SQLite connection inside a transaction.

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::connection::run_cached;
use super::maintenance::api_key_from_row;
use crate::money::{Currency, Money};
use crate::refunds::StoredResponse;
use crate::refunds::audit::{AuditEntry, ChainLink, ChainedEntry};
use crate::refunds::events::{
    Delivery, DeliveryState, DeliveryStep, EventType, RefundEvent, WebhookEndpoint,
};
use crate::refunds::ledger::Ledger;
use crate::refunds::types::{
    AdminSession, AdminUser, ApiKey, ApiUser, HourlyRefundCount, JobState, JobStep, LedgerCounts,
    ManualDetails, MovementId, NewRefund, Order, Payment, Refund, RefundJob, RefundMethod,
    RefundStatus, Scopes, Settlement, Source, SourceFilter, SourceRef, SourceType, Timestamp,
};

pub struct SqliteLedger<'c> {
    pub connection: &'c Connection,
}

/// Whether a webhook endpoint is enabled, as known to the write batch running on this thread.
///
/// Every audited step asks ([`Ledger::wants_events`]); a query per step cost the writer thread
/// about a microsecond each. Inside a batch the answer can only change through the batch's own
/// writes: the batch holds the database's write lock from `BEGIN IMMEDIATE` to `COMMIT`, so no
/// other connection or process (`webhook add` beside a running `serve`) can change the
/// endpoints meanwhile. So the writer looks once per batch, and forgets the answer when one of
/// its writes changes an endpoint (disabling it) or the batch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventsWanted {
    /// No batch runs on this thread: every question is a query.
    OutsideBatch,
    /// Not looked up in this batch yet, or an endpoint changed since.
    Unknown,
    Known(bool),
}

thread_local! {
    static EVENTS_WANTED: std::cell::Cell<EventsWanted> =
        const { std::cell::Cell::new(EventsWanted::OutsideBatch) };
}

/// The writer calls this on the thread that runs a batch, once the batch's transaction has begun.
pub fn batch_started() {
    EVENTS_WANTED.with(|wanted| wanted.set(EventsWanted::Unknown));
}

/// The writer calls this once the batch's writes have run (before its commit).
pub fn batch_ended() {
    EVENTS_WANTED.with(|wanted| wanted.set(EventsWanted::OutsideBatch));
}

/// An endpoint changed in the running batch (if any): the next question queries again.
fn endpoints_changed() {
    EVENTS_WANTED.with(|wanted| {
        if wanted.get() != EventsWanted::OutsideBatch {
            wanted.set(EventsWanted::Unknown);
        }
    });
}

impl SqliteLedger<'_> {
    /// A login's row `(login, secret, scopes)` from `sql`, its scopes parsed (`kind` names the
    /// table's users in the error).
    fn credentials_row(
        &self,
        sql: &str,
        login: &str,
        kind: &str,
    ) -> anyhow::Result<Option<(String, String, Scopes)>> {
        let row = self
            .connection
            .prepare_cached(sql)?
            .query_row([login], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        row.map(|(login, secret, scopes)| {
            let parsed = Scopes::parse(&scopes)
                .with_context(|| format!("stored scopes '{scopes}' of {kind} {login}"))?;
            Ok((login, secret, parsed))
        })
        .transpose()
    }
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
        caller: row.get(14)?,
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
        let sql = "SELECT login, password_sha1, scopes FROM api_users WHERE login = ?1";
        Ok(self
            .credentials_row(sql, login, "user")?
            .map(|(login, password_sha1_hex, scopes)| ApiUser {
                login,
                password_sha1_hex,
                scopes,
            }))
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
        let (webhook_pending, webhook_oldest_pending_ms) = self
            .connection
            .prepare_cached(
                "SELECT count(*), min(created_ms) FROM webhook_deliveries WHERE state = 'pending'",
            )?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(LedgerCounts {
            refunds_by_status,
            outbox_pending,
            webhook_pending,
            webhook_oldest_pending_ms,
        })
    }

    fn audit_head(&mut self) -> anyhow::Result<ChainLink> {
        let head = self
            .connection
            .prepare_cached("SELECT seq, prev_hash, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
            .query_row([], |row| {
                Ok(ChainLink {
                    seq: row.get(0)?,
                    prev_hash: row.get(1)?,
                    hash: row.get(2)?,
                })
            })
            .optional()?;
        Ok(head.unwrap_or_else(ChainLink::genesis))
    }

    fn append_audit(&mut self, entry: &AuditEntry, link: Option<&ChainLink>) -> anyhow::Result<()> {
        // Writes are serialized here, so every entry is chained in its own transaction.
        let link = link.context("SQLite chains audit entries in their transaction")?;
        self.connection
            .prepare_cached(
                "INSERT INTO audit_log (seq, at, actor, channel, operation, refund_id,
                     status_before, status_after, amount_before, amount_after, currency,
                     request_id, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                link.seq,
                entry.at,
                entry.caller,
                entry.channel,
                entry.operation,
                entry.refund_id,
                entry.status_before,
                entry.status_after,
                entry.amount_before,
                entry.amount_after,
                entry.currency,
                entry.request_id,
                link.prev_hash,
                link.hash
            ])
            .context("appending to the audit trail")?;
        Ok(())
    }

    /// The only writer is the sealer.
    fn lead_audit_sealing(&mut self) -> anyhow::Result<bool> {
        Ok(true)
    }

    /// Nothing is ever left unchained here.
    fn unsealed_audit(&mut self, _limit: u32) -> anyhow::Result<Vec<(i64, AuditEntry)>> {
        Ok(Vec::new())
    }

    fn seal_audit(&mut self, entry_id: i64, _link: &ChainLink) -> anyhow::Result<()> {
        bail!("audit entry {entry_id} is not unchained: SQLite chains entries in their transaction")
    }

    fn payment_refunds(&mut self, payment_id: MovementId) -> anyhow::Result<Vec<Refund>> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = ?1 ORDER BY id");
        let rows = self
            .connection
            .prepare_cached(&sql)?
            .query_map([payment_id], refund_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Every entry is chained in its transaction here, so none is pending.
    fn refund_audit(
        &mut self,
        refund_id: MovementId,
    ) -> anyhow::Result<(Vec<ChainedEntry>, Vec<AuditEntry>)> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE refund_id = ?1 ORDER BY seq");
        let rows = self
            .connection
            .prepare_cached(&sql)?
            .query_map([refund_id], chained_from_row)?
            .collect::<Result<_, _>>()?;
        Ok((rows, Vec::new()))
    }

    fn audit_chain_from(&mut self, from_seq: i64, limit: u32) -> anyhow::Result<Vec<ChainedEntry>> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq >= ?1 ORDER BY seq LIMIT ?2");
        let rows = self
            .connection
            .prepare_cached(&sql)?
            .query_map(params![from_seq, limit], chained_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn idempotent_answer(
        &mut self,
        caller: &str,
        key: &str,
    ) -> anyhow::Result<Option<(String, StoredResponse)>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT request_hash, status, content_type, body FROM idempotency_keys
             WHERE caller = ?1 AND key = ?2",
        )?;
        Ok(statement
            .query_row([caller, key], |row| {
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
        caller: &str,
        key: &str,
        request_digest: &str,
        answer: &StoredResponse,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO idempotency_keys (caller, key, request_hash, status, content_type, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![caller, key, request_digest, answer.status, answer.content_type, answer.body, now])
            .context("remembering an idempotent answer")?;
        Ok(())
    }

    fn forget_expired_answer(
        &mut self,
        caller: &str,
        key: &str,
        at: Timestamp,
    ) -> anyhow::Result<()> {
        self.connection
            .prepare_cached(
                "DELETE FROM idempotency_keys WHERE caller = ?1 AND key = ?2 AND created_at <= ?3",
            )?
            .execute(params![caller, key, at])
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

    fn wants_events(&mut self) -> anyhow::Result<bool> {
        let known = EVENTS_WANTED.with(std::cell::Cell::get);
        if let EventsWanted::Known(wanted) = known {
            return Ok(wanted);
        }
        let wanted = self
            .connection
            .prepare_cached("SELECT 1 FROM webhook_endpoints WHERE enabled = 1 LIMIT 1")?
            .exists([])?;
        if known == EventsWanted::Unknown {
            EVENTS_WANTED.with(|memo| memo.set(EventsWanted::Known(wanted)));
        }
        Ok(wanted)
    }

    fn add_event(&mut self, event: &RefundEvent, now_ms: i64) -> anyhow::Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO webhook_events (event_id, type, created_at, refund_id, source_type,
                     source_id, payment_id, status, amount_minor, currency, date_add,
                     date_confirm, external_id, channel, caller)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                event.id,
                event.kind.as_str(),
                event.created,
                event.refund_id,
                event.source.source_type.as_str(),
                event.source.id,
                event.payment_id,
                event.status.as_str(),
                event.amount.minor,
                event.amount.currency.code(),
                event.date_add,
                event.date_confirm,
                event.external_id,
                event.channel,
                event.caller,
            ])
            .context("storing a refund event")?;
        let seq = self.connection.last_insert_rowid();
        self.connection
            .prepare_cached(
                "INSERT INTO webhook_deliveries (endpoint_id, event_seq, refund_id, state,
                     next_attempt_ms, created_ms)
                 SELECT id, ?1, ?2, 'pending', ?4, ?4 FROM webhook_endpoints
                 WHERE enabled = 1 AND instr(',' || events || ',', ',' || ?3 || ',') > 0",
            )?
            .execute(params![seq, event.refund_id, event.kind.as_str(), now_ms])
            .context("queueing webhook deliveries")?;
        Ok(())
    }

    fn claim_deliveries(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM {DELIVERY_FROM}
             WHERE d.state = 'pending' AND d.next_attempt_ms <= ?1 AND e.enabled = 1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                               WHERE p.state = 'pending' AND p.endpoint_id = d.endpoint_id
                                 AND p.refund_id = d.refund_id AND p.event_seq < d.event_seq)
             ORDER BY d.next_attempt_ms, d.id LIMIT ?2"
        );
        let mut deliveries: Vec<Delivery> = self
            .connection
            .prepare_cached(&sql)?
            .query_map(params![now_ms, limit], delivery_from_row)?
            .collect::<Result<_, _>>()?;
        let mut lease = self.connection.prepare_cached(
            "UPDATE webhook_deliveries SET next_attempt_ms = ?2, lease = lease + 1 WHERE id = ?1",
        )?;
        for delivery in &mut deliveries {
            lease.execute(params![delivery.id, now_ms + lease_ms])?;
            delivery.lease += 1;
        }
        Ok(deliveries)
    }

    fn record_delivery(
        &mut self,
        step: &DeliveryStep,
        lease: i64,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let delivered = (step.state == DeliveryState::Delivered).then_some(now_ms);
        let changed = self
            .connection
            .prepare_cached(
                "UPDATE webhook_deliveries SET state = ?2, attempts = ?3, next_attempt_ms = ?4,
                     last_status = ?5, last_error = ?6, delivered_ms = ?7
                 WHERE id = ?1 AND lease = ?8 AND state = 'pending'",
            )?
            .execute(params![
                step.delivery_id,
                step.state.as_str(),
                step.attempts,
                step.next_attempt_ms,
                step.last_status,
                step.last_error,
                delivered,
                lease
            ])?;
        if changed != 1 {
            return Ok(false);
        }
        if delivered.is_some() {
            self.connection
                .prepare_cached(
                    "UPDATE webhook_endpoints SET last_success_ms = ?2
                     WHERE id = (SELECT endpoint_id FROM webhook_deliveries WHERE id = ?1)",
                )?
                .execute(params![step.delivery_id, now_ms])?;
        }
        if step.disable_endpoint {
            endpoints_changed();
            self.connection
                .prepare_cached(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?2
                     WHERE id = (SELECT endpoint_id FROM webhook_deliveries WHERE id = ?1)",
                )?
                .execute(params![
                    step.delivery_id,
                    "no delivery succeeded for the whole retry window"
                ])?;
        }
        Ok(true)
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
        let mut jobs: Vec<RefundJob> = self
            .connection
            .prepare_cached(&sql)?
            .query_map(params![now_ms, limit], job_from_row)?
            .collect::<Result<_, _>>()?;
        // A claimed send may reach the operator even if this worker dies before recording the
        // answer, so whoever takes the job after the lease asks for the status first.
        let mut lease = self.connection.prepare_cached(
            "UPDATE outbox SET next_attempt_ms = ?2, updated_ms = ?3, lease = lease + 1,
                 state = CASE state WHEN 'send' THEN 'query' ELSE state END
             WHERE refund_id = ?1",
        )?;
        for job in &mut jobs {
            lease.execute(params![job.refund_id, now_ms + lease_ms, now_ms])?;
            job.lease += 1;
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

    fn record_job_step(
        &mut self,
        step: &JobStep,
        lease: Option<i64>,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let changed = self
            .connection
            .prepare_cached(
                "UPDATE outbox SET state = ?2, attempts = ?3, next_attempt_ms = ?4, last_error = ?5,
                     updated_ms = ?6
                 WHERE refund_id = ?1 AND state <> 'done' AND (?7 IS NULL OR lease = ?7)",
            )?
            .execute(params![
                step.refund_id,
                step.state.as_str(),
                step.attempts,
                step.next_attempt_ms,
                step.last_error,
                now_ms,
                lease
            ])?;
        Ok(changed == 1)
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
                refund.caller,
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

    fn admin_user(&mut self, login: &str) -> anyhow::Result<Option<AdminUser>> {
        let sql = "SELECT login, password_hash, scopes FROM admin_users WHERE login = ?1";
        Ok(self
            .credentials_row(sql, login, "panel user")?
            .map(|(login, password_hash, scopes)| AdminUser {
                login,
                password_hash,
                scopes,
            }))
    }

    fn create_session(&mut self, session: &AdminSession) -> anyhow::Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO admin_sessions (id_sha256, login, csrf_token, created_at, last_seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                session.id_sha256,
                session.login,
                session.csrf_token,
                session.created_at,
                session.last_seen_at
            ])?;
        Ok(())
    }

    fn session(&mut self, id_sha256: &str) -> anyhow::Result<Option<AdminSession>> {
        Ok(self
            .connection
            .prepare_cached(
                "SELECT id_sha256, login, csrf_token, created_at, last_seen_at
                 FROM admin_sessions WHERE id_sha256 = ?1",
            )?
            .query_row([id_sha256], |row| {
                Ok(AdminSession {
                    id_sha256: row.get(0)?,
                    login: row.get(1)?,
                    csrf_token: row.get(2)?,
                    created_at: row.get(3)?,
                    last_seen_at: row.get(4)?,
                })
            })
            .optional()?)
    }

    fn touch_session(&mut self, id_sha256: &str, now: Timestamp) -> anyhow::Result<()> {
        self.connection
            .prepare_cached("UPDATE admin_sessions SET last_seen_at = ?2 WHERE id_sha256 = ?1")?
            .execute(params![id_sha256, now])?;
        Ok(())
    }

    fn end_session(&mut self, id_sha256: &str) -> anyhow::Result<()> {
        self.connection
            .prepare_cached("DELETE FROM admin_sessions WHERE id_sha256 = ?1")?
            .execute([id_sha256])?;
        Ok(())
    }

    fn sign_in_failures(&mut self, subject: &str, since: Timestamp) -> anyhow::Result<u32> {
        let count: i64 = self
            .connection
            .prepare_cached(
                "SELECT count(*) FROM admin_sign_in_failures WHERE subject = ?1 AND at >= ?2",
            )?
            .query_row(params![subject, since], |row| row.get(0))?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn record_sign_in_failure(&mut self, subject: &str, at: Timestamp) -> anyhow::Result<()> {
        self.connection
            .prepare_cached("INSERT INTO admin_sign_in_failures (subject, at) VALUES (?1, ?2)")?
            .execute(params![subject, at])?;
        Ok(())
    }

    fn clear_sign_in_failures(&mut self, subject: &str) -> anyhow::Result<()> {
        self.connection
            .prepare_cached("DELETE FROM admin_sign_in_failures WHERE subject = ?1")?
            .execute([subject])?;
        Ok(())
    }

    fn purge_panel_records(
        &mut self,
        idle_before: Timestamp,
        opened_before: Timestamp,
        failures_before: Timestamp,
    ) -> anyhow::Result<u64> {
        let sessions = self
            .connection
            .prepare_cached(
                "DELETE FROM admin_sessions WHERE last_seen_at < ?1 OR created_at < ?2",
            )?
            .execute(params![idle_before, opened_before])?;
        let failures = self
            .connection
            .prepare_cached("DELETE FROM admin_sign_in_failures WHERE at < ?1")?
            .execute([failures_before])?;
        Ok((sessions + failures) as u64)
    }

    fn order_refunds(&mut self, order_id: i64) -> anyhow::Result<Vec<Refund>> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE order_id = ?1 ORDER BY id");
        Ok(self
            .connection
            .prepare_cached(&sql)?
            .query_map([order_id], refund_from_row)?
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn hourly_refund_counts(&mut self, since: Timestamp) -> anyhow::Result<Vec<HourlyRefundCount>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT created_at / 3600 * 3600 AS hour, status, count(*) FROM refunds
             WHERE created_at >= ?1 GROUP BY hour, status ORDER BY hour",
        )?;
        let rows = statement.query_map([since], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        let mut counts = Vec::new();
        for row in rows {
            let (hour_start, status, count) = row?;
            let status = RefundStatus::parse(&status)
                .with_context(|| format!("stored refund status '{status}'"))?;
            counts.push(HourlyRefundCount {
                hour_start,
                status,
                count: u64::try_from(count).unwrap_or(0),
            });
        }
        Ok(counts)
    }
}

pub(super) const AUDIT_COLUMNS: &str = "seq, at, actor, channel, operation, refund_id, \
     status_before, status_after, amount_before, amount_after, currency, request_id, prev_hash, hash";

pub(super) fn chained_from_row(row: &Row<'_>) -> rusqlite::Result<ChainedEntry> {
    Ok(ChainedEntry {
        seq: row.get(0)?,
        entry: AuditEntry {
            at: row.get(1)?,
            caller: row.get(2)?,
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
}

pub(super) const DELIVERY_COLUMNS: &str = "d.id, d.attempts, d.created_ms, d.lease, \
     e.id, e.url, e.secret, e.created_ms, e.last_success_ms, \
     v.event_id, v.type, v.created_at, v.refund_id, v.source_type, v.source_id, v.payment_id, \
     v.status, v.amount_minor, v.currency, v.date_add, v.date_confirm, v.external_id, v.channel, \
     v.caller";

pub(super) const DELIVERY_FROM: &str = "webhook_deliveries d \
     JOIN webhook_endpoints e ON e.id = d.endpoint_id JOIN webhook_events v ON v.seq = d.event_seq";

pub(super) fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let kind: String = row.get(10)?;
    let kind = EventType::parse(&kind)
        .ok_or_else(|| conversion_error(format!("stored event type '{kind}'")))?;
    let source_type: String = row.get(13)?;
    let source_type = SourceType::parse(&source_type)
        .ok_or_else(|| conversion_error(format!("stored source type '{source_type}'")))?;
    let status: String = row.get(16)?;
    let status = RefundStatus::parse(&status)
        .ok_or_else(|| conversion_error(format!("stored refund status '{status}'")))?;
    Ok(Delivery {
        id: row.get(0)?,
        attempts: row.get(1)?,
        created_ms: row.get(2)?,
        lease: row.get(3)?,
        endpoint: WebhookEndpoint {
            id: row.get(4)?,
            url: row.get(5)?,
            secret: row.get(6)?,
            created_ms: row.get(7)?,
            last_success_ms: row.get(8)?,
        },
        event: RefundEvent {
            id: row.get(9)?,
            kind,
            created: row.get(11)?,
            refund_id: row.get(12)?,
            source: SourceRef {
                source_type,
                id: row.get(14)?,
            },
            payment_id: row.get(15)?,
            status,
            amount: Money {
                minor: row.get(17)?,
                currency: currency(&row.get::<_, String>(18)?)?,
            },
            date_add: row.get(19)?,
            date_confirm: row.get(20)?,
            external_id: row.get(21)?,
            channel: row.get(22)?,
            caller: row.get(23)?,
        },
    })
}

pub(super) const JOB_COLUMNS: &str = "o.refund_id, o.operator, o.state, o.attempts, o.next_attempt_ms, \
     o.last_error, o.created_ms, p.external_transaction_id, r.amount_minor, r.currency, o.lease";

pub(super) const JOB_FROM: &str =
    "outbox o JOIN refunds r ON r.id = o.refund_id JOIN payments p ON p.id = r.payment_id";

pub(super) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<RefundJob> {
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
        lease: row.get(10)?,
    })
}

fn ensure_one_row(changed: usize, refund_id: MovementId) -> anyhow::Result<()> {
    if changed != 1 {
        bail!("refund {refund_id} was not in the state its change expects ({changed} rows)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refunds::types::SourceType;
    use crate::shop::ShopData;
    use crate::store::sqlite::connection::{migrate, open_reader, open_writer};
    use crate::store::sqlite::maintenance::import_shop;
    use crate::store::sqlite::read::in_read_transaction;

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
}
