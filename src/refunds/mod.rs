//! The refunds domain: the nine operations, their rules and fault codes.
//!
//! This module knows no XML, JSON, HTTP or SQL. The faces (`soap`, later REST) parse requests
//! into the types below and call one method of [`RefundService`] per operation; the ledger is
//! reached only through [`crate::store::Ledger`], inside one transaction per operation.

pub mod error;
pub mod outbox;
pub mod types;

use std::cmp::min;

use chrono_tz::Tz;
use sha1::{Digest as _, Sha1};

use std::sync::Arc;

use crate::clock::{Clock, neighbouring_local_dates, system_millis};
use crate::money::{AmountError, Currency, Money, minor_to_decimal};
use crate::store::{Ledger, Store};
pub use error::{OperationKind, RefundError};
use outbox::{OperatorRouting, RetryPolicy};
use types::{
    JobState, JobStep, ManualDetails, MovementId, NewRefund, OperatorAnswer, Refund, RefundJob,
    RefundMethod, RefundStatus, RequestedAmount, Scopes, Settlement, Source, SourceFilter,
    SourceRef, SourceType, Timestamp,
};

/// `addAutomaticRefund`: refund a return's or claim's outstanding value automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddAutomaticRefund {
    pub source: SourceRef,
}

/// `addAutomaticRefundForOrder`: refund part of one payment of an order automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddAutomaticRefundForOrder {
    pub order_id: i64,
    pub payment_id: MovementId,
    pub amount: RequestedAmount,
}

/// `addManualRefund`: record a refund the shop pays out itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddManualRefund {
    pub source: SourceRef,
    pub amount: RequestedAmount,
    pub details: ManualDetails,
}

/// Names one refund: the source it belongs to and its id (`paymentId` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundAt {
    pub source: SourceRef,
    pub refund_id: MovementId,
}

/// `updateRefund`: change the amount of a `New` refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRefund {
    pub refund: RefundAt,
    pub amount: RequestedAmount,
}

/// `retrieveRefundsList`: one page of unapproved refunds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrieveRefundsList {
    pub filter: SourceFilter,
    /// Counts from 0.
    pub page: u32,
    /// 1 to [`MAX_RESULTS_LIMIT`].
    pub limit: u32,
}

pub const MAX_RESULTS_LIMIT: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PossibleAutoRefund {
    pub payment_id: MovementId,
    /// What can be refunded from the payment now.
    pub value: Money,
    /// `value` is the whole payment.
    pub full: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundStatusView {
    pub date_add: Timestamp,
    pub value: Money,
    pub status: RefundStatus,
    pub date_confirm: Option<Timestamp>,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundsPage {
    pub total: u64,
    pub page: u32,
    pub limit: u32,
    pub refunds: Vec<Refund>,
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub login: String,
    pub scopes: Scopes,
}

/// Legacy credentials: `authenticate{userLogin, authenticateKey}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyCredentials {
    pub login: String,
    pub key: String,
}

/// What a caller presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Legacy(LegacyCredentials),
    /// An API key (`X-API-KEY` or `Authorization: Bearer`).
    ApiKey(String),
}

/// The scope each operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    Confirm,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Confirm => "confirm",
        }
    }

    fn granted(self, scopes: Scopes) -> bool {
        match self {
            Scope::Read => scopes.read,
            Scope::Write => scopes.write,
            Scope::Confirm => scopes.confirm,
        }
    }
}

/// The nine operations over one store, and the outbox steps of confirmed automatic refunds.
#[derive(Clone)]
pub struct RefundService {
    store: Store,
    clock: Clock,
    timezone: Tz,
    routing: Arc<OperatorRouting>,
    /// Woken when a job is added, so the outbox worker sends it at once.
    jobs_added: Arc<tokio::sync::Notify>,
}

/// What a callback from an operator did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The refund is now Completed or Failed.
    Settled,
    /// The refund already had a definite outcome, or the answer was not definite: nothing changed.
    Ignored,
}

