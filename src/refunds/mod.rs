//! The refunds domain: the nine operations, their rules and fault codes.
//!
//! This module knows no XML, JSON, HTTP or SQL. The faces parse requests into the types below
//! and call one method of [`RefundService`] per operation; the ledger is reached only through
//! the port it owns ([`ledger::LedgerStore`], [`ledger::Ledger`]), inside one transaction per
//! operation. Storage adapters implement that port; nothing here imports them.

pub mod audit;
mod credentials;
pub mod error;
pub mod events;
pub mod ledger;
pub mod outbox;
pub mod panel;
pub mod proof;
mod rules;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
pub mod throttle;
pub mod types;

use chrono_tz::Tz;
use sha1::{Digest as _, Sha1};

use std::sync::Arc;

use crate::clock::{Clock, neighbouring_local_dates, system_millis};
use crate::money::Money;
pub use audit::Channel;
use credentials::{CredentialsCache, Presented};
pub use error::{OperationKind, RefundError};
use ledger::{Ledger, LedgerStore};
use outbox::{OperatorRouting, RetryPolicy};
use rules::Change;
use types::{
    JobState, JobStep, ManualDetails, MovementId, OperatorAnswer, Refund, RefundJob, RefundStatus,
    RequestedAmount, Scopes, Settlement, SourceFilter, SourceRef, Timestamp,
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

/// `retrieveRefundsList`: one page of unapproved refunds. Made only by [`RetrieveRefundsList::new`],
/// so its limit is always in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrieveRefundsList {
    filter: SourceFilter,
    page: u32,
    limit: u32,
}

pub const MAX_RESULTS_LIMIT: u32 = 100;

/// The furthest offset into the refunds list that is read as a short read
/// (`LedgerStore::read`, on the request's own thread where the adapter allows it); pages beyond
/// it are a scan (`LedgerStore::scan`, off the async threads). SQLite steps over the rows before
/// a page at about 30 ns each here, so the longest short page read stays near 150 µs.
const SHORT_READ_OFFSET: u64 = 5_000;

impl RetrieveRefundsList {
    /// `page` counts from 0; `limit` must be 1 to [`MAX_RESULTS_LIMIT`].
    pub fn new(
        filter: SourceFilter,
        page: u32,
        limit: u32,
    ) -> Result<RetrieveRefundsList, RefundError> {
        if !(1..=MAX_RESULTS_LIMIT).contains(&limit) {
            return Err(RefundError::InvalidParameters(format!(
                "params.resultsLimit must be between 1 and {MAX_RESULTS_LIMIT}, got {limit}"
            )));
        }
        Ok(RetrieveRefundsList {
            filter,
            page,
            limit,
        })
    }

    pub fn with_filter(self, filter: SourceFilter) -> RetrieveRefundsList {
        RetrieveRefundsList { filter, ..self }
    }

    pub fn filter(&self) -> SourceFilter {
        self.filter
    }

    pub fn page(&self) -> u32 {
        self.page
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
}

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

/// The caller: who performs an operation, once authenticated, and through which door. What the
/// ledger records as the caller of a change (a refund's and an audit entry's `caller`, the owner
/// of an idempotency key) is its `login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The name the caller acts under: a legacy user's login, `key:{name}` for an API key,
    /// `panel:{login}` for a panel user, or the part of the service acting (`outbox:{operator}`,
    /// `operator:{name}`). Never shared: a legacy login never contains `:`.
    pub login: String,
    pub scopes: Scopes,
    pub channel: Channel,
    pub request_id: Option<String>,
}

impl Caller {
    /// The service itself acting (the outbox worker, an operator's callback).
    pub fn system(login: impl Into<String>, channel: Channel) -> Caller {
        Caller {
            login: login.into(),
            scopes: Scopes::ALL,
            channel,
            request_id: None,
        }
    }
}

/// Where a call came from: the face and the server's request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub channel: Channel,
    pub request_id: Option<String>,
}

/// An answer to a write as a face serialized it, kept under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A write that carries an idempotency key: the key, a digest of the request (so a reused key
/// with another request is caught), and how the face serializes the outcome, so that the
/// answer is stored in the same transaction as the change.
pub struct IdempotencyClaim<T> {
    pub key: String,
    pub request_digest: String,
    pub render: Render<T>,
}

