//! The outbox state machine: what to do next for a confirmed automatic refund after each answer
//! of its payment operator. Pure functions; the worker (`crate::outbox`) does the talking.
//!
//! The rule that prevents double refunds: an answer that is not definite (timeout, connection
//! error, 5xx, 429) never fails a refund and never leads to a blind resend; the next step asks
//! the operator for the refund's status, and only a "no such refund" leads to sending again,
//! under the same idempotency key (the refund's id).

use std::collections::HashMap;

use super::types::{JobState, JobStep, OperatorAnswer, RefundJob, Settlement};

/// Which operator refunds a payment, by the payment's `paymentSystem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRouting {
    pub default_operator: String,
    pub by_payment_system: HashMap<i64, String>,
}

impl OperatorRouting {
    /// Every payment system goes to one operator.
    pub fn single(operator: &str) -> OperatorRouting {
        OperatorRouting {
            default_operator: operator.to_owned(),
            by_payment_system: HashMap::new(),
        }
    }

    pub fn operator_for(&self, payment_system: Option<i64>) -> &str {
        payment_system
            .and_then(|system| self.by_payment_system.get(&system))
            .unwrap_or(&self.default_operator)
    }
}

/// Capped exponential backoff for answers that are not definite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base_ms: i64,
    pub cap_ms: i64,
    /// How long a claimed job stays leased to the worker that claimed it.
    pub lease_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            base_ms: 1_000,
            cap_ms: 300_000,
            lease_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempts` (1 = first retry), scaled by `jitter_permille`
    /// (800–1200 spreads retries by ±20%).
    pub fn backoff_ms(&self, attempts: u32, jitter_permille: i64) -> i64 {
        let exponent = attempts.saturating_sub(1).min(30);
        let plain = self
            .base_ms
            .saturating_mul(1i64 << exponent)
            .min(self.cap_ms);
        plain.saturating_mul(jitter_permille) / 1000
    }
}

/// The next step for `job` after `answer`. `poll_after_ms` is how long to wait before asking
/// again about a refund the operator accepted.
pub fn plan(
    job: &RefundJob,
    answer: OperatorAnswer,
    policy: &RetryPolicy,
    poll_after_ms: i64,
    now_ms: i64,
    jitter_permille: i64,
) -> JobStep {
    let attempts = job.attempts.saturating_add(1);
    let step = |state, next_attempt_ms, last_error, settlement| JobStep {
        refund_id: job.refund_id,
        state,
        attempts,
        next_attempt_ms,
        last_error,
        settlement,
    };
    match answer {
        OperatorAnswer::Completed { external_id } => step(
            JobState::Done,
            now_ms,
            None,
            Some(Settlement::Completed { external_id }),
        ),
        OperatorAnswer::Declined { reason } => step(
            JobState::Done,
            now_ms,
            Some(reason.clone()),
            Some(Settlement::Failed { reason }),
        ),
        OperatorAnswer::Accepted => step(JobState::Query, now_ms + poll_after_ms, None, None),
        OperatorAnswer::NotFound => step(
            JobState::Send,
            now_ms,
            Some(
                "the operator has no record of the refund; sending it again under the same key"
                    .to_owned(),
            ),
            None,
        ),
        OperatorAnswer::Uncertain { error } => step(
            JobState::Query,
            now_ms + policy.backoff_ms(attempts, jitter_permille),
            Some(error),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{Currency, Money};

    fn job(state: JobState, attempts: u32) -> RefundJob {
        RefundJob {
            refund_id: 20,
            operator: "payu".to_owned(),
            state,
            attempts,
            next_attempt_ms: 0,
            last_error: None,
            created_ms: 0,
            lease: 1,
            payment_external_id: "PAYU-1".to_owned(),
            amount: Money {
                minor: 1000,
                currency: Currency::parse("PLN").unwrap(),
            },
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let policy = RetryPolicy {
            base_ms: 100,
            cap_ms: 1_000,
            lease_ms: 5_000,
        };
        let waits: Vec<i64> = (1..=6).map(|n| policy.backoff_ms(n, 1000)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(policy.backoff_ms(2, 800), 160);
        assert_eq!(policy.backoff_ms(2, 1200), 240);
        assert_eq!(policy.backoff_ms(u32::MAX, 1000), 1_000);
    }

    #[test]
    fn uncertain_answers_lead_to_a_status_query_never_a_failure() {
        let policy = RetryPolicy {
            base_ms: 100,
            cap_ms: 1_000,
            lease_ms: 5_000,
        };
        let step = plan(
            &job(JobState::Send, 0),
            OperatorAnswer::Uncertain {
                error: "timeout".into(),
            },
            &policy,
            50,
            10_000,
            1000,
        );
        assert_eq!(
            (step.state, step.attempts, step.next_attempt_ms),
            (JobState::Query, 1, 10_100)
        );
        assert_eq!(step.settlement, None);
        assert_eq!(step.last_error.as_deref(), Some("timeout"));
    }

    #[test]
    fn only_a_missing_refund_is_sent_again() {
        let policy = RetryPolicy::default();
        let step = plan(
            &job(JobState::Query, 3),
            OperatorAnswer::NotFound,
            &policy,
            50,
            7,
            1000,
        );
        assert_eq!((step.state, step.next_attempt_ms), (JobState::Send, 7));
        let step = plan(
            &job(JobState::Send, 0),
            OperatorAnswer::Accepted,
            &policy,
            50,
            7,
            1000,
        );
        assert_eq!((step.state, step.next_attempt_ms), (JobState::Query, 57));
    }

    #[test]
    fn definite_answers_settle() {
        let policy = RetryPolicy::default();
        let done = plan(
            &job(JobState::Query, 1),
            OperatorAnswer::Completed {
                external_id: "X1".into(),
            },
            &policy,
            50,
            7,
            1000,
        );
        assert_eq!(done.state, JobState::Done);
        assert_eq!(
            done.settlement,
            Some(Settlement::Completed {
                external_id: "X1".into()
            })
        );
        let declined = plan(
            &job(JobState::Send, 0),
            OperatorAnswer::Declined {
                reason: "card closed".into(),
            },
            &policy,
            50,
            7,
            1000,
        );
        assert_eq!(
            declined.settlement,
            Some(Settlement::Failed {
                reason: "card closed".into()
            })
        );
    }

    #[test]
    fn routing_falls_back_to_the_default_operator() {
        let mut routing = OperatorRouting::single("sandbox");
        routing.by_payment_system.insert(27, "payu".to_owned());
        assert_eq!(routing.operator_for(Some(27)), "payu");
        assert_eq!(routing.operator_for(Some(31)), "sandbox");
        assert_eq!(routing.operator_for(None), "sandbox");
    }
}
