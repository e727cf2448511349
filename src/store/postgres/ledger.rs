//! The domain's ledger port over one PostgreSQL session inside a transaction.
//!
//! Every statement is a `const` (listed in [`STATEMENTS`], which a test prepares against the
//! migrated schema). Inside a write, reading a payment, order, return, claim, refund or outbox
//! job takes its row lock (`FOR UPDATE`), so two writes on two instances can never both see the
//! same refundable balance (contract point 2); inside a read nothing is locked.

use ::postgres::Row;
use ::postgres::error::SqlState;
use ::postgres::types::ToSql;
use anyhow::{Context as _, bail};

use super::connection::Connection;
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

/// The advisory lock whose holder chains audit entries (`pg_try_advisory_xact_lock`).
const AUDIT_SEALER_LOCK: i64 = 0x7265_6675_6e64_0002;

macro_rules! order_select {
    () => {
        "SELECT id, currency, fulfilled, paid_minor, refunded_minor FROM orders WHERE id = $1"
    };
}
macro_rules! payment_select {
    () => {
        "SELECT id, order_id, amount_minor, currency, payment_form_id, payment_system, \
         auto_refund, external_transaction_id, paid_at, refunded_minor FROM payments"
    };
}
macro_rules! refund_select {
    () => {
        "SELECT id, order_id, source_type, source_id, method, payment_id, amount_minor, \
         currency, status, payment_form_id, payment_system, account, client_account, \
         created_at, created_by, confirmed_at, external_id FROM refunds"
    };
}
macro_rules! job_select {
    () => {
        "SELECT o.refund_id, o.operator, o.state, o.attempts, o.next_attempt_ms, o.last_error, \
         o.created_ms, p.external_transaction_id, r.amount_minor, r.currency, o.lease \
         FROM outbox o JOIN refunds r ON r.id = o.refund_id JOIN payments p ON p.id = r.payment_id"
    };
}
pub(super) use job_select;

pub const ORDER: &str = order_select!();
pub const ORDER_FOR_UPDATE: &str = concat!(order_select!(), " FOR UPDATE");
pub const PAYMENT: &str = concat!(payment_select!(), " WHERE id = $1");
pub const PAYMENT_FOR_UPDATE: &str = concat!(payment_select!(), " WHERE id = $1 FOR UPDATE");
pub const ORDER_PAYMENTS: &str = concat!(
    payment_select!(),
    " WHERE order_id = $1 ORDER BY paid_at, id"
);
pub const ORDER_PAYMENTS_FOR_UPDATE: &str = concat!(
    payment_select!(),
    " WHERE order_id = $1 ORDER BY paid_at, id FOR UPDATE"
);
pub const RETURN: &str = "SELECT order_id, value_minor - refunded_minor FROM returns WHERE id = $1";
pub const RETURN_FOR_UPDATE: &str =
    "SELECT order_id, value_minor - refunded_minor FROM returns WHERE id = $1 FOR UPDATE";
pub const RMA: &str = "SELECT order_id, value_minor - refunded_minor FROM rmas WHERE id = $1";
pub const RMA_FOR_UPDATE: &str =
    "SELECT order_id, value_minor - refunded_minor FROM rmas WHERE id = $1 FOR UPDATE";
pub const REFUND: &str = concat!(refund_select!(), " WHERE id = $1");
pub const REFUND_FOR_UPDATE: &str = concat!(refund_select!(), " WHERE id = $1 FOR UPDATE");
pub const PAYMENT_FORM_EXISTS: &str = "SELECT 1 FROM payment_forms WHERE id = $1";
pub const UNAPPROVED_COUNT: &str = "SELECT coalesce(sum(n), 0)::bigint FROM refund_counts WHERE status = 'New' AND source_type = $1";
pub const UNAPPROVED_PAGE: &str = concat!(
    refund_select!(),
    " WHERE status = 'New' AND source_type = $1 ORDER BY id LIMIT $2 OFFSET $3"
);
pub const ALL_UNAPPROVED_COUNT: &str =
    "SELECT coalesce(sum(n), 0)::bigint FROM refund_counts WHERE status = 'New'";
pub const ALL_UNAPPROVED_PAGE: &str = concat!(
    refund_select!(),
    " WHERE status = 'New' ORDER BY id LIMIT $1 OFFSET $2"
);
pub const API_USER: &str = "SELECT login, password_sha1, scopes FROM api_users WHERE login = $1";
pub const API_KEY: &str =
    "SELECT name, scopes, created_at, revoked_at FROM api_keys WHERE key_sha256 = $1";
pub const COUNTS_BY_STATUS: &str =
    "SELECT status, sum(n)::bigint FROM refund_counts GROUP BY status";
pub const OUTBOX_PENDING: &str = "SELECT count(*) FROM outbox WHERE state <> 'done'";
pub const AUDIT_HEAD: &str = "SELECT seq, prev_hash, hash FROM audit_log WHERE seq IS NOT NULL \
     ORDER BY seq DESC LIMIT 1";
pub const APPEND_AUDIT: &str = "INSERT INTO audit_log (at, actor, channel, operation, refund_id, \
     status_before, status_after, amount_before, amount_after, currency, request_id, seq, \
     prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
pub const LEAD_AUDIT_SEALING: &str = "SELECT pg_try_advisory_xact_lock($1)";
pub const UNSEALED_AUDIT: &str = "SELECT id, at, actor, channel, operation, refund_id, \
     status_before, status_after, amount_before, amount_after, currency, request_id \
     FROM audit_log WHERE seq IS NULL ORDER BY id LIMIT $1";
pub const SEAL_AUDIT: &str =
    "UPDATE audit_log SET seq = $2, prev_hash = $3, hash = $4 WHERE id = $1 AND seq IS NULL";
pub const IDEMPOTENT_ANSWER: &str = "SELECT request_hash, status, content_type, body \
     FROM idempotency_keys WHERE caller = $1 AND key = $2";
