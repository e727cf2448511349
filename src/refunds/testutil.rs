//! An in-memory ledger: the storage port's test double, so the rules can be unit-tested
//! without SQL. It keeps the port's contract the simple way: one lock around the whole ledger
//! (writes are serialized), a copy of the state as each transaction's undo log, and the same
//! running-total guard the schemas enforce.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use anyhow::{Context as _, bail, ensure};

use super::StoredResponse;
use super::audit::{AuditEntry, ChainLink, ChainedEntry};
use super::events::{Delivery, DeliveryStep, RefundEvent};
use super::ledger::{AuditSealing, Ledger, LedgerFuture, LedgerStore, LedgerWork};
use super::types::{
    AdminSession, AdminUser, ApiKey, ApiUser, HourlyRefundCount, JobState, JobStep, LedgerCounts,
    MovementId, NewRefund, Order, Payment, Refund, RefundJob, RefundMethod, RefundStatus,
    Settlement, Source, SourceFilter, SourceRef, SourceType, Timestamp,
};
use crate::money::Money;

/// A return or claim: its order, value and what is refunded against it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub order_id: i64,
    pub value: Money,
    pub refunded_minor: i64,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryLedger {
    pub orders: BTreeMap<i64, Order>,
    pub payments: BTreeMap<MovementId, Payment>,
    pub returns: BTreeMap<i64, Claim>,
    pub rmas: BTreeMap<i64, Claim>,
    pub refunds: BTreeMap<MovementId, Refund>,
    pub payment_forms: Vec<i64>,
    pub users: HashMap<String, ApiUser>,
    pub keys: HashMap<String, ApiKey>,
    /// Chained entries, then the ones waiting for the sealer (with their ids).
    pub chain: Vec<ChainedEntry>,
    pub unsealed: Vec<(i64, AuditEntry)>,
    pub answers: HashMap<(String, String), (String, StoredResponse, Timestamp)>,
    pub jobs: BTreeMap<MovementId, RefundJob>,
    pub admin_users: HashMap<String, AdminUser>,
    pub sessions: HashMap<String, AdminSession>,
    pub sign_in_failures: Vec<(String, Timestamp)>,
    pub next_id: MovementId,
    /// Whether a webhook endpoint is subscribed (events are kept only then), and the events.
    pub events_wanted: bool,
    pub events: Vec<RefundEvent>,
    next_entry_id: i64,
    savepoints: Vec<MemoryLedger>,
}

impl MemoryLedger {
    /// Adds a payment of `minor` to `order_id` (creating the order in the payment's currency).
    pub fn add_payment(&mut self, order_id: i64, payment: Payment) {
        let order = self.orders.entry(order_id).or_insert(Order {
            id: order_id,
            currency: payment.amount.currency,
            fulfilled: false,
            paid_minor: 0,
            refunded_minor: 0,
        });
        order.paid_minor += payment.amount.minor;
        self.next_id = self.next_id.max(payment.id + 1);
        self.payments.insert(payment.id, payment);
    }

    fn claims(&mut self, source_type: SourceType) -> Option<&mut BTreeMap<i64, Claim>> {
        match source_type {
            SourceType::Order => None,
            SourceType::Return => Some(&mut self.returns),
            SourceType::Rma => Some(&mut self.rmas),
        }
    }