/// How a face serializes an outcome.
pub type Render<T> = Box<dyn Fn(&Result<T, RefundError>) -> StoredResponse + Send>;

/// The outcome of a call: fresh, or the stored first answer to the same idempotent request.
pub enum Answer<T> {
    Fresh(Result<T, RefundError>),
    Replayed(StoredResponse),
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
    /// The id of an admin panel session, from its cookie.
    PanelSession(String),
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
    store: Arc<dyn LedgerStore>,
    clock: Clock,
    timezone: Tz,
    policy: Arc<Policy>,
    /// Woken when a job is added, so the outbox worker sends it at once.
    jobs_added: Arc<tokio::sync::Notify>,
    credentials: Arc<CredentialsCache>,
    failed_authentications: Arc<throttle::FailedAuthentications>,
}

/// How the service is configured to behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Which operator refunds which payment.
    pub routing: OperatorRouting,
    /// Maker-checker: a refund must be confirmed by someone other than who added it.
    pub require_second_approver: bool,
    /// How long idempotency keys are kept, in seconds.
    pub idempotency_ttl_seconds: i64,
    /// How long checked credentials are trusted without reading the ledger again: the longest
    /// a revoked key or a changed password keeps working. Zero checks every call.
    pub credentials_ttl: std::time::Duration,
}

impl Policy {
    pub fn new(routing: OperatorRouting) -> Policy {
        Policy {
            routing,
            require_second_approver: false,
            idempotency_ttl_seconds: 24 * 3600,
            credentials_ttl: std::time::Duration::from_secs(1),
        }
    }
}

/// What a callback from an operator did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The refund is now Completed or Failed.
    Settled,
    /// The refund already had a definite outcome, or the answer was not definite: nothing changed.
    Ignored,
    /// The callback's amount or currency is not the refund's (or it named none): nothing
    /// changed, and the refund waits for the worker's status query to the operator.
    Mismatch { expected: Money },
}

/// The amount and currency a callback says it is about, as the operator wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatedAmount {
    pub value: Option<rust_decimal::Decimal>,
    pub currency: Option<String>,
}

impl StatedAmount {
    /// Whether this is exactly `amount`: the same currency code and the same value (`40`,
    /// `40.0` and `40.00` are the same value).
    fn is(&self, amount: Money) -> bool {
        self.currency.as_deref() == Some(amount.currency.code())
            && self.value == Some(amount.to_decimal())
    }
}

