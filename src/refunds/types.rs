//! The ledger's nouns. Plain data: no serialization, no SQL, no XML.

use rust_decimal::Decimal;

use crate::money::{Currency, Money};

pub use crate::clock::Timestamp;

/// Ids of payments and refunds come from one sequence, so a `MovementId` names exactly one
/// money movement.
pub type MovementId = i64;

/// What a refund is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceType {
    Order,
    Return,
    Rma,
}

impl SourceType {
    pub const ALL: [SourceType; 3] = [SourceType::Order, SourceType::Return, SourceType::Rma];

    /// The wire word: `order`, `return` or `rma`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Order => "order",
            SourceType::Return => "return",
            SourceType::Rma => "rma",
        }
    }

    pub fn parse(word: &str) -> Option<SourceType> {
        SourceType::ALL.into_iter().find(|t| t.as_str() == word)
    }
}

/// `sourceType` of `retrieveRefundsList`, which also takes `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFilter {
    All,
    Only(SourceType),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceRef {
    pub source_type: SourceType,
    pub id: i64,
}

/// A refund's place in its lifecycle (see README "Lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    /// Added, not approved; its amount is already reserved.
    New,
    /// Confirmed automatic refund handed to the payment operator.
    Processing,
    Completed,
    /// The operator refused; the amount is released.
    Failed,
    Canceled,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::New => "New",
            RefundStatus::Processing => "Processing",
            RefundStatus::Completed => "Completed",
            RefundStatus::Failed => "Failed",
            RefundStatus::Canceled => "Canceled",
        }
    }

    pub fn parse(word: &str) -> Option<RefundStatus> {
        [
            RefundStatus::New,
            RefundStatus::Processing,
            RefundStatus::Completed,
            RefundStatus::Failed,
            RefundStatus::Canceled,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }

    /// Live refunds hold their amount against the payment, order and source.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            RefundStatus::New | RefundStatus::Processing | RefundStatus::Completed
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub currency: Currency,
    pub fulfilled: bool,
    /// Sum of the order's payments.
    pub paid_minor: i64,
    /// Sum of the order's live refunds, manual and automatic.
    pub refunded_minor: i64,
}

impl Order {
    pub fn refundable_minor(&self) -> i64 {
        self.paid_minor - self.refunded_minor
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: MovementId,
    pub order_id: i64,
    pub amount: Money,
    pub payment_form_id: i64,
    pub payment_system: Option<i64>,
    /// The payment's operator can send money back.
    pub auto_refund: bool,
    pub external_transaction_id: Option<String>,
    pub paid_at: Timestamp,
    /// Sum of live automatic refunds drawn from this payment.
    pub refunded_minor: i64,
}

impl Payment {
    pub fn refundable_minor(&self) -> i64 {
        self.amount.minor - self.refunded_minor
    }
}

/// An order, merchandise return or claim, with what may still be refunded against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub source: SourceRef,
    pub order: Order,
    /// For a return or claim: its value minus its live refunds. For an order: what the order
    /// may still refund.
    pub outstanding_minor: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundMethod {
    /// Sent back through the operator of `payment_id`.
    Automatic { payment_id: MovementId },
    /// Paid out by the shop itself.
    Manual,
}

/// How a manual refund is paid out (`refundDetails`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualDetails {
    pub payment_form_id: i64,
    pub payment_system: Option<i64>,
    pub account: Option<String>,
    pub client_account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub id: MovementId,
    pub order_id: i64,
    pub source: SourceRef,
    pub method: RefundMethod,
    pub amount: Money,
    pub status: RefundStatus,
    pub details: Option<ManualDetails>,
    pub created_at: Timestamp,
    /// The caller that added it (its `Caller::login`; stored as `created_by`, published as
    /// `createdBy` in ledger proofs). Maker-checker compares it with the confirming caller.
    pub caller: String,
    pub confirmed_at: Option<Timestamp>,
    pub external_id: Option<String>,
}

/// A refund about to be reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    pub order_id: i64,
    pub source: SourceRef,
    pub method: RefundMethod,
    pub amount: Money,
    pub details: Option<ManualDetails>,
    pub created_at: Timestamp,
    /// The caller adding it.
    pub caller: String,
}