pub const REMEMBER_ANSWER: &str = "INSERT INTO idempotency_keys \
     (caller, key, request_hash, status, content_type, body, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub const PURGE_ANSWERS: &str = "DELETE FROM idempotency_keys WHERE created_at < $1";
pub const ENQUEUE_JOB: &str = "INSERT INTO outbox \
     (refund_id, operator, state, next_attempt_ms, created_ms, updated_ms) \
     VALUES ($1, $2, 'send', $3, $3, $3)";
/// `SKIP LOCKED`: a job another instance is claiming right now is left to it, not waited for.
pub const DUE_JOBS: &str = concat!(
    job_select!(),
    " WHERE o.state <> 'done' AND o.next_attempt_ms <= $1 \
     ORDER BY o.next_attempt_ms, o.refund_id LIMIT $2 FOR UPDATE OF o SKIP LOCKED"
);
/// A claimed send may reach the operator even if this worker dies before recording the answer,
/// so whoever takes the job after the lease asks for the status first.
pub const LEASE_JOBS: &str = "UPDATE outbox SET next_attempt_ms = $2, updated_ms = $3, \
     lease = lease + 1, state = CASE state WHEN 'send' THEN 'query' ELSE state END \
     WHERE refund_id = ANY($1)";
pub const JOB: &str = concat!(job_select!(), " WHERE o.refund_id = $1");
pub const JOB_FOR_UPDATE: &str = concat!(job_select!(), " WHERE o.refund_id = $1 FOR UPDATE OF o");
pub const RECORD_JOB_STEP: &str = "UPDATE outbox SET state = $2, attempts = $3, \
     next_attempt_ms = $4, last_error = $5, updated_ms = $6 \
     WHERE refund_id = $1 AND state <> 'done' AND ($7::bigint IS NULL OR lease = $7)";
pub const SETTLE_COMPLETED: &str = "UPDATE refunds SET status = 'Completed', external_id = $2 \
     WHERE id = $1 AND status = 'Processing'";
pub const SETTLE_FAILED: &str =
    "UPDATE refunds SET status = 'Failed' WHERE id = $1 AND status = 'Processing'";
pub const NEW_REFUND_ID: &str = "INSERT INTO movements (kind) VALUES ('refund') RETURNING id";
pub const INSERT_REFUND: &str = "INSERT INTO refunds (id, order_id, source_type, source_id, \
     method, payment_id, amount_minor, currency, status, payment_form_id, payment_system, \
     account, client_account, created_at, created_by) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'New', $9, $10, $11, $12, $13, $14)";
pub const CHANGE_RESERVED_AMOUNT: &str =
    "UPDATE refunds SET amount_minor = $2 WHERE id = $1 AND status = 'New'";
pub const CONFIRM: &str =
    "UPDATE refunds SET status = $2, confirmed_at = $3 WHERE id = $1 AND status = 'New'";
pub const CANCEL: &str = "UPDATE refunds SET status = 'Canceled' WHERE id = $1 AND status = 'New'";
pub const FORGET_EXPIRED_ANSWER: &str =
    "DELETE FROM idempotency_keys WHERE caller = $1 AND key = $2 AND created_at <= $3";
pub const PAYMENT_REFUNDS: &str = concat!(refund_select!(), " WHERE payment_id = $1 ORDER BY id");
macro_rules! chained_select {
    () => {
        "SELECT seq, prev_hash, hash, at, actor, channel, operation, refund_id, status_before, \
         status_after, amount_before, amount_after, currency, request_id FROM audit_log"
    };
}
pub const REFUND_AUDIT_CHAINED: &str = concat!(
    chained_select!(),
    " WHERE refund_id = $1 AND seq IS NOT NULL ORDER BY seq"
);
pub const REFUND_AUDIT_PENDING: &str = "SELECT at, actor, channel, operation, refund_id, \
     status_before, status_after, amount_before, amount_after, currency, request_id \
     FROM audit_log WHERE refund_id = $1 AND seq IS NULL ORDER BY id";
pub const AUDIT_CHAIN_FROM: &str =
    concat!(chained_select!(), " WHERE seq >= $1 ORDER BY seq LIMIT $2");
pub const WANTS_EVENTS: &str = "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled)";
pub const INSERT_EVENT: &str = "INSERT INTO webhook_events (event_id, type, created_at, \
     refund_id, source_type, source_id, payment_id, status, amount_minor, currency, date_add, \
     date_confirm, external_id, channel, caller) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING seq";
pub const QUEUE_DELIVERIES: &str = "INSERT INTO webhook_deliveries (endpoint_id, event_seq, \
     refund_id, state, next_attempt_ms, created_ms) \
     SELECT id, $1, $2, 'pending', $4, $4 FROM webhook_endpoints \
     WHERE enabled AND $3 = ANY (string_to_array(events, ','))";
pub const DUE_DELIVERIES: &str = "SELECT d.id, d.attempts, d.created_ms, d.lease, \
     e.id, e.url, e.secret, e.created_ms, e.last_success_ms, \
     v.event_id, v.type, v.created_at, v.refund_id, v.source_type, v.source_id, v.payment_id, \
     v.status, v.amount_minor, v.currency, v.date_add, v.date_confirm, v.external_id, \
     v.channel, v.caller \
     FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
     JOIN webhook_events v ON v.seq = d.event_seq \
     WHERE d.state = 'pending' AND d.next_attempt_ms <= $1 AND e.enabled \
       AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.state = 'pending' \
                       AND p.endpoint_id = d.endpoint_id AND p.refund_id = d.refund_id \
                       AND p.event_seq < d.event_seq) \
     ORDER BY d.next_attempt_ms, d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED";
pub const LEASE_DELIVERY: &str =
    "UPDATE webhook_deliveries SET next_attempt_ms = $2, lease = lease + 1 WHERE id = $1";
pub const RECORD_DELIVERY: &str = "UPDATE webhook_deliveries SET state = $2, attempts = $3, \
     next_attempt_ms = $4, last_status = $5, last_error = $6, delivered_ms = $7 \
     WHERE id = $1 AND lease = $8 AND state = 'pending'";
