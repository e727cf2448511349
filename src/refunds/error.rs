//! The one error type at the service boundary.
//!
//! Every variant is a business outcome with a public `faultCode` (see `fault_code`), except
//! `Internal`, whose cause is logged and never sent: clients see only "operation failed".

use rust_decimal::Decimal;

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    /// 1: no credentials, unknown user or wrong key.
    #[error(
        "authentication failed: missing or invalid credentials (userLogin and authenticateKey, or an API key)"
    )]
    Unauthenticated,
    /// 1: too many failed authentications for this login or from this address (REST: 429).
    #[error(
        "too many failed authentications for this login or from this address; try again in {0} s"
    )]
    AuthenticationThrottled(u64),
    /// 1: the caller is known but lacks the scope the operation needs.
    #[error("the caller may not run this operation (needs scope '{0}')")]
    Forbidden(&'static str),
    /// 2: a field is missing, of the wrong type, or out of range.
    #[error("invalid call parameters: {0}")]
    InvalidParameters(String),
    /// 4001: nothing can be refunded automatically for this source.
    #[error("automatic refund not possible: {0}")]
    AutoRefundNotPossible(String),
    /// 4002
    #[error("payment {0} can't be refunded automatically: its operator does not support refunds")]
    PaymentNotAutoRefundable(i64),
    /// 4003
    #[error("amount greater than what can be refunded: at most {available} {currency}")]
    AmountExceedsRefundable {
        available: Decimal,
        currency: String,
    },
    /// 4004: unknown currency code, or not the currency of the payment/order refunded.
    #[error("invalid currency: {0}")]
    InvalidCurrency(String),
    /// 4005: `sourceType` is not a word this API knows; `expected` lists the words the
    /// operation takes (`all` too for the list).
    #[error("invalid source type '{given}': expected {expected}")]
    UnknownSourceType {
        given: String,
        expected: &'static str,
    },
    /// 4006: a known source type that this operation does not take.
    #[error("invalid source type '{given}' for this operation: expected {expected}")]
    SourceTypeNotAllowed {
        given: &'static str,
        expected: &'static str,
    },
    /// 4007
    #[error("source not found: {source_type} {id}")]
    SourceNotFound { source_type: &'static str, id: i64 },
    /// 4008: no such payment, or it belongs to another order, or it is not a refund where a
    /// refund is expected.
    #[error("invalid payment: {0}")]
    InvalidPayment(String),
    /// 4009
    #[error("no payments of order {0} can be refunded automatically")]
    NoRefundablePayments(i64),
    /// 4011: `refundDetails.paymentFormId` is not in the catalogue.
    #[error("invalid refund system: payment form {0} is not in the catalogue")]
    InvalidPaymentForm(i64),
    /// 4012
    #[error("refund {0} is already approved")]
    AlreadyApproved(i64),
    /// 4013
    #[error("refund {id} can't be edited in status {status}")]
    NotEditable { id: i64, status: &'static str },
    /// 4014
    #[error(
        "automatic refunds of an order are only possible while it is unfulfilled; order {0} is fulfilled"
    )]
    OrderFulfilled(i64),
    /// 4015
    #[error(
        "payment {0} has no transaction id from the external system, so its operator can't refund it"
    )]
    MissingExternalTransactionId(i64),
    /// 4016
    #[error("refund amount must be positive")]
    AmountNotPositive,
    /// 4017
    #[error("refund {0} is already being processed")]
    AlreadyProcessing(i64),
    /// 4018: the refund exists but belongs to another source.
    #[error("invalid refund source: refund {id} does not belong to {source_type} {source_id}")]
    WrongRefundSource {
        id: i64,
        source_type: &'static str,
        source_id: i64,
    },
    /// 4019
    #[error("can't cancel refund {0}: the automatic refund is being processed")]
    CannotCancelProcessing(i64),
    /// 4020
    #[error("can't cancel refund {id} in status {status}")]
    CannotCancelInStatus { id: i64, status: &'static str },
    /// 4021: maker-checker is on and the caller added this refund.
    #[error("refund {0} must be confirmed by someone other than who added it")]
    SecondApproverRequired(i64),
    /// 4022: an idempotency key seen before came with a different request.
    #[error("the idempotency key was already used with a different request; use a new key")]
    IdempotencyKeyReused,
    /// 3 (4010 for the add operations): a bug or an unavailable store. Logged, never sent.
    #[error("operation failed")]
    Internal(#[from] anyhow::Error),
}

/// Which operation failed; decides between the generic codes 3 and 4010.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Add,
    Other,
}

impl RefundError {
    /// An internal failure because the ledger could not be reached (see
    /// [`super::ledger::LedgerUnavailable`]): worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RefundError::Internal(error)
            if error.downcast_ref::<super::ledger::LedgerUnavailable>().is_some())
    }

    pub fn fault_code(&self, kind: OperationKind) -> i32 {
        match self {
            RefundError::Unauthenticated
            | RefundError::AuthenticationThrottled(_)
            | RefundError::Forbidden(_) => 1,
            RefundError::InvalidParameters(_) => 2,
            RefundError::AutoRefundNotPossible(_) => 4001,
            RefundError::PaymentNotAutoRefundable(_) => 4002,
            RefundError::AmountExceedsRefundable { .. } => 4003,
            RefundError::InvalidCurrency(_) => 4004,
            RefundError::UnknownSourceType { .. } => 4005,
            RefundError::SourceTypeNotAllowed { .. } => 4006,
            RefundError::SourceNotFound { .. } => 4007,
            RefundError::InvalidPayment(_) => 4008,
            RefundError::NoRefundablePayments(_) => 4009,
            RefundError::InvalidPaymentForm(_) => 4011,
            RefundError::AlreadyApproved(_) => 4012,
            RefundError::NotEditable { .. } => 4013,
            RefundError::OrderFulfilled(_) => 4014,
            RefundError::MissingExternalTransactionId(_) => 4015,
            RefundError::AmountNotPositive => 4016,
            RefundError::AlreadyProcessing(_) => 4017,
            RefundError::WrongRefundSource { .. } => 4018,
            RefundError::CannotCancelProcessing(_) => 4019,
            RefundError::CannotCancelInStatus { .. } => 4020,
            RefundError::SecondApproverRequired(_) => 4021,
            RefundError::IdempotencyKeyReused => 4022,
            RefundError::Internal(_) => match kind {
                OperationKind::Add => 4010,
                OperationKind::Other => 3,
            },
        }
    }

    /// The text for the log: an internal error's whole chain of causes, or the business message.
    pub fn log_text(&self) -> String {
        match self {
            RefundError::Internal(cause) => format!("{cause:#}"),
            other => other.to_string(),
        }
    }

    /// The text a client may see. Internal causes stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            RefundError::Internal(_) => {
                "operation failed; the cause is in the gateway's log".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// Client text quoted back in a message, cut so that a huge value does not become a huge fault.
pub fn quote(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
