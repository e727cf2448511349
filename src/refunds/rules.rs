//! The rules of each operation, run inside one ledger transaction. Every change of a refund
//! is appended to the audit chain in the same transaction.

use std::cmp::min;

use super::audit::{self, AuditEntry};
use super::events::RefundEvent;
use super::ledger::{AuditSealing, Ledger};
use super::outbox::OperatorRouting;
use super::types::{
    MovementId, NewRefund, Refund, RefundMethod, RefundStatus, RequestedAmount, Source, SourceRef,
    SourceType, Timestamp,
};
use super::{
    AddAutomaticRefund, AddAutomaticRefundForOrder, AddManualRefund, Caller, PossibleAutoRefund,
    RefundAt, RefundError, UpdateRefund, error,
};
use crate::clock::system_millis;
use crate::money::{AmountError, Currency, Money, minor_to_decimal};

/// Who changes the ledger, when, and in which operation.
pub struct Change<'a> {
    pub now: Timestamp,
    /// How the store chains audit entries.
    pub sealing: AuditSealing,
    pub caller: &'a Caller,
    pub operation: &'static str,
}

/// Appends one change of `refund` to the audit chain.
pub(super) fn record(
    ledger: &mut dyn Ledger,
    change: &Change<'_>,
    before: &Refund,
    status_after: RefundStatus,
    amount_after: i64,
) -> Result<(), RefundError> {
    append(
        ledger,
        change,
        before.id,
        Some((before.status, before.amount.minor)),
        (status_after, amount_after),
        before.amount.currency,
    )
}

pub(super) fn append(
    ledger: &mut dyn Ledger,
    change: &Change<'_>,
    refund_id: MovementId,
    before: Option<(RefundStatus, i64)>,
    after: (RefundStatus, i64),
    currency: Currency,
) -> Result<(), RefundError> {
    let entry = AuditEntry {
        at: change.now,
        caller: change.caller.login.clone(),
        channel: change.caller.channel.as_str().to_owned(),
        operation: change.operation.to_owned(),
        refund_id,
        status_before: before.map(|(status, _)| AuditEntry::status(status)),
        status_after: AuditEntry::status(after.0),
        amount_before: before.map(|(_, amount)| amount),
        amount_after: after.1,
        currency: currency.code().to_owned(),
        request_id: change.caller.request_id.clone(),
    };
    audit::append(ledger, change.sealing, &entry)?;
    // The shop's webhooks learn of the step in the same transaction (when any are subscribed).
    if ledger.wants_events()? {
        let refund = ledger
            .refund(refund_id)?
            .ok_or_else(|| anyhow::anyhow!("refund {refund_id} vanished in its transaction"))?;
        for event in RefundEvent::of_step(&refund, &entry)? {
            ledger.add_event(&event, system_millis())?;
        }
    }
    Ok(())
}

/// Reserves a new refund and records it.
fn reserve(
    ledger: &mut dyn Ledger,
    change: &Change<'_>,
    refund: NewRefund,
) -> Result<MovementId, RefundError> {
    let id = ledger.reserve_refund(&refund)?;
    append(
        ledger,
        change,
        id,
        None,
        (RefundStatus::New, refund.amount.minor),
        refund.amount.currency,
    )?;
    Ok(id)
}

pub(super) fn load_source(
    ledger: &mut dyn Ledger,
    source: SourceRef,
) -> Result<Source, RefundError> {
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

pub(super) fn add_automatic_refund(
    ledger: &mut dyn Ledger,
    request: &AddAutomaticRefund,
    change: &Change<'_>,
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
        let id = reserve(
            ledger,
            change,
            NewRefund {
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
                created_at: change.now,
                caller: change.caller.login.clone(),
            },
        )?;
        first_id.get_or_insert(id);
        remaining -= take;
    }
    first_id
        .ok_or_else(|| anyhow::anyhow!("no refund was reserved for an outstanding value").into())
}

pub(super) fn add_automatic_refund_for_order(
    ledger: &mut dyn Ledger,
    request: &AddAutomaticRefundForOrder,
    change: &Change<'_>,
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
    reserve(
        ledger,
        change,
        NewRefund {
            order_id: order.id,
            source,
            method: RefundMethod::Automatic {
                payment_id: payment.id,
            },
            amount,
            details: None,
            created_at: change.now,
            caller: change.caller.login.clone(),
        },
    )
}

pub(super) fn add_manual_refund(
    ledger: &mut dyn Ledger,
    request: &AddManualRefund,
    change: &Change<'_>,
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
    reserve(
        ledger,
        change,
        NewRefund {
            order_id: source.order.id,
            source: request.source,
            method: RefundMethod::Manual,
            amount,
            details: Some(request.details.clone()),
            created_at: change.now,
            caller: change.caller.login.clone(),
        },
    )
}

pub(super) fn possible_auto_refunds(
    ledger: &mut dyn Ledger,
    source: SourceRef,
) -> Result<Vec<PossibleAutoRefund>, RefundError> {
    let source = load_source(ledger, source)?;
    if source.source.source_type == SourceType::Order && source.order.fulfilled {
        return Err(RefundError::OrderFulfilled(source.order.id));
    }
    // What the source still allows is shared out over the payments oldest first, as
    // addAutomaticRefund takes it, so that the listed values together never exceed it: each
    // payment is offered what is left after the older ones. A payment with nothing left to
    // offer is not listed.
    let mut left = min(source.outstanding_minor, source.order.refundable_minor());
    let payments = ledger.order_payments(source.order.id)?;
    Ok(payments
        .into_iter()
        .filter(|payment| payment.auto_refund)
        .filter_map(|payment| {
            let value = min(payment.refundable_minor(), left.max(0));
            left -= value;
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
pub(super) fn find_refund(ledger: &mut dyn Ledger, at: RefundAt) -> Result<Refund, RefundError> {
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

pub(super) fn update_refund(
    ledger: &mut dyn Ledger,
    request: &UpdateRefund,
    change: &Change<'_>,
) -> Result<bool, RefundError> {
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
    record(ledger, change, &refund, RefundStatus::New, amount.minor)?;
    Ok(true)
}

pub(super) fn confirm_refund(
    ledger: &mut dyn Ledger,
    at: RefundAt,
    change: &Change<'_>,
    routing: &OperatorRouting,
    require_second_approver: bool,
) -> Result<bool, RefundError> {
    let refund = find_refund(ledger, at)?;
    if refund.status != RefundStatus::New {
        return Err(not_new(&refund));
    }
    if require_second_approver && refund.caller == change.caller.login {
        return Err(RefundError::SecondApproverRequired(refund.id));
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
    ledger.confirm(refund.id, status, change.now)?;
    record(ledger, change, &refund, status, refund.amount.minor)?;
    Ok(true)
}

pub(super) fn cancel_refund(
    ledger: &mut dyn Ledger,
    at: RefundAt,
    change: &Change<'_>,
) -> Result<bool, RefundError> {
    let refund = find_refund(ledger, at)?;
    match refund.status {
        RefundStatus::New => {
            ledger.cancel(refund.id)?;
            record(
                ledger,
                change,
                &refund,
                RefundStatus::Canceled,
                refund.amount.minor,
            )?;
            Ok(true)
        }
        RefundStatus::Processing => Err(RefundError::CannotCancelProcessing(refund.id)),
        status => Err(RefundError::CannotCancelInStatus {
            id: refund.id,
            status: status.as_str(),
        }),
    }
}