    /// Moves `delta` minor units into (or out of) the running totals `refund` counts in, and
    /// refuses a total above what was paid, as the schemas' CHECK constraints do.
    fn reserve_delta(&mut self, refund: &Refund, delta: i64) -> anyhow::Result<()> {
        if let RefundMethod::Automatic { payment_id } = refund.method {
            let payment = self.payments.get_mut(&payment_id).context("payment")?;
            payment.refunded_minor += delta;
            ensure!(
                (0..=payment.amount.minor).contains(&payment.refunded_minor),
                "CHECK failed: payment {payment_id} refunded above what was paid"
            );
        }
        let order = self.orders.get_mut(&refund.order_id).context("order")?;
        order.refunded_minor += delta;
        ensure!(
            (0..=order.paid_minor).contains(&order.refunded_minor),
            "CHECK failed: order {} refunded above what was paid",
            order.id
        );
        if let Some(claims) = self.claims(refund.source.source_type) {
            let claim = claims.get_mut(&refund.source.id).context("claim")?;
            claim.refunded_minor += delta;
            ensure!(
                (0..=claim.value.minor).contains(&claim.refunded_minor),
                "CHECK failed: claim refunded above its value"
            );
        }
        Ok(())
    }

    fn change_status(
        &mut self,
        refund_id: MovementId,
        from: RefundStatus,
        to: RefundStatus,
    ) -> anyhow::Result<Refund> {
        let refund = self.refunds.get_mut(&refund_id).context("refund")?;
        ensure!(refund.status == from, "refund {refund_id} is not {from:?}");
        refund.status = to;
        let refund = refund.clone();
        let live = |status: RefundStatus| {
            matches!(
                status,
                RefundStatus::New | RefundStatus::Processing | RefundStatus::Completed
            )
        };
        if live(from) && !live(to) {
            self.reserve_delta(&refund, -refund.amount.minor)?;
        }
        Ok(refund)
    }
}

impl Ledger for MemoryLedger {
    fn order(&mut self, order_id: i64) -> anyhow::Result<Option<Order>> {
        Ok(self.orders.get(&order_id).cloned())
    }

    fn payment(&mut self, payment_id: MovementId) -> anyhow::Result<Option<Payment>> {
        Ok(self.payments.get(&payment_id).cloned())
    }

    fn order_payments(&mut self, order_id: i64) -> anyhow::Result<Vec<Payment>> {
        let mut payments: Vec<Payment> = self
            .payments
            .values()
            .filter(|payment| payment.order_id == order_id)
            .cloned()
            .collect();
        payments.sort_by_key(|payment| (payment.paid_at, payment.id));
        Ok(payments)
    }

    fn source(&mut self, source: SourceRef) -> anyhow::Result<Option<Source>> {
        let (order_id, outstanding_minor) = match self.claims(source.source_type) {
            None => match self.orders.get(&source.id) {
                Some(order) => (order.id, order.refundable_minor()),
                None => return Ok(None),
            },
            Some(claims) => match claims.get(&source.id) {
                Some(claim) => (claim.order_id, claim.value.minor - claim.refunded_minor),
                None => return Ok(None),
            },
        };
        let order = self
            .orders
            .get(&order_id)
            .cloned()
            .context("claim's order")?;
        Ok(Some(Source {
            source,
            order,
            outstanding_minor,
        }))
    }

    fn refund(&mut self, refund_id: MovementId) -> anyhow::Result<Option<Refund>> {
        Ok(self.refunds.get(&refund_id).cloned())
    }

    fn payment_form_exists(&mut self, payment_form_id: i64) -> anyhow::Result<bool> {
        Ok(self.payment_forms.contains(&payment_form_id))
    }

    fn unapproved_refunds(
        &mut self,
        filter: SourceFilter,
        offset: u64,
        limit: u32,
    ) -> anyhow::Result<(u64, Vec<Refund>)> {
        let matching: Vec<Refund> = self
            .refunds
            .values()
            .filter(|refund| refund.status == RefundStatus::New)
            .filter(|refund| match filter {
                SourceFilter::All => true,
                SourceFilter::Only(source_type) => refund.source.source_type == source_type,
            })
            .cloned()
            .collect();
        let total = matching.len() as u64;
        let page = matching
            .into_iter()
            .skip(usize::try_from(offset)?)
            .take(limit as usize)
            .collect();
        Ok((total, page))
    }

    fn api_user(&mut self, login: &str) -> anyhow::Result<Option<ApiUser>> {
        Ok(self.users.get(login).cloned())
    }

