//! The storage port: what the domain needs of a ledger, owned by the domain.
//!
//! [`LedgerStore`] runs work in transactions; [`Ledger`] is what that work sees inside one.
//! Storage adapters (`crate::store::sqlite`, `crate::store::postgres`) implement both and import
//! the domain; the domain never imports them. `testutil` holds an in-memory double.
//!
//! # The concurrency contract
//!
//! Every adapter must give the rules these guarantees, whatever else runs beside them (other
//! requests, other gateway instances on the same database):
//!
//! 1. **A write is atomic and durable before it answers.** [`LedgerStore::write`] commits the
//!    work when it returns `Ok` and leaves no trace of it otherwise; it answers only after the
//!    commit is durable.
//! 2. **What a write reads of a payment, order or source stays true until it commits.** Reading
//!    a payment ([`Ledger::payment`], [`Ledger::order_payments`]), an order ([`Ledger::order`]),
//!    a return or claim ([`Ledger::source`]) or a refund ([`Ledger::refund`]) inside a write locks
//!    it against every other writer until the write ends (a single writer thread, or row locks).
//!    Two writes can therefore never both see the same refundable balance.
//! 3. **The over-refund guard is also the database's.** Σ live refunds ≤ what was paid (per
//!    payment, order, return and claim) is enforced by the schema too, so a rule that forgot a
//!    check fails the write instead of over-refunding.
//! 4. **Audit entries cannot fork the chain.** An entry is appended in the business
//!    transaction. It is chained (given its position and hashes) either at once
//!    ([`AuditSealing::InTransaction`]: the adapter serializes writes, so reading the head and
//!    appending cannot race) or later by one sealer at a time ([`AuditSealing::ByLeader`]:
//!    [`Ledger::lead_audit_sealing`] is exclusive across every instance until the transaction ends).
//! 5. **Claiming outbox jobs is exclusive.** A job claimed by [`Ledger::claim_due_jobs`] is
//!    claimed by no one else until its lease ends, and each claim carries a new fencing token:
//!    [`Ledger::record_job_step`] with a stale token changes nothing.
//! 6. **Ids come from one sequence** shared by payments and refunds, and are never handed out
//!    twice.
//! 7. **Reads see one snapshot.** [`LedgerStore::read`] and [`LedgerStore::scan`] run their work
//!    in one read-only transaction.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use super::StoredResponse;
use super::audit::{AuditEntry, ChainLink, ChainedEntry};
use super::events::{Delivery, DeliveryStep, RefundEvent};
use super::types::{
    AdminSession, AdminUser, ApiKey, ApiUser, HourlyRefundCount, JobStep, LedgerCounts, MovementId,
    NewRefund, Order, Payment, Refund, RefundJob, RefundStatus, Settlement, Source, SourceFilter,
    SourceRef, Timestamp,
};

/// The ledger as the domain sees it inside one transaction.
pub trait Ledger {
    fn order(&mut self, order_id: i64) -> anyhow::Result<Option<Order>>;
    fn payment(&mut self, payment_id: MovementId) -> anyhow::Result<Option<Payment>>;
    /// The order's payments, oldest first.
    fn order_payments(&mut self, order_id: i64) -> anyhow::Result<Vec<Payment>>;
    fn source(&mut self, source: SourceRef) -> anyhow::Result<Option<Source>>;
    fn refund(&mut self, refund_id: MovementId) -> anyhow::Result<Option<Refund>>;
    fn payment_form_exists(&mut self, payment_form_id: i64) -> anyhow::Result<bool>;
    /// One page of unapproved (`New`) refunds, oldest first, and how many there are in all.
    fn unapproved_refunds(
        &mut self,
        filter: SourceFilter,
        offset: u64,
        limit: u32,
    ) -> anyhow::Result<(u64, Vec<Refund>)>;
    fn api_user(&mut self, login: &str) -> anyhow::Result<Option<ApiUser>>;
    /// The API key whose SHA-256 (lowercase hex) is `key_sha256`, revoked or not.
    fn api_key(&mut self, key_sha256: &str) -> anyhow::Result<Option<ApiKey>>;

