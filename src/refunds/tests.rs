//! The refund rules through `RefundService` over the in-memory ledger (`testutil`): limits,
//! currency, status transitions and their fault codes, the audit chain and the outbox's
//! fencing, with no SQL anywhere.

// Amounts in minor units are written `major_minor` (100_00 is 100.00 PLN).
#![allow(clippy::inconsistent_digit_grouping)]

use std::sync::Arc;

use rust_decimal::Decimal;

use super::audit::{self, Channel};
use super::ledger::{AuditSealing, Ledger as _};
use super::outbox::{OperatorRouting, RetryPolicy};
use super::testutil::{Claim, MemoryLedger, MemoryStore};
use super::types::{
    ManualDetails, MovementId, NewRefund, OperatorAnswer, Payment, RefundMethod, RefundStatus,
    RequestedAmount, Scopes, SourceRef, SourceType,
};
use super::*;
use crate::clock::Clock;
use crate::money::{Currency, Money};

const ORDER: i64 = 1;
const FULFILLED_ORDER: i64 = 2;
/// 100.00 PLN, refundable by its operator.
const CARD: MovementId = 10;
/// 50.00 PLN, refundable by its operator but without the operator's transaction id.
const NO_TRANSACTION_ID: MovementId = 11;
/// A return of 30.00 PLN on `ORDER`.
const RETURN: i64 = 5;

fn pln(minor: i64) -> Money {
    Money {
        minor,
        currency: Currency::parse("PLN").expect("PLN"),
    }
}

fn payment(id: MovementId, order_id: i64, minor: i64, external: Option<&str>) -> Payment {
    Payment {
        id,
        order_id,
        amount: pln(minor),
        payment_form_id: 2,
        payment_system: Some(27),
        auto_refund: true,
        external_transaction_id: external.map(str::to_owned),
        paid_at: id,
        refunded_minor: 0,
    }
}

fn shop() -> MemoryLedger {
    let mut ledger = MemoryLedger::default();
    ledger.add_payment(ORDER, payment(CARD, ORDER, 100_00, Some("PAYU-10")));
    ledger.add_payment(ORDER, payment(NO_TRANSACTION_ID, ORDER, 50_00, None));
    ledger.add_payment(
        FULFILLED_ORDER,
        payment(20, FULFILLED_ORDER, 10_00, Some("P-20")),
    );
    if let Some(order) = ledger.orders.get_mut(&FULFILLED_ORDER) {
        order.fulfilled = true;
    }
    ledger.returns.insert(
        RETURN,
        Claim {
            order_id: ORDER,
            value: pln(30_00),
            refunded_minor: 0,
        },
    );
    ledger.payment_forms = vec![1, 2];
    ledger.next_id = 100;
    ledger
}

struct Setup {
    store: Arc<MemoryStore>,
    service: RefundService,
}

fn setup_with(sealing: AuditSealing, require_second_approver: bool) -> Setup {
    let store = Arc::new(MemoryStore::new(shop(), sealing));
    let mut policy = Policy::new(OperatorRouting::single("sandbox"));
    policy.require_second_approver = require_second_approver;
    let service = RefundService::new(
        store.clone(),
        Clock::Fixed(1_700_000_000),
        chrono_tz::Europe::Warsaw,
        policy,
    );
    Setup { store, service }
}

fn setup() -> Setup {
    setup_with(AuditSealing::InTransaction, false)
}

fn caller(login: &str) -> Caller {
    Caller {
        login: login.to_owned(),
        scopes: Scopes::ALL,
        channel: Channel::Rest,
        request_id: None,
    }
}

fn amount(value: &str, currency: &str) -> RequestedAmount {
    RequestedAmount {
        value: value.parse::<Decimal>().expect("decimal"),
        currency: currency.to_owned(),
    }
}

fn order_source() -> SourceRef {
    SourceRef {
        source_type: SourceType::Order,
        id: ORDER,
    }
}

fn at(refund_id: MovementId) -> RefundAt {
    RefundAt {
        source: order_source(),
        refund_id,
    }
}

/// The outcome of a fresh call.
fn fresh<T>(answer: Answer<T>) -> Result<T, RefundError> {
    match answer {
        Answer::Fresh(outcome) => outcome,
        Answer::Replayed(_) => panic!("no idempotency key was sent, so nothing is replayed"),
    }
}

fn fault<T: std::fmt::Debug>(answer: Answer<T>) -> i32 {
    let error = fresh(answer).expect_err("the call must fail");
    assert!(!matches!(error, RefundError::Internal(_)), "{error:?}");
    error.fault_code(OperationKind::Other)
}