    fn api_key(&mut self, key_sha256: &str) -> anyhow::Result<Option<ApiKey>> {
        Ok(self.keys.get(key_sha256).cloned())
    }

    fn reserve_refund(&mut self, refund: &NewRefund) -> anyhow::Result<MovementId> {
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        let stored = Refund {
            id,
            order_id: refund.order_id,
            source: refund.source,
            method: refund.method,
            amount: refund.amount,
            status: RefundStatus::New,
            details: refund.details.clone(),
            created_at: refund.created_at,
            caller: refund.caller.clone(),
            confirmed_at: None,
            external_id: None,
        };
        self.reserve_delta(&stored, stored.amount.minor)?;
        self.refunds.insert(id, stored);
        Ok(id)
    }

    fn change_reserved_amount(&mut self, refund_id: MovementId, minor: i64) -> anyhow::Result<()> {
        let refund = self.refunds.get(&refund_id).cloned().context("refund")?;
        ensure!(refund.status == RefundStatus::New, "refund is not New");
        self.reserve_delta(&refund, minor - refund.amount.minor)?;
        if let Some(stored) = self.refunds.get_mut(&refund_id) {
            stored.amount.minor = minor;
        }
        Ok(())
    }

    fn confirm(
        &mut self,
        refund_id: MovementId,
        status: RefundStatus,
        at: Timestamp,
    ) -> anyhow::Result<()> {
        self.change_status(refund_id, RefundStatus::New, status)?;
        if let Some(refund) = self.refunds.get_mut(&refund_id) {
            refund.confirmed_at = Some(at);
        }
        Ok(())
    }

    fn cancel(&mut self, refund_id: MovementId) -> anyhow::Result<()> {
        self.change_status(refund_id, RefundStatus::New, RefundStatus::Canceled)
            .map(|_| ())
    }

    fn counts(&mut self) -> anyhow::Result<LedgerCounts> {
        let statuses = ["New", "Processing", "Completed", "Failed", "Canceled"];
        Ok(LedgerCounts {
            refunds_by_status: statuses
                .iter()
                .map(|status| {
                    let n = self
                        .refunds
                        .values()
                        .filter(|refund| refund.status.as_str() == *status)
                        .count();
                    ((*status).to_owned(), n as i64)
                })
                .collect(),
            webhook_pending: 0,
            webhook_oldest_pending_ms: None,
            outbox_pending: self
                .jobs
                .values()
                .filter(|job| job.state != JobState::Done)
                .count() as i64,
        })
    }

    fn audit_head(&mut self) -> anyhow::Result<ChainLink> {
        Ok(self
            .chain
            .last()
            .map_or_else(ChainLink::genesis, |last| ChainLink {
                seq: last.seq,
                prev_hash: last.prev_hash.clone(),
                hash: last.hash.clone(),
            }))
    }

    fn append_audit(&mut self, entry: &AuditEntry, link: Option<&ChainLink>) -> anyhow::Result<()> {
        match link {
            Some(link) => self.chain.push(ChainedEntry {
                seq: link.seq,
                entry: entry.clone(),
                prev_hash: link.prev_hash.clone(),
                hash: link.hash.clone(),
            }),
            None => {
                self.next_entry_id += 1;
                self.unsealed.push((self.next_entry_id, entry.clone()));
            }
        }
        Ok(())
    }

    fn lead_audit_sealing(&mut self) -> anyhow::Result<bool> {
        Ok(true)
    }

    fn unsealed_audit(&mut self, limit: u32) -> anyhow::Result<Vec<(i64, AuditEntry)>> {
        Ok(self.unsealed.iter().take(limit as usize).cloned().collect())
    }