pub const ENDPOINT_SUCCEEDED: &str = "UPDATE webhook_endpoints SET last_success_ms = $2 \
     WHERE id = (SELECT endpoint_id FROM webhook_deliveries WHERE id = $1)";
pub const DISABLE_ENDPOINT: &str = "UPDATE webhook_endpoints SET enabled = false, \
     disabled_reason = $2 WHERE id = (SELECT endpoint_id FROM webhook_deliveries WHERE id = $1)";
pub const ADMIN_USER: &str =
    "SELECT login, password_hash, scopes FROM admin_users WHERE login = $1";
pub const CREATE_SESSION: &str = "INSERT INTO admin_sessions \
     (id_sha256, login, csrf_token, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5)";
pub const SESSION: &str = "SELECT id_sha256, login, csrf_token, created_at, last_seen_at \
     FROM admin_sessions WHERE id_sha256 = $1";
pub const TOUCH_SESSION: &str = "UPDATE admin_sessions SET last_seen_at = $2 WHERE id_sha256 = $1";
pub const END_SESSION: &str = "DELETE FROM admin_sessions WHERE id_sha256 = $1";
pub const SIGN_IN_FAILURES: &str =
    "SELECT count(*) FROM admin_sign_in_failures WHERE subject = $1 AND at >= $2";
pub const RECORD_SIGN_IN_FAILURE: &str =
    "INSERT INTO admin_sign_in_failures (subject, at) VALUES ($1, $2)";
pub const CLEAR_SIGN_IN_FAILURES: &str = "DELETE FROM admin_sign_in_failures WHERE subject = $1";
pub const PURGE_SESSIONS: &str =
    "DELETE FROM admin_sessions WHERE last_seen_at < $1 OR created_at < $2";
pub const PURGE_SIGN_IN_FAILURES: &str = "DELETE FROM admin_sign_in_failures WHERE at < $1";
pub const ORDER_REFUNDS: &str = concat!(refund_select!(), " WHERE order_id = $1 ORDER BY id");
pub const HOURLY_REFUND_COUNTS: &str = "SELECT created_at / 3600 * 3600 AS hour, status, \
     count(*) FROM refunds WHERE created_at >= $1 GROUP BY hour, status ORDER BY hour";
pub const WEBHOOK_PENDING: &str =
    "SELECT count(*), min(created_ms) FROM webhook_deliveries WHERE state = 'pending'";

/// Every statement [`PgLedger`] runs.
pub const STATEMENTS: &[&str] = &[
    ORDER,
    ORDER_FOR_UPDATE,
    PAYMENT,
    PAYMENT_FOR_UPDATE,
    ORDER_PAYMENTS,
    ORDER_PAYMENTS_FOR_UPDATE,
    RETURN,
    RETURN_FOR_UPDATE,
    RMA,
    RMA_FOR_UPDATE,
    REFUND,
    REFUND_FOR_UPDATE,
    PAYMENT_FORM_EXISTS,
    UNAPPROVED_COUNT,
    UNAPPROVED_PAGE,
    ALL_UNAPPROVED_COUNT,
    ALL_UNAPPROVED_PAGE,
    API_USER,
    API_KEY,
    COUNTS_BY_STATUS,
    OUTBOX_PENDING,
    AUDIT_HEAD,
    APPEND_AUDIT,
    LEAD_AUDIT_SEALING,
    UNSEALED_AUDIT,
    SEAL_AUDIT,
    IDEMPOTENT_ANSWER,
    REMEMBER_ANSWER,
    PURGE_ANSWERS,
    ENQUEUE_JOB,
    DUE_JOBS,
    LEASE_JOBS,
    JOB,
    JOB_FOR_UPDATE,
    RECORD_JOB_STEP,
    SETTLE_COMPLETED,
    SETTLE_FAILED,
    NEW_REFUND_ID,
    INSERT_REFUND,
    CHANGE_RESERVED_AMOUNT,
    CONFIRM,
    CANCEL,
    FORGET_EXPIRED_ANSWER,
    PAYMENT_REFUNDS,
    REFUND_AUDIT_CHAINED,
    REFUND_AUDIT_PENDING,
    AUDIT_CHAIN_FROM,
    WANTS_EVENTS,
    INSERT_EVENT,
    QUEUE_DELIVERIES,
    DUE_DELIVERIES,
    LEASE_DELIVERY,
    RECORD_DELIVERY,
    ENDPOINT_SUCCEEDED,
    DISABLE_ENDPOINT,
    WEBHOOK_PENDING,
    ADMIN_USER,
    CREATE_SESSION,
    SESSION,
    TOUCH_SESSION,
    END_SESSION,
    SIGN_IN_FAILURES,
    RECORD_SIGN_IN_FAILURE,
    CLEAR_SIGN_IN_FAILURES,
    PURGE_SESSIONS,
    PURGE_SIGN_IN_FAILURES,
    ORDER_REFUNDS,
    HOURLY_REFUND_COUNTS,
];

/// What went wrong inside one transaction, as far as the runner must know.
#[derive(Debug, Default)]
pub struct TransactionState {
    /// A failure that running the whole work again in a fresh transaction may cure: a
    /// serialization failure, a deadlock, or an idempotency key another transaction claimed.
    pub transient: Option<String>,
    /// A statement failed outside a savepoint (or in one that was not rolled back): the
    /// transaction is aborted and COMMIT would silently roll it back.
    pub aborted: bool,
    in_savepoint: bool,
    failed_in_savepoint: bool,
}

/// The ledger inside one transaction on `connection`.
pub struct PgLedger<'c> {
    connection: &'c mut Connection,
    /// Inside a write: reads of what a rule decides on take row locks.
    locking: bool,
    pub state: TransactionState,
}