impl Setup {
    async fn automatic(&self, payment_id: MovementId, value: &str) -> Answer<MovementId> {
        let request = AddAutomaticRefundForOrder {
            order_id: ORDER,
            payment_id,
            amount: amount(value, "PLN"),
        };
        self.service
            .add_automatic_refund_for_order(&caller("clerk"), request, None)
            .await
    }

    async fn manual(&self, by: &str, source: SourceRef, value: &str) -> Answer<MovementId> {
        let request = AddManualRefund {
            source,
            amount: amount(value, "PLN"),
            details: ManualDetails {
                payment_form_id: 1,
                payment_system: None,
                account: None,
                client_account: None,
            },
        };
        self.service
            .add_manual_refund(&caller(by), request, None)
            .await
    }

    async fn confirm(&self, by: &str, refund_id: MovementId) -> Answer<bool> {
        self.service
            .confirm_refund(&caller(by), at(refund_id), None)
            .await
    }

    async fn cancel(&self, refund_id: MovementId) -> Answer<bool> {
        self.service
            .cancel_refund(&caller("clerk"), at(refund_id), None)
            .await
    }

    async fn update(&self, refund_id: MovementId, value: &str) -> Answer<bool> {
        let request = UpdateRefund {
            refund: at(refund_id),
            amount: amount(value, "PLN"),
        };
        self.service
            .update_refund(&caller("clerk"), request, None)
            .await
    }

    fn status(&self, refund_id: MovementId) -> RefundStatus {
        self.store.snapshot().refunds[&refund_id].status
    }
}

#[tokio::test]
async fn a_payment_is_never_refunded_past_what_was_paid() {
    let s = setup();
    fresh(s.automatic(CARD, "60.00").await).expect("60 of 100");
    assert_eq!(s.automatic(CARD, "40.01").await.code(), 4003);
    fresh(s.automatic(CARD, "40.00").await).expect("the last 40");
    assert_eq!(s.automatic(CARD, "0.01").await.code(), 4003);
    let ledger = s.store.snapshot();
    assert_eq!(ledger.payments[&CARD].refunded_minor, 100_00);
    assert_eq!(ledger.orders[&ORDER].refunded_minor, 100_00);
}

#[tokio::test]
async fn manual_refunds_share_the_order_total_with_automatic_ones() {
    let s = setup();
    fresh(s.automatic(CARD, "100.00").await).expect("the card in full");
    // The order took 150.00; 100.00 is reserved, so 50.00 is left for a manual refund.
    assert_eq!(
        s.manual("clerk", order_source(), "50.01").await.code(),
        4003
    );
    fresh(s.manual("clerk", order_source(), "50.00").await).expect("the rest");
    assert_eq!(s.store.snapshot().orders[&ORDER].refunded_minor, 150_00);
}

#[tokio::test]
async fn a_return_caps_its_refunds_at_its_value() {
    let s = setup();
    let the_return = SourceRef {
        source_type: SourceType::Return,
        id: RETURN,
    };
    assert_eq!(s.manual("clerk", the_return, "30.01").await.code(), 4003);
    fresh(s.manual("clerk", the_return, "30.00").await).expect("the whole return");
    let auto = s
        .service
        .add_automatic_refund(
            &caller("clerk"),
            AddAutomaticRefund { source: the_return },
            None,
        )
        .await;
    assert_eq!(auto.code(), 4001, "nothing is outstanding on the return");
}

#[tokio::test]
async fn amounts_must_be_positive_in_the_payments_currency_and_whole_minor_units() {
    let s = setup();
    let in_euro = AddAutomaticRefundForOrder {
        order_id: ORDER,
        payment_id: CARD,
        amount: amount("10.00", "EUR"),
    };
    let answer = s
        .service
        .add_automatic_refund_for_order(&caller("clerk"), in_euro, None)
        .await;
    assert_eq!(answer.code(), 4004);
    assert_eq!(s.automatic(CARD, "0").await.code(), 4016);
    assert_eq!(s.automatic(CARD, "-5.00").await.code(), 4016);
    assert_eq!(s.automatic(CARD, "10.005").await.code(), 2);
    assert!(s.store.snapshot().refunds.is_empty(), "nothing was added");
}

#[tokio::test]
async fn a_fulfilled_order_takes_no_automatic_refund() {
    let s = setup();
    let request = AddAutomaticRefundForOrder {
        order_id: FULFILLED_ORDER,
        payment_id: 20,
        amount: amount("1.00", "PLN"),
    };
    let answer = s
        .service
        .add_automatic_refund_for_order(&caller("clerk"), request, None)
        .await;
    assert_eq!(answer.code(), 4014);
}