    /// Records a `New` refund, reserving its amount; returns its id from the movements sequence.
    fn reserve_refund(&mut self, refund: &NewRefund) -> anyhow::Result<MovementId>;
    /// Changes the amount a `New` refund reserves.
    fn change_reserved_amount(&mut self, refund_id: MovementId, minor: i64) -> anyhow::Result<()>;
    /// Approves a refund: `Completed` (manual) or `Processing` (automatic).
    fn confirm(
        &mut self,
        refund_id: MovementId,
        status: RefundStatus,
        at: Timestamp,
    ) -> anyhow::Result<()>;
    /// Cancels a `New` refund, releasing its amount.
    fn cancel(&mut self, refund_id: MovementId) -> anyhow::Result<()>;

    /// Refunds by status and the outbox depth, for monitoring.
    fn counts(&mut self) -> anyhow::Result<LedgerCounts>;
    /// The last chained entry's position and hash, or position 0 and the chain's genesis.
    fn audit_head(&mut self) -> anyhow::Result<ChainLink>;
    /// Appends an entry: chained at once when `link` is given (the adapter seals in the
    /// transaction), else left for the sealer.
    fn append_audit(&mut self, entry: &AuditEntry, link: Option<&ChainLink>) -> anyhow::Result<()>;
    /// Takes the sealer's role until the transaction ends; `false` if another transaction has it.
    fn lead_audit_sealing(&mut self) -> anyhow::Result<bool>;
    /// Up to `limit` committed entries not chained yet, in the order they were appended, each
    /// with the adapter's id for it.
    fn unsealed_audit(&mut self, limit: u32) -> anyhow::Result<Vec<(i64, AuditEntry)>>;
    /// Chains the unsealed entry `entry_id` at `link`.
    fn seal_audit(&mut self, entry_id: i64, link: &ChainLink) -> anyhow::Result<()>;
    /// Every refund ever reserved on the payment (automatic refunds drawn from it), by id.
    fn payment_refunds(&mut self, payment_id: MovementId) -> anyhow::Result<Vec<Refund>>;
    /// One refund's chained audit entries in chain order, and its entries not chained yet.
    fn refund_audit(
        &mut self,
        refund_id: MovementId,
    ) -> anyhow::Result<(Vec<ChainedEntry>, Vec<AuditEntry>)>;
    /// Up to `limit` chained entries from chain position `from_seq` on, in order.
    fn audit_chain_from(&mut self, from_seq: i64, limit: u32) -> anyhow::Result<Vec<ChainedEntry>>;

    /// The stored answer under an idempotency key: the request's digest and the answer.
    fn idempotent_answer(
        &mut self,
        caller: &str,
        key: &str,
    ) -> anyhow::Result<Option<(String, StoredResponse)>>;
    /// Stores the answer under a key. The key is claimed in the business transaction, so of two
    /// transactions racing with one key (on two instances) only one commits; the other fails
    /// and is retried by its adapter, then finds the stored answer.
    fn remember_answer(
        &mut self,
        caller: &str,
        key: &str,
        request_digest: &str,
        answer: &StoredResponse,
        now: Timestamp,
    ) -> anyhow::Result<()>;
    /// Forgets the answer under `caller`'s `key` if it was stored at or before `at` (it has
    /// expired), so that an expired key is never replayed, whenever the purge runs.
    fn forget_expired_answer(
        &mut self,
        caller: &str,
        key: &str,
        at: Timestamp,
    ) -> anyhow::Result<()>;
    /// Forgets answers stored before `before`; returns how many.
    fn purge_answers(&mut self, before: Timestamp) -> anyhow::Result<u64>;

    /// A nested transaction inside the current one, so an operation's own changes can be undone
    /// while what the transaction records about it (an idempotent answer) is kept.
    fn savepoint(&mut self) -> anyhow::Result<()>;
    fn release_savepoint(&mut self) -> anyhow::Result<()>;
    fn rollback_to_savepoint(&mut self) -> anyhow::Result<()>;