/// A legacy API user. The legacy key scheme needs `sha1(password)` to check keys, so that is
/// what is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUser {
    pub login: String,
    pub password_sha1_hex: String,
    pub scopes: Scopes,
}

/// A user of the admin panel: an argon2id hash of the password in PHC string form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser {
    pub login: String,
    pub password_hash: String,
    pub scopes: Scopes,
}

/// A signed-in panel session as the ledger keeps it: the SHA-256 of its random id (the id
/// itself is only in the browser's cookie) and the CSRF token its forms carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub id_sha256: String,
    pub login: String,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
}

/// How many refunds added in one hour (UTC, starting at `hour_start`) have a status now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourlyRefundCount {
    pub hour_start: Timestamp,
    pub status: RefundStatus,
    pub count: u64,
}

/// An API key as the ledger keeps it: its name and scopes, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub scopes: Scopes,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// What a caller may do. Every operation names the scope it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
    pub confirm: bool,
}

impl Scopes {
    pub const ALL: Scopes = Scopes {
        read: true,
        write: true,
        confirm: true,
    };

    pub fn parse(list: &str) -> Option<Scopes> {
        let mut scopes = Scopes {
            read: false,
            write: false,
            confirm: false,
        };
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "read" => scopes.read = true,
                "write" => scopes.write = true,
                "confirm" => scopes.confirm = true,
                _ => return None,
            }
        }
        Some(scopes)
    }

    pub fn to_list(self) -> String {
        let words = [
            (self.read, "read"),
            (self.write, "write"),
            (self.confirm, "confirm"),
        ];
        words
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| *w)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An amount and currency code as a client sent them; checked against the payment it refunds.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestedAmount {
    pub value: Decimal,
    pub currency: String,
}

/// Writes the value normalized (`1.00`, `1.0`, `1` and `1e0` are one amount): a request's
/// idempotency digest is taken over its bound form's `Debug` text, and a retry must match
/// whatever the spelling of its amount.
impl std::fmt::Debug for RequestedAmount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestedAmount")
            .field("value", &self.value.normalize())
            .field("currency", &self.currency)
            .finish()
    }
}

/// What the outbox does next for a confirmed automatic refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Send the refund to the operator (again, under the same idempotency key).
    Send,
    /// Ask the operator for the refund's status.
    Query,
    /// The refund has a definite outcome.
    Done,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Send => "send",
            JobState::Query => "query",
            JobState::Done => "done",
        }
    }

    pub fn parse(word: &str) -> Option<JobState> {
        [JobState::Send, JobState::Query, JobState::Done]
            .into_iter()
            .find(|s| s.as_str() == word)
    }
}

/// A confirmed automatic refund on its way to the payment operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundJob {
    pub refund_id: MovementId,
    pub operator: String,
    pub state: JobState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub created_ms: i64,
    /// The fencing token of the claim that handed this job out (0 before any claim): an answer
    /// is recorded only under the newest one.
    pub lease: i64,
    /// The payment refunded, as its operator knows it.
    pub payment_external_id: String,
    pub amount: Money,
}

/// What a payment operator said about a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorAnswer {
    /// Money sent back; the operator's id for the refund.
    Completed { external_id: String },
    /// The operator refused the refund (definite).
    Declined { reason: String },
    /// The operator has it and will answer later (callback or status query).
    Accepted,
    /// A status query found no such refund: it was never received.
    NotFound,
    /// No definite answer (timeout, connection error, 5xx, 429): ask again, never resend blindly.
    Uncertain { error: String },
}

/// A definite outcome for a `Processing` refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Completed { external_id: String },
    Failed { reason: String },
}

/// What to record for a job after one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStep {
    pub refund_id: MovementId,
    pub state: JobState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub settlement: Option<Settlement>,
}

/// Counts for monitoring.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerCounts {
    /// Every status, with zero for those no refund has.
    pub refunds_by_status: Vec<(String, i64)>,
    pub outbox_pending: i64,
    /// Webhook deliveries not delivered yet, and when the oldest of them was queued.
    pub webhook_pending: i64,
    pub webhook_oldest_pending_ms: Option<i64>,
}