impl<'c> PgLedger<'c> {
    pub fn new(connection: &'c mut Connection, locking: bool) -> PgLedger<'c> {
        PgLedger {
            connection,
            locking,
            state: TransactionState::default(),
        }
    }

    /// Whether the transaction can still commit what the work did.
    pub fn committable(&self) -> bool {
        let open_savepoint_failed = self.state.in_savepoint && self.state.failed_in_savepoint;
        !(self.state.aborted || open_savepoint_failed)
    }

    fn noted<T>(&mut self, result: Result<T, ::postgres::Error>) -> anyhow::Result<T> {
        result.map_err(|error| {
            self.note(&error);
            error.into()
        })
    }

    fn note(&mut self, error: &::postgres::Error) {
        let transient = match error.code() {
            Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE => true,
            Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED => true,
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => error
                .as_db_error()
                .and_then(|db| db.table())
                .is_some_and(|table| table == "idempotency_keys"),
            _ => false,
        };
        if transient && self.state.transient.is_none() {
            self.state.transient = Some(error.to_string());
        }
        if self.state.in_savepoint {
            self.state.failed_in_savepoint = true;
        } else {
            self.state.aborted = true;
        }
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> anyhow::Result<Vec<Row>> {
        let result = self.connection.query(sql, params);
        self.noted(result)
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> anyhow::Result<Option<Row>> {
        let mut rows = self.query(sql, params)?;
        if rows.len() > 1 {
            bail!("a lookup by key found {} rows", rows.len());
        }
        Ok(rows.pop())
    }

    fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> anyhow::Result<Row> {
        self.query_opt(sql, params)?
            .context("a query that always answers returned no row")
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> anyhow::Result<u64> {
        let result = self.connection.execute(sql, params);
        self.noted(result)
    }

    fn batch(&mut self, sql: &str) -> anyhow::Result<()> {
        let result = self.connection.client.batch_execute(sql);
        self.noted(result)
    }

    fn pick(&self, plain: &'static str, for_update: &'static str) -> &'static str {
        if self.locking { for_update } else { plain }
    }
}

fn currency(code: &str) -> anyhow::Result<Currency> {
    Currency::parse(code)
        .with_context(|| format!("stored currency '{code}' is not an ISO 4217 code"))
}

fn order_from_row(row: &Row) -> anyhow::Result<Order> {
    Ok(Order {
        id: row.try_get(0)?,
        currency: currency(row.try_get(1)?)?,
        fulfilled: row.try_get(2)?,
        paid_minor: row.try_get(3)?,
        refunded_minor: row.try_get(4)?,
    })
}

fn payment_from_row(row: &Row) -> anyhow::Result<Payment> {
    Ok(Payment {
        id: row.try_get(0)?,
        order_id: row.try_get(1)?,
        amount: Money {
            minor: row.try_get(2)?,
            currency: currency(row.try_get(3)?)?,
        },
        payment_form_id: row.try_get(4)?,
        payment_system: row.try_get(5)?,
        auto_refund: row.try_get(6)?,
        external_transaction_id: row.try_get(7)?,
        paid_at: row.try_get(8)?,
        refunded_minor: row.try_get(9)?,
    })
}

fn refund_from_row(row: &Row) -> anyhow::Result<Refund> {
    let source_type: &str = row.try_get(2)?;
    let source_type = SourceType::parse(source_type)
        .with_context(|| format!("stored source type '{source_type}'"))?;
    let method: &str = row.try_get(4)?;
    let payment_id: Option<i64> = row.try_get(5)?;
    let method = match (method, payment_id) {
        ("automatic", Some(payment_id)) => RefundMethod::Automatic { payment_id },
        ("manual", None) => RefundMethod::Manual,
        _ => bail!("stored refund method '{method}'"),
    };
    let status: &str = row.try_get(8)?;
    let status =
        RefundStatus::parse(status).with_context(|| format!("stored refund status '{status}'"))?;
    let payment_form_id: Option<i64> = row.try_get(9)?;
    let details = match payment_form_id {
        Some(payment_form_id) => Some(ManualDetails {
            payment_form_id,
            payment_system: row.try_get(10)?,
            account: row.try_get(11)?,
            client_account: row.try_get(12)?,
        }),
        None => None,
    };
    Ok(Refund {
        id: row.try_get(0)?,
        order_id: row.try_get(1)?,
        source: SourceRef {
            source_type,
            id: row.try_get(3)?,
        },
        method,
        amount: Money {
            minor: row.try_get(6)?,
            currency: currency(row.try_get(7)?)?,
        },
        status,
        details,
        created_at: row.try_get(13)?,
        caller: row.try_get(14)?,
        confirmed_at: row.try_get(15)?,
        external_id: row.try_get(16)?,
    })
}

pub(super) fn job_from_row(row: &Row) -> anyhow::Result<RefundJob> {
    let state: &str = row.try_get(2)?;
    let state = JobState::parse(state).with_context(|| format!("stored job state '{state}'"))?;
    let attempts: i64 = row.try_get(3)?;
    Ok(RefundJob {
        refund_id: row.try_get(0)?,
        operator: row.try_get(1)?,
        state,
        attempts: u32::try_from(attempts).context("stored attempts out of range")?,
        next_attempt_ms: row.try_get(4)?,
        last_error: row.try_get(5)?,
        created_ms: row.try_get(6)?,
        payment_external_id: row.try_get::<_, Option<String>>(7)?.unwrap_or_default(),
        amount: Money {
            minor: row.try_get(8)?,
            currency: currency(row.try_get(9)?)?,
        },
        lease: row.try_get(10)?,
    })
}

pub(super) fn api_key_from_row(row: &Row) -> anyhow::Result<ApiKey> {
    let name: String = row.try_get(0)?;
    let scopes: &str = row.try_get(1)?;
    let scopes = Scopes::parse(scopes)
        .with_context(|| format!("stored scopes '{scopes}' of API key {name}"))?;
    Ok(ApiKey {
        name,
        scopes,
        created_at: row.try_get(2)?,
        revoked_at: row.try_get(3)?,
    })
}

pub(super) fn audit_entry_from_row(row: &Row, first: usize) -> anyhow::Result<AuditEntry> {
    Ok(AuditEntry {
        at: row.try_get(first)?,
        caller: row.try_get(first + 1)?,
        channel: row.try_get(first + 2)?,
        operation: row.try_get(first + 3)?,
        refund_id: row.try_get(first + 4)?,
        status_before: row.try_get(first + 5)?,
        status_after: row.try_get(first + 6)?,
        amount_before: row.try_get(first + 7)?,
        amount_after: row.try_get(first + 8)?,
        currency: row.try_get(first + 9)?,
        request_id: row.try_get(first + 10)?,
    })
}

fn chained_from_row(row: &Row) -> anyhow::Result<ChainedEntry> {
    Ok(ChainedEntry {
        seq: row.try_get(0)?,
        prev_hash: row.try_get(1)?,
        hash: row.try_get(2)?,
        entry: audit_entry_from_row(row, 3)?,
    })
}

fn delivery_from_row(row: &Row) -> anyhow::Result<Delivery> {
    let kind: &str = row.try_get(10)?;
    let source_type: &str = row.try_get(13)?;
    let status: &str = row.try_get(16)?;
    let attempts: i64 = row.try_get(1)?;
    Ok(Delivery {
        id: row.try_get(0)?,
        attempts: u32::try_from(attempts).context("stored attempts out of range")?,
        created_ms: row.try_get(2)?,
        lease: row.try_get(3)?,
        endpoint: WebhookEndpoint {
            id: row.try_get(4)?,
            url: row.try_get(5)?,
            secret: row.try_get(6)?,
            created_ms: row.try_get(7)?,
            last_success_ms: row.try_get(8)?,
        },
        event: RefundEvent {
            id: row.try_get(9)?,
            kind: EventType::parse(kind).with_context(|| format!("stored event type '{kind}'"))?,
            created: row.try_get(11)?,
            refund_id: row.try_get(12)?,
            source: SourceRef {
                source_type: SourceType::parse(source_type)
                    .with_context(|| format!("stored source type '{source_type}'"))?,
                id: row.try_get(14)?,
            },
            payment_id: row.try_get(15)?,
            status: RefundStatus::parse(status)
                .with_context(|| format!("stored refund status '{status}'"))?,
            amount: Money {
                minor: row.try_get(17)?,
                currency: currency(row.try_get(18)?)?,
            },
            date_add: row.try_get(19)?,
            date_confirm: row.try_get(20)?,
            external_id: row.try_get(21)?,
            channel: row.try_get(22)?,
            caller: row.try_get(23)?,
        },
    })
}

fn ensure_one_row(changed: u64, refund_id: MovementId) -> anyhow::Result<()> {
    if changed != 1 {
        bail!("refund {refund_id} was not in the state its change expects ({changed} rows)");
    }
    Ok(())
}

impl Ledger for PgLedger<'_> {
    fn order(&mut self, order_id: i64) -> anyhow::Result<Option<Order>> {
        let sql = self.pick(ORDER, ORDER_FOR_UPDATE);
        self.query_opt(sql, &[&order_id])?
            .map(|row| order_from_row(&row))
            .transpose()
    }

    fn payment(&mut self, payment_id: MovementId) -> anyhow::Result<Option<Payment>> {
        let sql = self.pick(PAYMENT, PAYMENT_FOR_UPDATE);
        self.query_opt(sql, &[&payment_id])?
            .map(|row| payment_from_row(&row))
            .transpose()
    }

    /// Locked oldest first, the same order every writer takes them in.
    fn order_payments(&mut self, order_id: i64) -> anyhow::Result<Vec<Payment>> {
        let sql = self.pick(ORDER_PAYMENTS, ORDER_PAYMENTS_FOR_UPDATE);
        self.query(sql, &[&order_id])?
            .iter()
            .map(payment_from_row)
            .collect()
    }

    fn source(&mut self, source: SourceRef) -> anyhow::Result<Option<Source>> {
        let claim_sql = match source.source_type {
            SourceType::Order => {
                let order = self.order(source.id)?;
                return Ok(order.map(|order| Source {
                    source,
                    outstanding_minor: order.refundable_minor(),
                    order,
                }));
            }
            SourceType::Return => self.pick(RETURN, RETURN_FOR_UPDATE),
            SourceType::Rma => self.pick(RMA, RMA_FOR_UPDATE),
        };
        let Some(row) = self.query_opt(claim_sql, &[&source.id])? else {
            return Ok(None);
        };
        let order_id: i64 = row.try_get(0)?;
        let outstanding_minor: i64 = row.try_get(1)?;
        let order = self.order(order_id)?.with_context(|| {
            format!(
                "{} {} names missing order {order_id}",
                source.source_type.as_str(),
                source.id
            )
        })?;
        Ok(Some(Source {
            source,
            order,
            outstanding_minor,
        }))
    }

    fn refund(&mut self, refund_id: MovementId) -> anyhow::Result<Option<Refund>> {
        let sql = self.pick(REFUND, REFUND_FOR_UPDATE);
        self.query_opt(sql, &[&refund_id])?
            .map(|row| refund_from_row(&row))
            .transpose()
    }

    fn payment_form_exists(&mut self, payment_form_id: i64) -> anyhow::Result<bool> {
        Ok(self
            .query_opt(PAYMENT_FORM_EXISTS, &[&payment_form_id])?
            .is_some())
    }

    fn unapproved_refunds(
        &mut self,
        filter: SourceFilter,
        offset: u64,
        limit: u32,
    ) -> anyhow::Result<(u64, Vec<Refund>)> {
        let offset = i64::try_from(offset).context("page offset out of range")?;
        let limit = i64::from(limit);
        let (total, rows) = match filter {
            SourceFilter::Only(source_type) => {
                let word = source_type.as_str();
                let total: i64 = self.query_one(UNAPPROVED_COUNT, &[&word])?.try_get(0)?;
                (
                    total,
                    self.query(UNAPPROVED_PAGE, &[&word, &limit, &offset])?,
                )
            }
            SourceFilter::All => {
                let total: i64 = self.query_one(ALL_UNAPPROVED_COUNT, &[])?.try_get(0)?;
                (total, self.query(ALL_UNAPPROVED_PAGE, &[&limit, &offset])?)
            }
        };
        let refunds = rows
            .iter()
            .map(refund_from_row)
            .collect::<anyhow::Result<_>>()?;
        Ok((u64::try_from(total).context("negative count")?, refunds))
    }

    fn api_user(&mut self, login: &str) -> anyhow::Result<Option<ApiUser>> {
        let Some(row) = self.query_opt(API_USER, &[&login])? else {
            return Ok(None);
        };
        let login: String = row.try_get(0)?;
        let scopes: &str = row.try_get(2)?;
        let scopes = Scopes::parse(scopes)
            .with_context(|| format!("stored scopes '{scopes}' of user {login}"))?;
        Ok(Some(ApiUser {
            password_sha1_hex: row.try_get(1)?,
            login,
            scopes,
        }))
    }

    fn api_key(&mut self, key_sha256: &str) -> anyhow::Result<Option<ApiKey>> {
        self.query_opt(API_KEY, &[&key_sha256])?
            .map(|row| api_key_from_row(&row))
            .transpose()
    }

    fn counts(&mut self) -> anyhow::Result<LedgerCounts> {
        let rows = self.query(COUNTS_BY_STATUS, &[])?;
        let mut refunds_by_status = Vec::new();
        for status in ["New", "Processing", "Completed", "Failed", "Canceled"] {
            let mut n = 0;
            for row in &rows {
                if row.try_get::<_, &str>(0)? == status {
                    n = row.try_get(1)?;
                }
            }
            refunds_by_status.push((status.to_owned(), n));
        }
        let outbox_pending = self.query_one(OUTBOX_PENDING, &[])?.try_get(0)?;
        let webhooks = self.query_one(WEBHOOK_PENDING, &[])?;
        Ok(LedgerCounts {
            refunds_by_status,
            outbox_pending,
            webhook_pending: webhooks.try_get(0)?,
            webhook_oldest_pending_ms: webhooks.try_get(1)?,
        })
    }

    fn audit_head(&mut self) -> anyhow::Result<ChainLink> {
        match self.query_opt(AUDIT_HEAD, &[])? {
            Some(row) => Ok(ChainLink {
                seq: row.try_get(0)?,
                prev_hash: row.try_get(1)?,
                hash: row.try_get(2)?,
            }),
            None => Ok(ChainLink::genesis()),
        }
    }

    /// Unchained (`link` is `None`, as this adapter declares `AuditSealing::ByLeader`): the
    /// sealer gives it its place after commit.
    fn append_audit(&mut self, entry: &AuditEntry, link: Option<&ChainLink>) -> anyhow::Result<()> {
        self.execute(
            APPEND_AUDIT,
            &[
                &entry.at,
                &entry.caller,
                &entry.channel,
                &entry.operation,
                &entry.refund_id,
                &entry.status_before,
                &entry.status_after,
                &entry.amount_before,
                &entry.amount_after,
                &entry.currency,
                &entry.request_id,
                &link.map(|link| link.seq),
                &link.map(|link| link.prev_hash.as_str()),
                &link.map(|link| link.hash.as_str()),
            ],
        )
        .context("appending to the audit trail")?;
        Ok(())
    }

    /// A transaction-scoped advisory lock: exclusive across every instance on the database,
    /// released by the commit or rollback.
    fn lead_audit_sealing(&mut self) -> anyhow::Result<bool> {
        Ok(self
            .query_one(LEAD_AUDIT_SEALING, &[&AUDIT_SEALER_LOCK])?
            .try_get(0)?)
    }

    /// In READ COMMITTED each statement sees what was committed before it began, so an entry
    /// still in an open transaction waits for the next batch.
    fn unsealed_audit(&mut self, limit: u32) -> anyhow::Result<Vec<(i64, AuditEntry)>> {
        let limit = i64::from(limit);
        self.query(UNSEALED_AUDIT, &[&limit])?
            .iter()
            .map(|row| Ok((row.try_get(0)?, audit_entry_from_row(row, 1)?)))
            .collect()
    }

    fn seal_audit(&mut self, entry_id: i64, link: &ChainLink) -> anyhow::Result<()> {
        let changed = self.execute(
            SEAL_AUDIT,
            &[&entry_id, &link.seq, &link.prev_hash, &link.hash],
        )?;
        if changed != 1 {
            bail!("audit entry {entry_id} is not waiting to be chained");
        }
        Ok(())
    }

    fn idempotent_answer(
        &mut self,
        caller: &str,
        key: &str,
    ) -> anyhow::Result<Option<(String, StoredResponse)>> {
        let Some(row) = self.query_opt(IDEMPOTENT_ANSWER, &[&caller, &key])? else {
            return Ok(None);
        };
        let status: i32 = row.try_get(1)?;
        Ok(Some((
            row.try_get(0)?,
            StoredResponse {
                status: u16::try_from(status).context("stored HTTP status out of range")?,
                content_type: row.try_get(2)?,
                body: row.try_get(3)?,
            },
        )))
    }

    /// A plain INSERT: a twin transaction on another instance holding the same key makes this
    /// one wait for it and then fail with a unique violation, which the runner treats as
    /// transient (the work runs again and finds the stored answer).
    fn remember_answer(
        &mut self,
        caller: &str,
        key: &str,
        request_digest: &str,
        answer: &StoredResponse,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        self.execute(
            REMEMBER_ANSWER,
            &[
                &caller,
                &key,
                &request_digest,
                &i32::from(answer.status),
                &answer.content_type,
                &answer.body,
                &now,
            ],
        )
        .context("remembering an idempotent answer")?;
        Ok(())
    }

    fn forget_expired_answer(
        &mut self,
        caller: &str,
        key: &str,
        at: Timestamp,
    ) -> anyhow::Result<()> {
        self.execute(FORGET_EXPIRED_ANSWER, &[&caller, &key, &at])
            .context("forgetting an expired idempotent answer")?;
        Ok(())
    }

    fn payment_refunds(&mut self, payment_id: MovementId) -> anyhow::Result<Vec<Refund>> {
        self.query(PAYMENT_REFUNDS, &[&payment_id])?
            .iter()
            .map(refund_from_row)
            .collect()
    }

    fn refund_audit(
        &mut self,
        refund_id: MovementId,
    ) -> anyhow::Result<(Vec<ChainedEntry>, Vec<AuditEntry>)> {
        let chained = self
            .query(REFUND_AUDIT_CHAINED, &[&refund_id])?
            .iter()
            .map(chained_from_row)
            .collect::<anyhow::Result<_>>()?;
        let pending = self
            .query(REFUND_AUDIT_PENDING, &[&refund_id])?
            .iter()
            .map(|row| audit_entry_from_row(row, 0))
            .collect::<anyhow::Result<_>>()?;
        Ok((chained, pending))
    }

    fn audit_chain_from(&mut self, from_seq: i64, limit: u32) -> anyhow::Result<Vec<ChainedEntry>> {
        self.query(AUDIT_CHAIN_FROM, &[&from_seq, &i64::from(limit)])?
            .iter()
            .map(chained_from_row)
            .collect()
    }

    fn wants_events(&mut self) -> anyhow::Result<bool> {
        Ok(self.query_one(WANTS_EVENTS, &[])?.try_get(0)?)
    }

    fn add_event(&mut self, event: &RefundEvent, now_ms: i64) -> anyhow::Result<()> {
        let seq: i64 = self
            .query_one(
                INSERT_EVENT,
                &[
                    &event.id,
                    &event.kind.as_str(),
                    &event.created,
                    &event.refund_id,
                    &event.source.source_type.as_str(),
                    &event.source.id,
                    &event.payment_id,
                    &event.status.as_str(),
                    &event.amount.minor,
                    &event.amount.currency.code(),
                    &event.date_add,
                    &event.date_confirm,
                    &event.external_id,
                    &event.channel,
                    &event.caller,
                ],
            )
            .context("storing a refund event")?
            .try_get(0)?;
        self.execute(
            QUEUE_DELIVERIES,
            &[&seq, &event.refund_id, &event.kind.as_str(), &now_ms],
        )
        .context("queueing webhook deliveries")?;
        Ok(())
    }

    /// `FOR UPDATE SKIP LOCKED`: instances claiming at once take different deliveries.
    fn claim_deliveries(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<Delivery>> {
        let rows = self.query(DUE_DELIVERIES, &[&now_ms, &i64::from(limit)])?;
        let mut deliveries = rows
            .iter()
            .map(delivery_from_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        for delivery in &mut deliveries {
            self.execute(LEASE_DELIVERY, &[&delivery.id, &(now_ms + lease_ms)])?;
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
        let changed = self.execute(
            RECORD_DELIVERY,
            &[
                &step.delivery_id,
                &step.state.as_str(),
                &i64::from(step.attempts),
                &step.next_attempt_ms,
                &step.last_status.map(i64::from),
                &step.last_error,
                &delivered,
                &lease,
            ],
        )?;
        if changed != 1 {
            return Ok(false);
        }
        if delivered.is_some() {
            self.execute(ENDPOINT_SUCCEEDED, &[&step.delivery_id, &now_ms])?;
        }
        if step.disable_endpoint {
            self.execute(
                DISABLE_ENDPOINT,
                &[
                    &step.delivery_id,
                    &"no delivery succeeded for the whole retry window",
                ],
            )?;
        }
        Ok(true)
    }

    fn admin_user(&mut self, login: &str) -> anyhow::Result<Option<AdminUser>> {
        let Some(row) = self.query_opt(ADMIN_USER, &[&login])? else {
            return Ok(None);
        };
        let login: String = row.try_get(0)?;
        let scopes: &str = row.try_get(2)?;
        let scopes = Scopes::parse(scopes)
            .with_context(|| format!("stored scopes '{scopes}' of panel user {login}"))?;
        Ok(Some(AdminUser {
            password_hash: row.try_get(1)?,
            login,
            scopes,
        }))
    }

    fn create_session(&mut self, session: &AdminSession) -> anyhow::Result<()> {
        self.execute(
            CREATE_SESSION,
            &[
                &session.id_sha256,
                &session.login,
                &session.csrf_token,
                &session.created_at,
                &session.last_seen_at,
            ],
        )?;
        Ok(())
    }

    fn session(&mut self, id_sha256: &str) -> anyhow::Result<Option<AdminSession>> {
        let Some(row) = self.query_opt(SESSION, &[&id_sha256])? else {
            return Ok(None);
        };
        Ok(Some(AdminSession {
            id_sha256: row.try_get(0)?,
            login: row.try_get(1)?,
            csrf_token: row.try_get(2)?,
            created_at: row.try_get(3)?,
            last_seen_at: row.try_get(4)?,
        }))
    }

    fn touch_session(&mut self, id_sha256: &str, now: Timestamp) -> anyhow::Result<()> {
        self.execute(TOUCH_SESSION, &[&id_sha256, &now])?;
        Ok(())
    }

    fn end_session(&mut self, id_sha256: &str) -> anyhow::Result<()> {
        self.execute(END_SESSION, &[&id_sha256])?;
        Ok(())
    }

    fn sign_in_failures(&mut self, subject: &str, since: Timestamp) -> anyhow::Result<u32> {
        let count: i64 = self
            .query_one(SIGN_IN_FAILURES, &[&subject, &since])?
            .try_get(0)?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn record_sign_in_failure(&mut self, subject: &str, at: Timestamp) -> anyhow::Result<()> {
        self.execute(RECORD_SIGN_IN_FAILURE, &[&subject, &at])?;
        Ok(())
    }

    fn clear_sign_in_failures(&mut self, subject: &str) -> anyhow::Result<()> {
        self.execute(CLEAR_SIGN_IN_FAILURES, &[&subject])?;
        Ok(())
    }

    fn purge_panel_records(
        &mut self,
        idle_before: Timestamp,
        opened_before: Timestamp,
        failures_before: Timestamp,
    ) -> anyhow::Result<u64> {
        let sessions = self.execute(PURGE_SESSIONS, &[&idle_before, &opened_before])?;
        let failures = self.execute(PURGE_SIGN_IN_FAILURES, &[&failures_before])?;
        Ok(sessions + failures)
    }

    fn order_refunds(&mut self, order_id: i64) -> anyhow::Result<Vec<Refund>> {
        self.query(ORDER_REFUNDS, &[&order_id])?
            .iter()
            .map(refund_from_row)
            .collect()
    }

    fn hourly_refund_counts(&mut self, since: Timestamp) -> anyhow::Result<Vec<HourlyRefundCount>> {
        self.query(HOURLY_REFUND_COUNTS, &[&since])?
            .iter()
            .map(|row| {
                let status: &str = row.try_get(1)?;
                let count: i64 = row.try_get(2)?;
                Ok(HourlyRefundCount {
                    hour_start: row.try_get(0)?,
                    status: RefundStatus::parse(status)
                        .with_context(|| format!("stored refund status '{status}'"))?,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }

    fn purge_answers(&mut self, before: Timestamp) -> anyhow::Result<u64> {
        self.execute(PURGE_ANSWERS, &[&before])
    }

    fn savepoint(&mut self) -> anyhow::Result<()> {
        self.batch("SAVEPOINT operation")?;
        self.state.in_savepoint = true;
        self.state.failed_in_savepoint = false;
        Ok(())
    }

    fn release_savepoint(&mut self) -> anyhow::Result<()> {
        self.state.in_savepoint = false;
        if self.state.failed_in_savepoint {
            // Releasing keeps the failure: the transaction is aborted.
            self.state.aborted = true;
        }
        self.batch("RELEASE SAVEPOINT operation")
    }

    fn rollback_to_savepoint(&mut self) -> anyhow::Result<()> {
        self.state.in_savepoint = false;
        self.state.failed_in_savepoint = false;
        self.batch("ROLLBACK TO SAVEPOINT operation; RELEASE SAVEPOINT operation")
    }

    fn enqueue_job(
        &mut self,
        refund_id: MovementId,
        operator: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.execute(ENQUEUE_JOB, &[&refund_id, &operator, &now_ms])
            .context("adding an outbox job")?;
        Ok(())
    }

    fn claim_due_jobs(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<RefundJob>> {
        let limit = i64::from(limit);
        let mut jobs = self
            .query(DUE_JOBS, &[&now_ms, &limit])?
            .iter()
            .map(job_from_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if jobs.is_empty() {
            return Ok(jobs);
        }
        let ids: Vec<i64> = jobs.iter().map(|job| job.refund_id).collect();
        self.execute(LEASE_JOBS, &[&ids, &(now_ms + lease_ms), &now_ms])?;
        for job in &mut jobs {
            job.lease += 1;
        }
        Ok(jobs)
    }

    fn job(&mut self, refund_id: MovementId) -> anyhow::Result<Option<RefundJob>> {
        let sql = self.pick(JOB, JOB_FOR_UPDATE);
        self.query_opt(sql, &[&refund_id])?
            .map(|row| job_from_row(&row))
            .transpose()
    }

    fn record_job_step(
        &mut self,
        step: &JobStep,
        lease: Option<i64>,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let changed = self.execute(
            RECORD_JOB_STEP,
            &[
                &step.refund_id,
                &step.state.as_str(),
                &i64::from(step.attempts),
                &step.next_attempt_ms,
                &step.last_error,
                &now_ms,
                &lease,
            ],
        )?;
        Ok(changed == 1)
    }

    fn settle(&mut self, refund_id: MovementId, settlement: &Settlement) -> anyhow::Result<()> {
        let changed = match settlement {
            Settlement::Completed { external_id } => {
                self.execute(SETTLE_COMPLETED, &[&refund_id, external_id])?
            }
            Settlement::Failed { .. } => self.execute(SETTLE_FAILED, &[&refund_id])?,
        };
        ensure_one_row(changed, refund_id)
    }

    fn reserve_refund(&mut self, refund: &NewRefund) -> anyhow::Result<MovementId> {
        let id: i64 = self.query_one(NEW_REFUND_ID, &[])?.try_get(0)?;
        let (method, payment_id) = match refund.method {
            RefundMethod::Automatic { payment_id } => ("automatic", Some(payment_id)),
            RefundMethod::Manual => ("manual", None),
        };
        let details = refund.details.as_ref();
        self.execute(
            INSERT_REFUND,
            &[
                &id,
                &refund.order_id,
                &refund.source.source_type.as_str(),
                &refund.source.id,
                &method,
                &payment_id,
                &refund.amount.minor,
                &refund.amount.currency.code(),
                &details.map(|d| d.payment_form_id),
                &details.and_then(|d| d.payment_system),
                &details.and_then(|d| d.account.as_deref()),
                &details.and_then(|d| d.client_account.as_deref()),
                &refund.created_at,
                &refund.caller,
            ],
        )
        .context("inserting a refund")?;
        Ok(id)
    }

    fn change_reserved_amount(&mut self, refund_id: MovementId, minor: i64) -> anyhow::Result<()> {
        let changed = self.execute(CHANGE_RESERVED_AMOUNT, &[&refund_id, &minor])?;
        ensure_one_row(changed, refund_id)
    }

    fn confirm(
        &mut self,
        refund_id: MovementId,
        status: RefundStatus,
        at: Timestamp,
    ) -> anyhow::Result<()> {
        let changed = self.execute(CONFIRM, &[&refund_id, &status.as_str(), &at])?;
        ensure_one_row(changed, refund_id)
    }

    fn cancel(&mut self, refund_id: MovementId) -> anyhow::Result<()> {
        let changed = self.execute(CANCEL, &[&refund_id])?;
        ensure_one_row(changed, refund_id)
    }
}