    fn seal_audit(&mut self, entry_id: i64, link: &ChainLink) -> anyhow::Result<()> {
        let index = self
            .unsealed
            .iter()
            .position(|(id, _)| *id == entry_id)
            .context("no such unsealed entry")?;
        let (_, entry) = self.unsealed.remove(index);
        self.chain.push(ChainedEntry {
            seq: link.seq,
            entry,
            prev_hash: link.prev_hash.clone(),
            hash: link.hash.clone(),
        });
        Ok(())
    }

    fn payment_refunds(&mut self, payment_id: MovementId) -> anyhow::Result<Vec<Refund>> {
        Ok(self
            .refunds
            .values()
            .filter(|refund| refund.method == RefundMethod::Automatic { payment_id })
            .cloned()
            .collect())
    }

    fn refund_audit(
        &mut self,
        refund_id: MovementId,
    ) -> anyhow::Result<(Vec<ChainedEntry>, Vec<AuditEntry>)> {
        let chained = self
            .chain
            .iter()
            .filter(|chained| chained.entry.refund_id == refund_id)
            .cloned()
            .collect();
        let pending = self
            .unsealed
            .iter()
            .filter(|(_, entry)| entry.refund_id == refund_id)
            .map(|(_, entry)| entry.clone())
            .collect();
        Ok((chained, pending))
    }