#[tokio::test]
async fn a_manual_refund_completes_on_confirmation_and_then_changes_no_more() {
    let s = setup();
    let id = fresh(s.manual("clerk", order_source(), "10.00").await).expect("added");
    assert!(fresh(s.confirm("clerk", id).await).expect("confirmed"));
    assert_eq!(s.status(id), RefundStatus::Completed);
    assert_eq!(s.confirm("clerk", id).await.code(), 4012);
    assert_eq!(s.update(id, "5.00").await.code(), 4012);
    assert_eq!(s.cancel(id).await.code(), 4020);
}

#[tokio::test]
async fn an_automatic_refund_is_processing_once_confirmed() {
    let s = setup();
    let id = fresh(s.automatic(CARD, "10.00").await).expect("added");
    assert!(fresh(s.confirm("clerk", id).await).expect("confirmed"));
    assert_eq!(s.status(id), RefundStatus::Processing);
    assert_eq!(s.confirm("clerk", id).await.code(), 4017);
    assert_eq!(s.update(id, "5.00").await.code(), 4017);
    assert_eq!(s.cancel(id).await.code(), 4019);
    let job = &s.store.snapshot().jobs[&id];
    assert_eq!((job.operator.as_str(), job.amount), ("sandbox", pln(10_00)));
}

#[tokio::test]
async fn a_canceled_refund_releases_its_amount_and_cannot_be_edited() {
    let s = setup();
    let id = fresh(s.automatic(CARD, "100.00").await).expect("added");
    assert!(fresh(s.cancel(id).await).expect("canceled"));
    assert_eq!(s.store.snapshot().payments[&CARD].refunded_minor, 0);
    assert_eq!(s.update(id, "5.00").await.code(), 4013);
    assert_eq!(s.confirm("clerk", id).await.code(), 4013);
    assert_eq!(s.cancel(id).await.code(), 4020);
    fresh(s.automatic(CARD, "100.00").await).expect("the released amount is refundable again");
}

#[tokio::test]
async fn an_update_may_use_its_own_reservation_but_no_more() {
    let s = setup();
    let id = fresh(s.automatic(CARD, "60.00").await).expect("added");
    fresh(s.automatic(CARD, "30.00").await).expect("another");
    assert!(fresh(s.update(id, "70.00").await).expect("60 + the 10 left"));
    assert_eq!(s.update(id, "70.01").await.code(), 4003);
    assert_eq!(s.store.snapshot().payments[&CARD].refunded_minor, 100_00);
}

#[tokio::test]
async fn confirming_needs_the_operators_transaction_id() {
    let s = setup();
    let id = fresh(s.automatic(NO_TRANSACTION_ID, "5.00").await).expect("added");
    assert_eq!(s.confirm("clerk", id).await.code(), 4015);
    assert_eq!(s.status(id), RefundStatus::New, "nothing changed");
}

#[tokio::test]
async fn a_refund_is_named_with_its_own_source() {
    let s = setup();
    let id = fresh(s.automatic(CARD, "5.00").await).expect("added");
    let elsewhere = RefundAt {
        source: SourceRef {
            source_type: SourceType::Return,
            id: RETURN,
        },
        refund_id: id,
    };
    let answer = s
        .service
        .cancel_refund(&caller("clerk"), elsewhere, None)
        .await;
    assert_eq!(answer.code(), 4018);
}

#[tokio::test]
async fn maker_checker_wants_a_second_person() {
    let s = setup_with(AuditSealing::InTransaction, true);
    let id = fresh(s.manual("maker", order_source(), "5.00").await).expect("added");
    assert_eq!(s.confirm("maker", id).await.code(), 4021);
    assert!(fresh(s.confirm("checker", id).await).expect("a second person confirms"));
}

#[tokio::test]
async fn every_change_is_chained_in_its_transaction_or_by_the_sealer() {
    for sealing in [AuditSealing::InTransaction, AuditSealing::ByLeader] {
        let s = setup_with(sealing, false);
        let id = fresh(s.manual("clerk", order_source(), "5.00").await).expect("added");
        fresh(s.update(id, "4.00").await).expect("updated");
        fresh(s.confirm("clerk", id).await).expect("confirmed");
        let before = s.store.snapshot();
        let (chained, pending) = match sealing {
            AuditSealing::InTransaction => (3, 0),
            AuditSealing::ByLeader => (0, 3),
        };
        assert_eq!(
            (before.chain.len(), before.unsealed.len()),
            (chained, pending)
        );
        let sealed = s.service.seal_audit(1000).await.expect("sealing");
        assert_eq!(sealed, pending);
        let after = s.store.snapshot();
        assert!(after.unsealed.is_empty());
        assert_eq!(audit::verify(after.chain.clone()), Ok(3));
        let operations: Vec<&str> = after
            .chain
            .iter()
            .map(|chained| chained.entry.operation.as_str())
            .collect();
        assert_eq!(
            operations,
            ["addManualRefund", "updateRefund", "confirmRefund"]
        );
    }
}