    /// Whether any webhook endpoint is enabled (events are written only then).
    fn wants_events(&mut self) -> anyhow::Result<bool>;
    /// Stores `event` and queues a delivery to every enabled endpoint subscribed to its type.
    fn add_event(&mut self, event: &RefundEvent, now_ms: i64) -> anyhow::Result<()>;
    /// Claims up to `limit` deliveries due at `now_ms` under a new fencing token each, leased
    /// until `now_ms + lease_ms`. Per endpoint and refund only the oldest pending one is due,
    /// so a receiver sees a refund's events in order. Exclusive, like outbox jobs.
    fn claim_deliveries(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<Delivery>>;
    /// Records an attempt's step if `lease` is still the delivery's token; `false` otherwise.
    fn record_delivery(
        &mut self,
        step: &DeliveryStep,
        lease: i64,
        now_ms: i64,
    ) -> anyhow::Result<bool>;

    /// Adds the outbox job that sends a just-confirmed automatic refund to `operator`.
    fn enqueue_job(
        &mut self,
        refund_id: MovementId,
        operator: &str,
        now_ms: i64,
    ) -> anyhow::Result<()>;
    /// Claims up to `limit` jobs due at `now_ms`, leasing each until `now_ms + lease_ms` under a
    /// new fencing token (`RefundJob::lease`), so that a worker that dies mid-step leaves the
    /// job to be retried after the lease, starting with a status query (the send may have
    /// arrived). Exclusive: no job is claimed twice at once.
    fn claim_due_jobs(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<RefundJob>>;
    fn job(&mut self, refund_id: MovementId) -> anyhow::Result<Option<RefundJob>>;
    /// Records what the worker will do next for a job that is not done. With `lease`, only if
    /// the job's fencing token is still that one; `false` when nothing was recorded.
    fn record_job_step(
        &mut self,
        step: &JobStep,
        lease: Option<i64>,
        now_ms: i64,
    ) -> anyhow::Result<bool>;
    /// Settles a `Processing` refund: `Completed` with the operator's id, or `Failed`
    /// (releasing its amount).
    fn settle(&mut self, refund_id: MovementId, settlement: &Settlement) -> anyhow::Result<()>;

    // The admin panel: its users and sessions live in the ledger so that every instance on one
    // database shares them, and its pages read what the API does not show.

    fn admin_user(&mut self, login: &str) -> anyhow::Result<Option<AdminUser>>;
    fn create_session(&mut self, session: &AdminSession) -> anyhow::Result<()>;
    /// The session whose id hashes to `id_sha256`, expired or not (the caller judges).
    fn session(&mut self, id_sha256: &str) -> anyhow::Result<Option<AdminSession>>;
    fn touch_session(&mut self, id_sha256: &str, now: Timestamp) -> anyhow::Result<()>;
    /// Ends a session (sign-out, or found expired); ending an unknown one is not an error.
    fn end_session(&mut self, id_sha256: &str) -> anyhow::Result<()>;
    /// Failed sign-ins of `subject` (`login:{login}` or `address:{ip}`) at or after `since`.
    fn sign_in_failures(&mut self, subject: &str, since: Timestamp) -> anyhow::Result<u32>;
    fn record_sign_in_failure(&mut self, subject: &str, at: Timestamp) -> anyhow::Result<()>;
    fn clear_sign_in_failures(&mut self, subject: &str) -> anyhow::Result<()>;
    /// Forgets sessions last used before `idle_before` or opened before `opened_before`, and
    /// failed sign-ins before `failures_before`; returns how many rows went.
    fn purge_panel_records(
        &mut self,
        idle_before: Timestamp,
        opened_before: Timestamp,
        failures_before: Timestamp,
    ) -> anyhow::Result<u64>;
    /// Every refund of an order (for the order itself, its returns and its claims), oldest first.
    fn order_refunds(&mut self, order_id: i64) -> anyhow::Result<Vec<Refund>>;
    /// The hash of the chained entry at position `seq`.
    /// Refunds added at or after `since`, counted per UTC hour and current status.
    fn hourly_refund_counts(&mut self, since: Timestamp) -> anyhow::Result<Vec<HourlyRefundCount>>;
}

/// The ledger cannot be reached now (its database is down, refusing or not answering in time).
/// An adapter adds it as context to such failures (`error.context(LedgerUnavailable)`), so that
/// a face can say "try again later" (REST: 503) rather than "failed"; the error is otherwise an
/// internal one (logged, never shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerUnavailable;

impl std::fmt::Display for LedgerUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the ledger's database is unavailable")
    }
}