impl RefundService {
    pub fn new(
        store: Arc<dyn LedgerStore>,
        clock: Clock,
        timezone: Tz,
        policy: Policy,
    ) -> RefundService {
        RefundService {
            store,
            clock,
            timezone,
            credentials: Arc::new(CredentialsCache::new(policy.credentials_ttl)),
            failed_authentications: Arc::new(throttle::FailedAuthentications::new(
                throttle::WINDOW,
            )),
            policy: Arc::new(policy),
            jobs_added: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// Whether the ledger answers (for readiness).
    pub async fn ready(&self) -> Result<(), RefundError> {
        self.store.check_usable()?;
        self.store
            .read(|ledger| Ok(ledger.audit_head().map(|_| ())?))
            .await
    }

    /// Refunds by status and the outbox depth.
    pub async fn counts(&self) -> Result<types::LedgerCounts, RefundError> {
        self.store.read(|ledger| Ok(ledger.counts()?)).await
    }

    /// Resolves when a job has been added since the last call (or at once, if one was).
    pub async fn job_added(&self) {
        self.jobs_added.notified().await;
    }

    /// Runs one write in one transaction, with its idempotency key when it has one: a key seen
    /// before with the same request replays the stored answer and changes nothing; with another
    /// request it is refused. A fresh outcome is stored with the key in the same transaction
    /// (business errors too; internal failures are not stored, so a retry runs again).
    async fn transact<T, F>(
        &self,
        caller: &Caller,
        operation: &'static str,
        claim: Option<IdempotencyClaim<T>>,
        mut work: F,
    ) -> Answer<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Ledger, &Change<'_>) -> Result<T, RefundError> + Send + 'static,
    {
        let caller = caller.clone();
        let now = self.clock.now();
        let sealing = self.store.audit_sealing();
        // The time to live holds at read, not only at the next purge: an answer stored this
        // long ago or longer is forgotten before the key is looked up.
        let expired_at = now.saturating_sub(self.policy.idempotency_ttl_seconds);
        let outcome = self
            .store
            .write(move |ledger| {
                // A fresh key (the usual case) costs one lookup. Only a key found stored is
                // forgotten if it has expired, and then looked up again: after the delete, a
                // concurrent twin's answer (another instance, committed meanwhile) is what the
                // second lookup sees.
                let mut stored = None;
                if let Some(claim) = &claim
                    && ledger
                        .idempotent_answer(&caller.login, &claim.key)?
                        .is_some()
                {
                    ledger.forget_expired_answer(&caller.login, &claim.key, expired_at)?;
                    stored = ledger.idempotent_answer(&caller.login, &claim.key)?;
                }
                if let Some(claim) = &claim
                    && let Some((digest, stored)) = stored
                {
                    if digest == claim.request_digest {
                        return Ok(Answer::Replayed(stored));
                    }
                    return Ok(Answer::Fresh(Err(RefundError::IdempotencyKeyReused)));
                }
                ledger.savepoint()?;
                let outcome = work(
                    ledger,
                    &Change {
                        now,
                        sealing,
                        caller: &caller,
                        operation,
                    },
                );
                if outcome.is_ok() {
                    ledger.release_savepoint()?;
                } else {
                    ledger.rollback_to_savepoint()?;
                }
                if let Some(claim) = &claim
                    && !matches!(outcome, Err(RefundError::Internal(_)))
                {
                    let stored = (claim.render)(&outcome);
                    ledger.remember_answer(
                        &caller.login,
                        &claim.key,
                        &claim.request_digest,
                        &stored,
                        now,
                    )?;
                }
                Ok::<_, RefundError>(Answer::Fresh(outcome))
            })
            .await;
        outcome.unwrap_or_else(|error| Answer::Fresh(Err(error)))
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
        let now = self.clock.now();
        let sealing = self.store.audit_sealing();
        self.store
            .write(move |ledger| {
                let current = ledger.job(job.refund_id)?;
                let Some(current) = current.filter(|current| current.state != JobState::Done)
                else {
                    return Ok(None);
                };
                let step = outbox::plan(
                    &current,
                    answer.clone(),
                    &policy,
                    poll_after_ms,
                    now_ms,
                    jitter_permille,
                );
                // A worker whose lease ran out (and whose job another worker has claimed
                // since) records nothing: the newer claim decides.
                if !ledger.record_job_step(&step, Some(job.lease), now_ms)? {
                    return Ok(None);
                }
                if let Some(settlement) = &step.settlement {
                    let caller =
                        Caller::system(format!("outbox:{}", current.operator), Channel::Worker);
                    settle(
                        ledger,
                        job.refund_id,
                        settlement,
                        &Change {
                            now,
                            sealing,
                            caller: &caller,
                            operation: "settle",
                        },
                    )?;
                }
                Ok(Some(step))
            })
            .await
    }

    /// An operator's asynchronous answer about refund `refund_id`. `None` when the operator has
    /// no such refund in our outbox (unknown id, or another operator's refund). A callback
    /// whose amount and currency are not exactly the refund's changes nothing (`Mismatch`),
    /// whatever it says: a signed message about other money is a fault on the operator's side
    /// or a replay of another refund's message, and the status query settles the refund.
    pub async fn operator_callback(
        &self,
        operator: &str,
        refund_id: MovementId,
        answer: OperatorAnswer,
        stated: StatedAmount,
    ) -> Result<Option<CallbackOutcome>, RefundError> {
        let now_ms = system_millis();
        let now = self.clock.now();
        let sealing = self.store.audit_sealing();
        let operator = operator.to_owned();
        self.store
            .write(move |ledger| {
                let Some(job) = ledger
                    .job(refund_id)?
                    .filter(|job| job.operator == operator)
                else {
                    return Ok(None);
                };
                if !stated.is(job.amount) {
                    return Ok(Some(CallbackOutcome::Mismatch {
                        expected: job.amount,
                    }));
                }
                if job.state == JobState::Done {
                    return Ok(Some(CallbackOutcome::Ignored));
                }
                // The same state machine as the worker's answers: only a definite answer settles.
                let step = outbox::plan(
                    &job,
                    answer.clone(),
                    &RetryPolicy::default(),
                    0,
                    now_ms,
                    1000,
                );
                let Some(settlement) = step.settlement.clone() else {
                    return Ok(Some(CallbackOutcome::Ignored));
                };
                if !ledger.record_job_step(&step, None, now_ms)? {
                    return Ok(Some(CallbackOutcome::Ignored));
                }
                let caller = Caller::system(format!("operator:{operator}"), Channel::Operator);
                settle(
                    ledger,
                    refund_id,
                    &settlement,
                    &Change {
                        now,
                        sealing,
                        caller: &caller,
                        operation: "callback",
                    },
                )?;
                Ok(Some(CallbackOutcome::Settled))
            })
            .await
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
        origin: Origin,
    ) -> Result<Caller, RefundError> {
        let credentials = credentials.ok_or(RefundError::Unauthenticated)?;
        let address = throttle::client_address();
        let legacy_login = match &credentials {
            Credentials::Legacy(legacy) => Some(legacy.login.as_str()),
            Credentials::ApiKey(_) | Credentials::PanelSession(_) => None,
        };
        if let Some(seconds) = self.failed_authentications.refused(legacy_login, address) {
            return Err(RefundError::AuthenticationThrottled(seconds));
        }
        let failed_login = legacy_login.map(str::to_owned);
        let checked = match credentials {
            Credentials::Legacy(legacy) => self.legacy_caller(legacy).await,
            Credentials::ApiKey(key) => self.api_key_caller(&key).await,
            // Never remembered: a signed-out session must stop working at once.
            Credentials::PanelSession(session_id) => self.panel_session_caller(&session_id).await,
        };
        let (login, scopes) = match checked {
            Ok(caller) => caller,
            Err(RefundError::Unauthenticated) => {
                self.failed_authentications
                    .record_failure(failed_login.as_deref(), address);
                return Err(RefundError::Unauthenticated);
            }
            Err(error) => return Err(error),
        };
        throttle::note_authenticated();
        if !needs.granted(scopes) {
            return Err(RefundError::Forbidden(needs.name()));
        }
        Ok(Caller {
            login,
            scopes,
            channel: origin.channel,
            request_id: origin.request_id,
        })
    }

    async fn legacy_caller(
        &self,
        credentials: LegacyCredentials,
    ) -> Result<(String, Scopes), RefundError> {
        let login = credentials.login;
        // Keys (`key:{name}`) and the service's own callers (`outbox:…`, `operator:…`) are
        // named with a colon, so a legacy login never has one: it would share their idempotency
        // keys and audit name. `user add` refuses such logins; one stored by an older version
        // is refused here.
        if login.contains(LEGACY_LOGIN_FORBIDDEN) {
            return Err(RefundError::Unauthenticated);
        }
        let key = credentials.key.trim().to_ascii_lowercase();
        let presented = Presented::Legacy {
            login: login.clone(),
            key: key.clone(),
        };
        if let Some(known) = self.credentials.get(&presented) {
            return Ok(known);
        }
        let dates = neighbouring_local_dates(self.clock.now(), self.timezone);
        let user = self
            .store
            .read(move |ledger| ledger.api_user(&login).map_err(RefundError::from))
            .await?;
        // The same work whether the login exists or not, so that answer times do not tell
        // which logins exist: an unknown login is checked against a password nobody has.
        let password_sha1_hex = user
            .as_ref()
            .map_or(UNKNOWN_LOGIN_PASSWORD_SHA1, |user| &user.password_sha1_hex);
        let matched = dates.iter().fold(false, |matched, date| {
            matched
                | same_bytes(
                    legacy_key(date, password_sha1_hex).as_bytes(),
                    key.as_bytes(),
                )
        });
        let user = user
            .filter(|_| matched)
            .ok_or(RefundError::Unauthenticated)?;
        self.credentials
            .remember(presented, &user.login, user.scopes);
        Ok((user.login, user.scopes))
    }

    /// Whether `key` names a live API key (remembered like any checked credential). Counts no
    /// failure: the call that follows authenticates and counts it.
    pub async fn knows_api_key(&self, key: &str) -> bool {
        self.api_key_caller(key).await.is_ok()
    }

    async fn api_key_caller(&self, key: &str) -> Result<(String, Scopes), RefundError> {
        let digest = api_key_digest(key.trim());
        let presented = Presented::ApiKey {
            digest: digest.clone(),
        };
        if let Some(known) = self.credentials.get(&presented) {
            return Ok(known);
        }
        let found = self
            .store
            .read(move |ledger| ledger.api_key(&digest).map_err(RefundError::from))
            .await?;
        match found {
            Some(key) if key.revoked_at.is_none() => {
                let login = format!("key:{}", key.name);
                self.credentials.remember(presented, &login, key.scopes);
                Ok((login, key.scopes))
            }
            _ => Err(RefundError::Unauthenticated),
        }
    }

    pub async fn add_automatic_refund(
        &self,
        caller: &Caller,
        request: AddAutomaticRefund,
        claim: Option<IdempotencyClaim<MovementId>>,
    ) -> Answer<MovementId> {
        self.transact(
            caller,
            "addAutomaticRefund",
            claim,
            move |ledger, change| rules::add_automatic_refund(ledger, &request, change),
        )
        .await
    }

    pub async fn add_automatic_refund_for_order(
        &self,
        caller: &Caller,
        request: AddAutomaticRefundForOrder,
        claim: Option<IdempotencyClaim<MovementId>>,
    ) -> Answer<MovementId> {
        self.transact(
            caller,
            "addAutomaticRefundForOrder",
            claim,
            move |ledger, change| rules::add_automatic_refund_for_order(ledger, &request, change),
        )
        .await
    }

    pub async fn add_manual_refund(
        &self,
        caller: &Caller,
        request: AddManualRefund,
        claim: Option<IdempotencyClaim<MovementId>>,
    ) -> Answer<MovementId> {
        self.transact(caller, "addManualRefund", claim, move |ledger, change| {
            rules::add_manual_refund(ledger, &request, change)
        })
        .await
    }

    pub async fn get_possible_auto_refunds(
        &self,
        source: SourceRef,
    ) -> Result<Vec<PossibleAutoRefund>, RefundError> {
        self.store
            .read(move |ledger| rules::possible_auto_refunds(ledger, source))
            .await
    }

    pub async fn get_refund_status(&self, at: RefundAt) -> Result<RefundStatusView, RefundError> {
        self.store
            .read(move |ledger| {
                let refund = rules::find_refund(ledger, at)?;
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

    pub async fn update_refund(
        &self,
        caller: &Caller,
        request: UpdateRefund,
        claim: Option<IdempotencyClaim<bool>>,
    ) -> Answer<bool> {
        self.transact(caller, "updateRefund", claim, move |ledger, change| {
            rules::update_refund(ledger, &request, change)
        })
        .await
    }

    pub async fn confirm_refund(
        &self,
        caller: &Caller,
        at: RefundAt,
        claim: Option<IdempotencyClaim<bool>>,
    ) -> Answer<bool> {
        let policy = self.policy.clone();
        let answer = self
            .transact(caller, "confirmRefund", claim, move |ledger, change| {
                rules::confirm_refund(
                    ledger,
                    at,
                    change,
                    &policy.routing,
                    policy.require_second_approver,
                )
            })
            .await;
        self.jobs_added.notify_one();
        answer
    }

    pub async fn cancel_refund(
        &self,
        caller: &Caller,
        at: RefundAt,
        claim: Option<IdempotencyClaim<bool>>,
    ) -> Answer<bool> {
        self.transact(caller, "cancelRefund", claim, move |ledger, change| {
            rules::cancel_refund(ledger, at, change)
        })
        .await
    }

    pub async fn retrieve_refunds_list(
        &self,
        request: RetrieveRefundsList,
    ) -> Result<RefundsPage, RefundError> {
        let offset = u64::from(request.page) * u64::from(request.limit);
        let page = move |ledger: &mut dyn Ledger| {
            let (total, refunds) =
                ledger.unapproved_refunds(request.filter, offset, request.limit)?;
            Ok(RefundsPage {
                total,
                page: request.page,
                limit: request.limit,
                refunds,
            })
        };
        // SQLite steps over every row before the page, so a page far into the list is a scan.
        if offset <= SHORT_READ_OFFSET {
            self.store.read(page).await
        } else {
            self.store.scan(page).await
        }
    }

    /// Claims the webhook deliveries due now (see `Ledger::claim_deliveries`).
    pub async fn claim_deliveries(
        &self,
        policy: events::DeliveryPolicy,
        limit: u32,
    ) -> Result<Vec<events::Delivery>, RefundError> {
        let now_ms = system_millis();
        self.store
            .write(move |ledger| Ok(ledger.claim_deliveries(now_ms, policy.lease_ms, limit)?))
            .await
    }

    /// Records one delivery attempt; `false` when a newer claim owns the delivery.
    pub async fn record_delivery(
        &self,
        lease: i64,
        step: events::DeliveryStep,
    ) -> Result<bool, RefundError> {
        let now_ms = system_millis();
        self.store
            .write(move |ledger| Ok(ledger.record_delivery(&step, lease, now_ms)?))
            .await
    }

    /// The ledger proof of one payment (see [`proof`]), read in one snapshot; with `anchor`, it
    /// carries the chain from that position to the head.
    pub async fn ledger_proof(
        &self,
        payment_id: MovementId,
        anchor: Option<i64>,
    ) -> Result<proof::LedgerProof, RefundError> {
        self.store
            .scan(move |ledger| proof::build(ledger, payment_id, anchor))
            .await
    }

    /// How the store chains audit entries: a store whose writes run side by side needs
    /// [`RefundService::seal_audit`] called now and then (the server does it).
    pub fn audit_sealing(&self) -> ledger::AuditSealing {
        self.store.audit_sealing()
    }

    /// Chains audit entries appended but not chained yet, if no other instance is doing it;
    /// returns how many were chained.
    pub async fn seal_audit(&self, limit: u32) -> Result<usize, RefundError> {
        self.store
            .write(move |ledger| Ok(audit::seal_pending(ledger, limit)?))
            .await
    }

    /// Forgets idempotency keys older than the policy keeps them; returns how many.
    pub async fn purge_idempotency_keys(&self) -> Result<u64, RefundError> {
        let before = self.clock.now() - self.policy.idempotency_ttl_seconds;
        self.store
            .write(move |ledger| Ok(ledger.purge_answers(before)?))
            .await
    }
}

/// Settles a `Processing` refund and records it in the audit chain.
fn settle(
    ledger: &mut dyn Ledger,
    refund_id: MovementId,
    settlement: &Settlement,
    change: &Change<'_>,
) -> Result<(), RefundError> {
    let before = ledger
        .refund(refund_id)?
        .ok_or_else(|| anyhow::anyhow!("settling missing refund {refund_id}"))?;
    ledger.settle(refund_id, settlement)?;
    let status = match settlement {
        Settlement::Completed { .. } => RefundStatus::Completed,
        Settlement::Failed { .. } => RefundStatus::Failed,
    };
    rules::record(ledger, change, &before, status, before.amount.minor)
}

/// What an unknown login's key is checked against (the SHA-1 of no password anyone was given),
/// so that it costs what a known login's does.
const UNKNOWN_LOGIN_PASSWORD_SHA1: &str = "0000000000000000000000000000000000000000";

/// Compares two byte strings in a time that depends only on their lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The character that separates a caller's kind from its name (`key:rt`); never in a legacy
/// login, so a login can never be taken for a key or the service itself.
pub const LEGACY_LOGIN_FORBIDDEN: char = ':';

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