#[tokio::test]
async fn a_failed_operation_leaves_no_audit_entry() {
    let s = setup();
    assert_eq!(s.automatic(CARD, "100.01").await.code(), 4003);
    let ledger = s.store.snapshot();
    assert!(ledger.chain.is_empty() && ledger.refunds.is_empty());
}

#[tokio::test]
async fn a_worker_whose_lease_ran_out_records_nothing() {
    let s = setup();
    let id = fresh(s.automatic(CARD, "10.00").await).expect("added");
    fresh(s.confirm("clerk", id).await).expect("confirmed");
    let policy = RetryPolicy {
        lease_ms: -1,
        ..RetryPolicy::default()
    };
    // The first worker's lease is over at once, so the second claims the same job.
    let late = s.service.claim_jobs(policy, 10).await.expect("claim");
    let newer = s.service.claim_jobs(policy, 10).await.expect("claim again");
    assert_eq!((late.len(), newer.len()), (1, 1));
    assert!(newer[0].lease > late[0].lease);
    let completed = OperatorAnswer::Completed {
        external_id: "OP-1".to_owned(),
    };
    let stale = s
        .service
        .record_answer(late[0].clone(), completed.clone(), policy, 0, 0)
        .await
        .expect("recording");
    assert_eq!(stale, None, "the stale worker records nothing");
    assert_eq!(s.status(id), RefundStatus::Processing);
    let current = s
        .service
        .record_answer(newer[0].clone(), completed, policy, 0, 0)
        .await
        .expect("recording");
    assert!(current.is_some());
    assert_eq!(s.status(id), RefundStatus::Completed);
}

/// The guard behind the rules: a write that skips the rules' checks still cannot reserve more
/// than was paid (the schemas' CHECK constraints; the double keeps the same guard).
#[test]
fn the_ledger_refuses_an_over_refund_whatever_the_rules_did() {
    let mut ledger = shop();
    let refund = |minor| NewRefund {
        order_id: ORDER,
        source: order_source(),
        method: RefundMethod::Automatic { payment_id: CARD },
        amount: pln(minor),
        details: None,
        created_at: 0,
        caller: "bug".to_owned(),
    };
    ledger.reserve_refund(&refund(100_00)).expect("all of it");
    let error = ledger
        .reserve_refund(&refund(1))
        .expect_err("one grosz more");
    assert!(error.to_string().contains("CHECK failed"), "{error}");
}

trait Code {
    fn code(self) -> i32;
}

impl<T: std::fmt::Debug> Code for Answer<T> {
    fn code(self) -> i32 {
        fault(self)
    }
}

#[tokio::test]
async fn each_change_writes_its_events_in_its_transaction() {
    let mut ledger = shop();
    ledger.events_wanted = true;
    let store = Arc::new(MemoryStore::new(ledger, AuditSealing::InTransaction));
    let s = Setup {
        service: RefundService::new(
            store.clone(),
            Clock::Fixed(1_700_000_000),
            chrono_tz::Europe::Warsaw,
            Policy::new(OperatorRouting::single("sandbox")),
        ),
        store,
    };
    let manual = fresh(s.manual("clerk", order_source(), "5.00").await).expect("added");
    fresh(s.update(manual, "4.00").await).expect("updated");
    fresh(s.confirm("clerk", manual).await).expect("confirmed");
    let automatic = fresh(s.automatic(CARD, "7.00").await).expect("added");
    fresh(s.cancel(automatic).await).expect("canceled");
    assert_eq!(s.automatic(CARD, "1000.00").await.code(), 4003);
    let ledger = s.store.snapshot();
    let seen: Vec<(MovementId, &str, &str)> = ledger
        .events
        .iter()
        .map(|event| (event.refund_id, event.kind.as_str(), event.status.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (manual, "refund.created", "New"),
            (manual, "refund.updated", "New"),
            (manual, "refund.confirmed", "Completed"),
            (manual, "refund.completed", "Completed"),
            (automatic, "refund.created", "New"),
            (automatic, "refund.canceled", "Canceled"),
        ],
        "the refused add left no event"
    );
    let confirmed = &ledger.events[2];
    assert_eq!(confirmed.amount, pln(4_00));
    assert_eq!(
        (confirmed.channel.as_str(), confirmed.caller.as_str()),
        ("rest", "clerk")
    );
    assert_eq!(ledger.events[4].payment_id, Some(CARD));
    let mut ids: Vec<&str> = ledger
        .events
        .iter()
        .map(|event| event.id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every event has its own id");
}