/// How an adapter chains audit entries (contract point 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSealing {
    /// Writes are serialized: each entry is chained in its own transaction.
    InTransaction,
    /// Writes run side by side: entries are chained after commit, in batches, by whoever holds
    /// [`Ledger::lead_audit_sealing`].
    ByLeader,
}

/// Work run inside one transaction. It returns whether its changes stand (`true`) or must be
/// undone (`false`); what it computes it hands out through what it captured. An adapter may run
/// it again in a fresh transaction when the database refused the first one for a transient
/// reason (a serialization failure, a deadlock); only the last run's outcome counts.
pub type LedgerWork = Box<dyn FnMut(&mut dyn Ledger) -> bool + Send>;

/// A transaction's completion: `Ok` once committed (writes) or ended (reads).
pub type LedgerFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Runs work in transactions. Object-safe; the typed helpers are on `dyn LedgerStore`.
pub trait LedgerStore: Send + Sync {
    /// Runs `work` in one write transaction (contract points 1 to 6): committed when it returns
    /// `true`, rolled back when it returns `false` or panics. The future resolves once the
    /// outcome is durable; `Err` means nothing of `work` was kept.
    fn run_write(&self, work: LedgerWork) -> LedgerFuture;
    /// Runs `work` in one read transaction whose cost is bounded (a lookup by key, a short page).
    fn run_read(&self, work: LedgerWork) -> LedgerFuture;
    /// Runs `work` in one read transaction that may walk many rows, off the async threads.
    fn run_scan(&self, work: LedgerWork) -> LedgerFuture;
    /// How this adapter chains audit entries.
    fn audit_sealing(&self) -> AuditSealing;
    /// `Err` once the store has stopped taking writes for good (SQLite: its files were deleted
    /// or replaced on disk); readiness fails then.
    fn check_usable(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Resolves when the store has stopped for good, so that the process can exit for its
    /// supervisor to restart it into a clear state.
    fn stopped_for_good(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(std::future::pending())
    }
    /// Stops accepting work, finishes what was queued, and waits for it.
    fn close(&self);
}

impl dyn LedgerStore {
    /// Runs `work` in one write transaction: committed when it returns `Ok`, rolled back when
    /// it returns `Err` or panics.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut dyn Ledger) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
    {
        let (work, outcome) = typed(work);
        match self.run_write(work).await {
            Ok(()) => take(&outcome),
            Err(error) => match take_failed(&outcome) {
                // The work's own error is the better answer when it failed by itself.
                Some(failed) => Err(failed),
                None => Err(error.context("the write was not committed").into()),
            },
        }
    }

    /// Runs `work` in one short read transaction.
    pub async fn read<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut dyn Ledger) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
    {
        let (work, outcome) = typed(work);
        self.run_read(work).await?;
        take(&outcome)
    }

    /// Runs `work` in one long read transaction, off the async threads.
    pub async fn scan<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut dyn Ledger) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
    {
        let (work, outcome) = typed(work);
        self.run_scan(work).await?;
        take(&outcome)
    }
}

type Slot<T, E> = Arc<Mutex<Option<Result<T, E>>>>;

/// Wraps typed work as [`LedgerWork`], with the slot its outcome lands in.
fn typed<T, E, F>(work: F) -> (LedgerWork, Slot<T, E>)
where
    F: FnMut(&mut dyn Ledger) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let outcome: Slot<T, E> = Arc::new(Mutex::new(None));
    let slot = outcome.clone();
    let mut work = work;
    let work: LedgerWork = Box::new(move |ledger| {
        let result = work(ledger);
        let keep = result.is_ok();
        if let Ok(mut slot) = slot.lock() {
            *slot = Some(result);
        }
        keep
    });
    (work, outcome)
}

fn take<T, E: From<anyhow::Error>>(outcome: &Slot<T, E>) -> Result<T, E> {
    outcome
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
        .unwrap_or_else(|| {
            Err(
                anyhow::anyhow!("a ledger transaction ended without an outcome (it panicked)")
                    .into(),
            )
        })
}

fn take_failed<T, E>(outcome: &Slot<T, E>) -> Option<E> {
    match outcome.lock().ok().and_then(|mut slot| slot.take()) {
        Some(Err(error)) => Some(error),
        _ => None,
    }
}