    fn audit_chain_from(&mut self, from_seq: i64, limit: u32) -> anyhow::Result<Vec<ChainedEntry>> {
        Ok(self
            .chain
            .iter()
            .filter(|chained| chained.seq >= from_seq)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    fn idempotent_answer(
        &mut self,
        caller: &str,
        key: &str,
    ) -> anyhow::Result<Option<(String, StoredResponse)>> {
        Ok(self
            .answers
            .get(&(caller.to_owned(), key.to_owned()))
            .map(|(digest, answer, _)| (digest.clone(), answer.clone())))
    }

    fn remember_answer(
        &mut self,
        caller: &str,
        key: &str,
        request_digest: &str,
        answer: &StoredResponse,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let slot = (caller.to_owned(), key.to_owned());
        ensure!(
            !self.answers.contains_key(&slot),
            "UNIQUE failed: key taken"
        );
        self.answers
            .insert(slot, (request_digest.to_owned(), answer.clone(), now));
        Ok(())
    }

    fn forget_expired_answer(
        &mut self,
        caller: &str,
        key: &str,
        at: Timestamp,
    ) -> anyhow::Result<()> {
        let slot = (caller.to_owned(), key.to_owned());
        if self
            .answers
            .get(&slot)
            .is_some_and(|(_, _, stored)| *stored <= at)
        {
            self.answers.remove(&slot);
        }
        Ok(())
    }

    fn purge_answers(&mut self, before: Timestamp) -> anyhow::Result<u64> {
        let was = self.answers.len();
        self.answers.retain(|_, (_, _, at)| *at >= before);
        Ok((was - self.answers.len()) as u64)
    }

    fn savepoint(&mut self) -> anyhow::Result<()> {
        let mut copy = self.clone();
        copy.savepoints.clear();
        self.savepoints.push(copy);
        Ok(())
    }

    fn release_savepoint(&mut self) -> anyhow::Result<()> {
        self.savepoints.pop().context("no savepoint")?;
        Ok(())
    }

    fn rollback_to_savepoint(&mut self) -> anyhow::Result<()> {
        let saved = self.savepoints.pop().context("no savepoint")?;
        let outer = std::mem::take(&mut self.savepoints);
        *self = saved;
        self.savepoints = outer;
        Ok(())
    }

    fn wants_events(&mut self) -> anyhow::Result<bool> {
        Ok(self.events_wanted)
    }

    fn add_event(&mut self, event: &RefundEvent, _now_ms: i64) -> anyhow::Result<()> {
        self.events.push(event.clone());
        Ok(())
    }

    /// Deliveries are the webhook worker's, tested against the real adapters.
    fn claim_deliveries(
        &mut self,
        _now_ms: i64,
        _lease_ms: i64,
        _limit: u32,
    ) -> anyhow::Result<Vec<Delivery>> {
        Ok(Vec::new())
    }

    fn record_delivery(
        &mut self,
        _step: &DeliveryStep,
        _lease: i64,
        _now_ms: i64,
    ) -> anyhow::Result<bool> {
        Ok(false)
    }

    fn enqueue_job(
        &mut self,
        refund_id: MovementId,
        operator: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        let refund = self.refunds.get(&refund_id).context("refund")?;
        let RefundMethod::Automatic { payment_id } = refund.method else {
            bail!("only automatic refunds go to an operator");
        };
        let payment = self.payments.get(&payment_id).context("payment")?;
        let job = RefundJob {
            refund_id,
            operator: operator.to_owned(),
            state: JobState::Send,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
            created_ms: now_ms,
            lease: 0,
            payment_external_id: payment.external_transaction_id.clone().unwrap_or_default(),
            amount: refund.amount,
        };
        ensure!(
            self.jobs.insert(refund_id, job).is_none(),
            "a job exists already"
        );
        Ok(())
    }

    fn claim_due_jobs(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<RefundJob>> {
        let mut claimed = Vec::new();
        for job in self.jobs.values_mut() {
            if claimed.len() == limit as usize {
                break;
            }
            if job.state != JobState::Done && job.next_attempt_ms <= now_ms {
                let handed_out = job.clone();
                job.next_attempt_ms = now_ms + lease_ms;
                job.lease += 1;
                if job.state == JobState::Send {
                    job.state = JobState::Query;
                }
                claimed.push(RefundJob {
                    lease: job.lease,
                    ..handed_out
                });
            }
        }
        Ok(claimed)
    }

    fn job(&mut self, refund_id: MovementId) -> anyhow::Result<Option<RefundJob>> {
        Ok(self.jobs.get(&refund_id).cloned())
    }

    fn record_job_step(
        &mut self,
        step: &JobStep,
        lease: Option<i64>,
        _now_ms: i64,
    ) -> anyhow::Result<bool> {
        let Some(job) = self.jobs.get_mut(&step.refund_id) else {
            return Ok(false);
        };
        if job.state == JobState::Done || lease.is_some_and(|lease| lease != job.lease) {
            return Ok(false);
        }
        job.state = step.state;
        job.attempts = step.attempts;
        job.next_attempt_ms = step.next_attempt_ms;
        job.last_error = step.last_error.clone();
        Ok(true)
    }

    fn settle(&mut self, refund_id: MovementId, settlement: &Settlement) -> anyhow::Result<()> {
        match settlement {
            Settlement::Completed { external_id } => {
                self.change_status(refund_id, RefundStatus::Processing, RefundStatus::Completed)?;
                if let Some(refund) = self.refunds.get_mut(&refund_id) {
                    refund.external_id = Some(external_id.clone());
                }
            }
            Settlement::Failed { .. } => {
                self.change_status(refund_id, RefundStatus::Processing, RefundStatus::Failed)?;
            }
        }
        Ok(())
    }

    fn admin_user(&mut self, login: &str) -> anyhow::Result<Option<AdminUser>> {
        Ok(self.admin_users.get(login).cloned())
    }

    fn create_session(&mut self, session: &AdminSession) -> anyhow::Result<()> {
        ensure!(
            !self.sessions.contains_key(&session.id_sha256),
            "session id taken"
        );
        self.sessions
            .insert(session.id_sha256.clone(), session.clone());
        Ok(())
    }

    fn session(&mut self, id_sha256: &str) -> anyhow::Result<Option<AdminSession>> {
        Ok(self.sessions.get(id_sha256).cloned())
    }

    fn touch_session(&mut self, id_sha256: &str, now: Timestamp) -> anyhow::Result<()> {
        if let Some(session) = self.sessions.get_mut(id_sha256) {
            session.last_seen_at = now;
        }
        Ok(())
    }

    fn end_session(&mut self, id_sha256: &str) -> anyhow::Result<()> {
        self.sessions.remove(id_sha256);
        Ok(())
    }

    fn sign_in_failures(&mut self, subject: &str, since: Timestamp) -> anyhow::Result<u32> {
        let count = self
            .sign_in_failures
            .iter()
            .filter(|(who, at)| who == subject && *at >= since)
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn record_sign_in_failure(&mut self, subject: &str, at: Timestamp) -> anyhow::Result<()> {
        self.sign_in_failures.push((subject.to_owned(), at));
        Ok(())
    }

    fn clear_sign_in_failures(&mut self, subject: &str) -> anyhow::Result<()> {
        self.sign_in_failures.retain(|(who, _)| who != subject);
        Ok(())
    }

    fn purge_panel_records(
        &mut self,
        idle_before: Timestamp,
        opened_before: Timestamp,
        failures_before: Timestamp,
    ) -> anyhow::Result<u64> {
        let before = self.sessions.len() + self.sign_in_failures.len();
        self.sessions.retain(|_, session| {
            session.last_seen_at >= idle_before && session.created_at >= opened_before
        });
        self.sign_in_failures
            .retain(|(_, at)| *at >= failures_before);
        Ok((before - self.sessions.len() - self.sign_in_failures.len()) as u64)
    }

    fn order_refunds(&mut self, order_id: i64) -> anyhow::Result<Vec<Refund>> {
        Ok(self
            .refunds
            .values()
            .filter(|refund| refund.order_id == order_id)
            .cloned()
            .collect())
    }

    fn hourly_refund_counts(&mut self, since: Timestamp) -> anyhow::Result<Vec<HourlyRefundCount>> {
        let mut counts: BTreeMap<(Timestamp, &'static str), (RefundStatus, u64)> = BTreeMap::new();
        for refund in self.refunds.values().filter(|r| r.created_at >= since) {
            let hour_start = refund.created_at / 3600 * 3600;
            counts
                .entry((hour_start, refund.status.as_str()))
                .or_insert((refund.status, 0))
                .1 += 1;
        }
        Ok(counts
            .into_iter()
            .map(|((hour_start, _), (status, count))| HourlyRefundCount {
                hour_start,
                status,
                count,
            })
            .collect())
    }
}

/// The in-memory store: every transaction runs at once under one lock, on a copy of the ledger
/// that replaces it only when the work's changes stand.
pub struct MemoryStore {
    ledger: Mutex<MemoryLedger>,
    sealing: AuditSealing,
}

impl MemoryStore {
    pub fn new(ledger: MemoryLedger, sealing: AuditSealing) -> MemoryStore {
        MemoryStore {
            ledger: Mutex::new(ledger),
            sealing,
        }
    }

    /// A look at the ledger as committed.
    pub fn snapshot(&self) -> MemoryLedger {
        self.ledger.lock().expect("ledger lock").clone()
    }

    fn transaction(&self, mut work: LedgerWork, commit: bool) -> LedgerFuture {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        let mut working = ledger.clone();
        let keep = work(&mut working);
        let outcome = if !working.savepoints.is_empty() {
            Err(anyhow::anyhow!("a savepoint was left open"))
        } else {
            if keep && commit {
                *ledger = working;
            }
            Ok(())
        };
        Box::pin(std::future::ready(outcome))
    }
}

impl LedgerStore for MemoryStore {
    fn run_write(&self, work: LedgerWork) -> LedgerFuture {
        self.transaction(work, true)
    }

    fn run_read(&self, work: LedgerWork) -> LedgerFuture {
        self.transaction(work, false)
    }

    fn run_scan(&self, work: LedgerWork) -> LedgerFuture {
        self.transaction(work, false)
    }

    fn audit_sealing(&self) -> AuditSealing {
        self.sealing
    }

    fn close(&self) {}
}
