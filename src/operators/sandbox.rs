//! The sandbox operator: settles every refund a fixed time after it was sent, without leaving
//! the process, so `serve --demo` shows the whole flow. Outcomes are deterministic: an amount
//! whose last two digits are 13 (10.13 PLN, 113 JPY) is declined, anything else completes.

use super::{AnswerFuture, Operator};
use crate::clock::system_millis;
use crate::refunds::types::{OperatorAnswer, RefundJob};

pub fn default_settle_after_ms() -> i64 {
    2_000
}

pub struct Sandbox {
    settle_after_ms: i64,
}

impl Sandbox {
    pub fn new(settle_after_ms: i64) -> Sandbox {
        Sandbox { settle_after_ms }
    }

    fn outcome(job: &RefundJob) -> OperatorAnswer {
        if job.amount.minor % 100 == 13 {
            OperatorAnswer::Declined {
                reason: "sandbox: amounts ending in 13 are declined".to_owned(),
            }
        } else {
            OperatorAnswer::Completed {
                external_id: format!("SANDBOX-{}", job.refund_id),
            }
        }
    }
}

impl Operator for Sandbox {
    fn send<'a>(&'a self, _job: &'a RefundJob) -> AnswerFuture<'a> {
        Box::pin(async { OperatorAnswer::Accepted })
    }

    fn status<'a>(&'a self, job: &'a RefundJob) -> AnswerFuture<'a> {
        Box::pin(async move {
            if system_millis() >= job.created_ms + self.settle_after_ms {
                Sandbox::outcome(job)
            } else {
                OperatorAnswer::Accepted
            }
        })
    }

    fn poll_after_ms(&self) -> i64 {
        self.settle_after_ms
    }

    fn verify_callback(&self, _body: &[u8], _signature: Option<&str>) -> bool {
        false
    }
}