impl RefundService {
    pub fn new(
        store: Store,
        clock: Clock,
        timezone: Tz,
        routing: OperatorRouting,
    ) -> RefundService {
        RefundService {
            store,
            clock,
            timezone,
            routing: Arc::new(routing),
            jobs_added: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Resolves when a job has been added since the last call (or at once, if one was).
    pub async fn job_added(&self) {
        self.jobs_added.notified().await;
    }

    /// Claims the outbox jobs due now (see `Ledger::claim_due_jobs`).
    pub async fn claim_jobs(
        &self,
        policy: RetryPolicy,
        limit: u32,
    ) -> Result<Vec<RefundJob>, RefundError> {
        let now_ms = system_millis();
        self.store
            .write(move |ledger| Ok(ledger.claim_due_jobs(now_ms, policy.lease_ms, limit)?))
            .await
    }

    /// Records an operator's answer about `job`: the next step, and the refund's outcome when
    /// the answer is definite. `None` when the job was settled meanwhile (by a callback): then
    /// nothing changes.
    pub async fn record_answer(
        &self,
        job: RefundJob,
        answer: OperatorAnswer,
        policy: RetryPolicy,
        poll_after_ms: i64,
        jitter_permille: i64,
    ) -> Result<Option<JobStep>, RefundError> {
        let now_ms = system_millis();
        self.store
            .write(move |ledger| {
                let current = ledger.job(job.refund_id)?;
                let Some(current) = current.filter(|current| current.state != JobState::Done)
                else {
                    return Ok(None);
                };
                let step = outbox::plan(
                    &current,
                    answer,
                    &policy,
                    poll_after_ms,
                    now_ms,
                    jitter_permille,
                );
                ledger.record_job_step(&step, now_ms)?;
                if let Some(settlement) = &step.settlement {
                    ledger.settle(job.refund_id, settlement)?;
                }
                Ok(Some(step))
            })
            .await
    }

    /// An operator's asynchronous answer about refund `refund_id`. `None` when the operator has
    /// no such refund in our outbox (unknown id, or another operator's refund).
    pub async fn operator_callback(
        &self,
        operator: &str,
        refund_id: MovementId,
        answer: OperatorAnswer,
    ) -> Result<Option<CallbackOutcome>, RefundError> {
        let now_ms = system_millis();
        let operator = operator.to_owned();
        self.store
            .write(move |ledger| {
                let Some(job) = ledger
                    .job(refund_id)?
                    .filter(|job| job.operator == operator)
                else {
                    return Ok(None);
                };
                if job.state == JobState::Done {
                    return Ok(Some(CallbackOutcome::Ignored));
                }
                let settlement = match answer {
                    OperatorAnswer::Completed { external_id } => {
                        Settlement::Completed { external_id }
                    }
                    OperatorAnswer::Declined { reason } => Settlement::Failed { reason },
                    _ => return Ok(Some(CallbackOutcome::Ignored)),
                };
                let last_error = match &settlement {
                    Settlement::Failed { reason } => Some(reason.clone()),
                    Settlement::Completed { .. } => None,
                };
                let step = JobStep {
                    refund_id,
                    state: JobState::Done,
                    attempts: job.attempts,
                    next_attempt_ms: now_ms,
                    last_error,
                    settlement: Some(settlement.clone()),
                };
                ledger.record_job_step(&step, now_ms)?;
                ledger.settle(refund_id, &settlement)?;
                Ok(Some(CallbackOutcome::Settled))
            })
            .await
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// Checks the caller's credentials, then the scope the operation needs.
    ///
    /// Legacy: `authenticateKey = sha1(YYYYMMDD + sha1(password))` in lowercase hex, with the
    /// shop's local date of yesterday, today or tomorrow (clients' clocks and time zones drift
    /// around midnight). API key: its SHA-256 names a key that is not revoked.
    pub async fn authenticate(
        &self,
        credentials: Option<Credentials>,
        needs: Scope,
    ) -> Result<Caller, RefundError> {
        let caller = match credentials.ok_or(RefundError::Unauthenticated)? {
            Credentials::Legacy(legacy) => self.legacy_caller(legacy).await?,
            Credentials::ApiKey(key) => self.api_key_caller(&key).await?,
        };
        if !needs.granted(caller.scopes) {
            return Err(RefundError::Forbidden(needs.name()));
        }
        Ok(caller)
    }

    async fn legacy_caller(&self, credentials: LegacyCredentials) -> Result<Caller, RefundError> {
        let dates = neighbouring_local_dates(self.clock.now(), self.timezone);
        let login = credentials.login.clone();
        let user = self
            .store
            .read(move |ledger| ledger.api_user(&login).map_err(RefundError::from))
            .await?;
        let user = user.ok_or(RefundError::Unauthenticated)?;
        let key = credentials.key.trim().to_ascii_lowercase();
        if !dates
            .iter()
            .any(|date| legacy_key(date, &user.password_sha1_hex) == key)
        {
            return Err(RefundError::Unauthenticated);
        }
        Ok(Caller {
            login: user.login,
            scopes: user.scopes,
        })
    }

    async fn api_key_caller(&self, key: &str) -> Result<Caller, RefundError> {
        let digest = api_key_digest(key.trim());
        let found = self
            .store
            .read(move |ledger| ledger.api_key(&digest).map_err(RefundError::from))
            .await?;
        match found {
            Some(key) if key.revoked_at.is_none() => Ok(Caller {
                login: format!("key:{}", key.name),
                scopes: key.scopes,
            }),
            _ => Err(RefundError::Unauthenticated),
        }
    }

    pub async fn add_automatic_refund(
        &self,
        caller: &Caller,
        request: AddAutomaticRefund,
    ) -> Result<MovementId, RefundError> {
        let now = self.clock.now();
        let created_by = caller.login.clone();
        self.store
            .write(move |ledger| add_automatic_refund(ledger, &request, now, created_by))
            .await
    }

    pub async fn add_automatic_refund_for_order(
        &self,
        caller: &Caller,
        request: AddAutomaticRefundForOrder,
    ) -> Result<MovementId, RefundError> {
        let now = self.clock.now();
        let created_by = caller.login.clone();
        self.store
            .write(move |ledger| add_automatic_refund_for_order(ledger, &request, now, created_by))
            .await
    }

    pub async fn add_manual_refund(
        &self,
        caller: &Caller,
        request: AddManualRefund,
    ) -> Result<MovementId, RefundError> {
        let now = self.clock.now();
        let created_by = caller.login.clone();
        self.store
            .write(move |ledger| add_manual_refund(ledger, &request, now, created_by))
            .await
    }

    pub async fn get_possible_auto_refunds(
        &self,
        source: SourceRef,
    ) -> Result<Vec<PossibleAutoRefund>, RefundError> {
        self.store
            .read(move |ledger| possible_auto_refunds(ledger, source))
            .await
    }

    pub async fn get_refund_status(&self, at: RefundAt) -> Result<RefundStatusView, RefundError> {
        self.store
            .read(move |ledger| {
                let refund = find_refund(ledger, at)?;
                Ok(RefundStatusView {
                    date_add: refund.created_at,
                    value: refund.amount,
                    status: refund.status,
                    date_confirm: refund.confirmed_at,
                    external_id: refund.external_id,
                })
            })
            .await
    }

    pub async fn update_refund(&self, request: UpdateRefund) -> Result<bool, RefundError> {
        self.store
            .write(move |ledger| update_refund(ledger, &request))
            .await
    }

    pub async fn confirm_refund(&self, at: RefundAt) -> Result<bool, RefundError> {
        let now = self.clock.now();
        let routing = self.routing.clone();
        let confirmed = self
            .store
            .write(move |ledger| confirm_refund(ledger, at, now, &routing))
            .await?;
        self.jobs_added.notify_one();
        Ok(confirmed)
    }

    pub async fn cancel_refund(&self, at: RefundAt) -> Result<bool, RefundError> {
        self.store
            .write(move |ledger| cancel_refund(ledger, at))
            .await
    }

    pub async fn retrieve_refunds_list(
        &self,
        request: RetrieveRefundsList,
    ) -> Result<RefundsPage, RefundError> {
        if request.limit == 0 || request.limit > MAX_RESULTS_LIMIT {
            return Err(RefundError::InvalidParameters(format!(
                "resultsLimit must be between 1 and {MAX_RESULTS_LIMIT}, got {}",
                request.limit
            )));
        }
        self.store
            .read(move |ledger| {
                let offset = u64::from(request.page) * u64::from(request.limit);
                let (total, refunds) =
                    ledger.unapproved_refunds(request.filter, offset, request.limit)?;
                Ok(RefundsPage {
                    total,
                    page: request.page,
                    limit: request.limit,
                    refunds,
                })
            })
            .await
    }
}

/// `sha1(date + password_sha1_hex)` in lowercase hex.
pub fn legacy_key(date: &str, password_sha1_hex: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(date.as_bytes());
    hasher.update(password_sha1_hex.as_bytes());
    hex::encode(hasher.finalize())
}

/// A new random API key: `rgk_` and 43 URL-safe characters (256 bits).
pub fn new_api_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("no randomness for a key: {error}"))?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut key = String::from("rgk_");
    let mut bits: u32 = 0;
    let mut count = 0;
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        count += 8;
        while count >= 6 {
            count -= 6;
            key.push(char::from(ALPHABET[((bits >> count) & 63) as usize]));
        }
    }
    if count > 0 {
        key.push(char::from(ALPHABET[((bits << (6 - count)) & 63) as usize]));
    }
    Ok(key)
}

/// What the ledger keeps of an API key: its SHA-256 in lowercase hex. Keys are 256 random bits,
/// so a fast hash is enough.
pub fn api_key_digest(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// `sha1(password)` in lowercase hex, as the legacy scheme stores it.
pub fn password_sha1_hex(password: &str) -> String {
    hex::encode(Sha1::digest(password.as_bytes()))
}

fn load_source(ledger: &mut dyn Ledger, source: SourceRef) -> Result<Source, RefundError> {
    ledger.source(source)?.ok_or(RefundError::SourceNotFound {
        source_type: source.source_type.as_str(),
        id: source.id,
    })
}

/// Checks a requested amount against the currency it must be in: positive, in that currency,
/// and no finer than its minor unit.
fn checked_amount(requested: &RequestedAmount, currency: Currency) -> Result<Money, RefundError> {
    if requested.value <= rust_decimal::Decimal::ZERO {
        return Err(RefundError::AmountNotPositive);
    }
    let Some(given) = Currency::parse(&requested.currency) else {
        return Err(RefundError::InvalidCurrency(format!(
            "'{}' is not an ISO 4217 currency code",
            error::quote(&requested.currency)
        )));
    };
    if given != currency {
        return Err(RefundError::InvalidCurrency(format!(
            "a refund is paid in the currency of what it refunds ({currency}), not {given}"
        )));
    }
    Money::from_decimal(requested.value, currency).map_err(|error| match error {
        AmountError::SubUnit { exponent } => RefundError::InvalidParameters(format!(
            "refundValue {} has more decimal places than {currency} allows ({exponent})",
            requested.value
        )),
        AmountError::NotPositive => RefundError::AmountNotPositive,
        AmountError::TooLarge => {
            RefundError::InvalidParameters(format!("refundValue {} is too large", requested.value))
        }
    })
}

fn exceeds(available_minor: i64, currency: Currency) -> RefundError {
    RefundError::AmountExceedsRefundable {
        available: minor_to_decimal(available_minor.max(0), currency),
        currency: currency.code().to_owned(),
    }
}

fn add_automatic_refund(
    ledger: &mut dyn Ledger,
    request: &AddAutomaticRefund,
    now: Timestamp,
    created_by: String,
) -> Result<MovementId, RefundError> {
    if request.source.source_type == SourceType::Order {
        return Err(RefundError::SourceTypeNotAllowed {
            given: "order",
            expected: "return or rma",
        });
    }
    let source = load_source(ledger, request.source)?;
    let currency = source.order.currency;
    if source.outstanding_minor <= 0 {
        return Err(RefundError::AutoRefundNotPossible(format!(
            "{} {} is already fully refunded",
            request.source.source_type.as_str(),
            request.source.id
        )));
    }
    let payments: Vec<_> = ledger
        .order_payments(source.order.id)?
        .into_iter()
        .filter(|payment| payment.auto_refund && payment.refundable_minor() > 0)
        .collect();
    if payments.is_empty() {
        return Err(RefundError::NoRefundablePayments(source.order.id));
    }
    let from_payments: i64 = payments
        .iter()
        .map(|payment| payment.refundable_minor())
        .sum();
    let available = min(from_payments, source.order.refundable_minor());
    if source.outstanding_minor > available {
        return Err(exceeds(available, currency));
    }
    // Oldest payment first, one refund per payment used; all of them or none.
    let mut remaining = source.outstanding_minor;
    let mut first_id = None;
    for payment in payments {
        if remaining == 0 {
            break;
        }
        let take = min(remaining, payment.refundable_minor());
        let id = ledger.reserve_refund(&NewRefund {
            order_id: source.order.id,
            source: request.source,
            method: RefundMethod::Automatic {
                payment_id: payment.id,
            },
            amount: Money {
                minor: take,
                currency,
            },
            details: None,
            created_at: now,
            created_by: created_by.clone(),
        })?;
        first_id.get_or_insert(id);
        remaining -= take;
    }
    first_id
        .ok_or_else(|| anyhow::anyhow!("no refund was reserved for an outstanding value").into())
}

fn add_automatic_refund_for_order(
    ledger: &mut dyn Ledger,
    request: &AddAutomaticRefundForOrder,
    now: Timestamp,
    created_by: String,
) -> Result<MovementId, RefundError> {
    let source = SourceRef {
        source_type: SourceType::Order,
        id: request.order_id,
    };
    let order = load_source(ledger, source)?.order;
    if order.fulfilled {
        return Err(RefundError::OrderFulfilled(order.id));
    }
    let payment = ledger
        .payment(request.payment_id)?
        .filter(|payment| payment.order_id == order.id)
        .ok_or_else(|| {
            RefundError::InvalidPayment(format!(
                "{} is not a payment of order {}",
                request.payment_id, order.id
            ))
        })?;
    if !payment.auto_refund {
        return Err(RefundError::PaymentNotAutoRefundable(payment.id));
    }
    let amount = checked_amount(&request.amount, payment.amount.currency)?;
    let available = min(payment.refundable_minor(), order.refundable_minor());
    if amount.minor > available {
        return Err(exceeds(available, amount.currency));
    }
    Ok(ledger.reserve_refund(&NewRefund {
        order_id: order.id,
        source,
        method: RefundMethod::Automatic {
            payment_id: payment.id,
        },
        amount,
        details: None,
        created_at: now,
        created_by,
    })?)
}

fn add_manual_refund(
    ledger: &mut dyn Ledger,
    request: &AddManualRefund,
    now: Timestamp,
    created_by: String,
) -> Result<MovementId, RefundError> {
    let source = load_source(ledger, request.source)?;
    if !ledger.payment_form_exists(request.details.payment_form_id)? {
        return Err(RefundError::InvalidPaymentForm(
            request.details.payment_form_id,
        ));
    }
    let amount = checked_amount(&request.amount, source.order.currency)?;
    let available = min(source.outstanding_minor, source.order.refundable_minor());
    if amount.minor > available {
        return Err(exceeds(available, amount.currency));
    }
    Ok(ledger.reserve_refund(&NewRefund {
        order_id: source.order.id,
        source: request.source,
        method: RefundMethod::Manual,
        amount,
        details: Some(request.details.clone()),
        created_at: now,
        created_by,
    })?)
}

fn possible_auto_refunds(
    ledger: &mut dyn Ledger,
    source: SourceRef,
) -> Result<Vec<PossibleAutoRefund>, RefundError> {
    let source = load_source(ledger, source)?;
    if source.source.source_type == SourceType::Order && source.order.fulfilled {
        return Err(RefundError::OrderFulfilled(source.order.id));
    }
    let cap = min(source.outstanding_minor, source.order.refundable_minor());
    let payments = ledger.order_payments(source.order.id)?;
    Ok(payments
        .into_iter()
        .filter(|payment| payment.auto_refund)
        .filter_map(|payment| {
            let value = min(payment.refundable_minor(), cap);
            (value > 0).then_some(PossibleAutoRefund {
                payment_id: payment.id,
                value: Money {
                    minor: value,
                    currency: payment.amount.currency,
                },
                full: value == payment.amount.minor,
            })
        })
        .collect())
}

/// Loads the refund `at` names, checking that its source exists and that it belongs to it.
fn find_refund(ledger: &mut dyn Ledger, at: RefundAt) -> Result<Refund, RefundError> {
    load_source(ledger, at.source)?;
    let refund = ledger
        .refund(at.refund_id)?
        .ok_or_else(|| RefundError::InvalidPayment(format!("{} is not a refund", at.refund_id)))?;
    if refund.source != at.source {
        return Err(RefundError::WrongRefundSource {
            id: refund.id,
            source_type: at.source.source_type.as_str(),
            source_id: at.source.id,
        });
    }
    Ok(refund)
}

/// The error for changing a refund that is no longer `New`.
fn not_new(refund: &Refund) -> RefundError {
    match refund.status {
        RefundStatus::Processing => RefundError::AlreadyProcessing(refund.id),
        RefundStatus::Completed => RefundError::AlreadyApproved(refund.id),
        status => RefundError::NotEditable {
            id: refund.id,
            status: status.as_str(),
        },
    }
}

fn update_refund(ledger: &mut dyn Ledger, request: &UpdateRefund) -> Result<bool, RefundError> {
    let refund = find_refund(ledger, request.refund)?;
    if refund.status != RefundStatus::New {
        return Err(not_new(&refund));
    }
    let amount = checked_amount(&request.amount, refund.amount.currency)?;
    // What is available if this refund's own reservation is released.
    let source = load_source(ledger, refund.source)?;
    let mut available = min(source.outstanding_minor, source.order.refundable_minor());
    if let RefundMethod::Automatic { payment_id } = refund.method {
        let payment = ledger.payment(payment_id)?.ok_or_else(|| {
            anyhow::anyhow!("refund {} names missing payment {payment_id}", refund.id)
        })?;
        available = min(available, payment.refundable_minor());
    }
    let available = available + refund.amount.minor;
    if amount.minor > available {
        return Err(exceeds(available, amount.currency));
    }
    ledger.change_reserved_amount(refund.id, amount.minor)?;
    Ok(true)
}

fn confirm_refund(
    ledger: &mut dyn Ledger,
    at: RefundAt,
    now: Timestamp,
    routing: &OperatorRouting,
) -> Result<bool, RefundError> {
    let refund = find_refund(ledger, at)?;
    if refund.status != RefundStatus::New {
        return Err(not_new(&refund));
    }
    let status = match refund.method {
        RefundMethod::Manual => RefundStatus::Completed,
        RefundMethod::Automatic { payment_id } => {
            let payment = ledger.payment(payment_id)?.ok_or_else(|| {
                anyhow::anyhow!("refund {} names missing payment {payment_id}", refund.id)
            })?;
            if payment.external_transaction_id.is_none() {
                return Err(RefundError::MissingExternalTransactionId(payment_id));
            }
            // Handed to the operator: the job that sends it commits with the confirmation.
            ledger.enqueue_job(
                refund.id,
                routing.operator_for(payment.payment_system),
                system_millis(),
            )?;
            RefundStatus::Processing
        }
    };
    ledger.confirm(refund.id, status, now)?;
    Ok(true)
}

fn cancel_refund(ledger: &mut dyn Ledger, at: RefundAt) -> Result<bool, RefundError> {
    let refund = find_refund(ledger, at)?;
    match refund.status {
        RefundStatus::New => {
            ledger.cancel(refund.id)?;
            Ok(true)
        }
        RefundStatus::Processing => Err(RefundError::CannotCancelProcessing(refund.id)),
        status => Err(RefundError::CannotCancelInStatus {
            id: refund.id,
            status: status.as_str(),
        }),
    }
}
