//! The outbox worker: claims due jobs, asks their operators, records each answer. Runs inside
//! `serve`; a job's lease and the operator's idempotency key make a crash at any moment safe.

use std::sync::Arc;
use std::time::Duration;

use crate::operators::Operators;
use crate::refunds::RefundService;
use crate::refunds::types::{JobState, OperatorAnswer, RefundJob};

/// Jobs handled at once.
const BATCH: u32 = 32;
/// How often the worker looks for due jobs when nothing wakes it.
const TICK: Duration = Duration::from_millis(200);

/// Runs until `shutdown` resolves. Operator calls still in flight are dropped: their jobs stay
/// leased and are retried (under the same idempotency key) after the next start.
pub async fn run(
    service: RefundService,
    operators: Arc<Operators>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let jobs = match service.claim_jobs(operators.retry, BATCH).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::error!(error = error.log_text(), "outbox: claiming jobs failed");
                Vec::new()
            }
        };
        let busy = jobs.len() as u32 == BATCH;
        let steps = futures_util::future::join_all(
            jobs.into_iter().map(|job| step(&service, &operators, job)),
        );
        tokio::select! {
            _ = steps => {}
            () = &mut shutdown => return,
        }
        if busy {
            continue;
        }
        tokio::select! {
            () = service.job_added() => {}
            () = tokio::time::sleep(TICK) => {}
            () = &mut shutdown => return,
        }
    }
}

async fn step(service: &RefundService, operators: &Operators, job: RefundJob) {
    let refund_id = job.refund_id;
    let (answer, poll_after_ms) = match operators.get(&job.operator) {
        Some(operator) => {
            let answer = match job.state {
                JobState::Send => operator.send(&job).await,
                JobState::Query | JobState::Done => operator.status(&job).await,
            };
            (answer, operator.poll_after_ms())
        }
        None => {
            let error = format!("operator '{}' is not configured", job.operator);
            (OperatorAnswer::Uncertain { error }, 0)
        }
    };
    tracing::debug!(refund_id, ?answer, "outbox: operator answered");
    match service
        .record_answer(
            job,
            answer,
            operators.retry,
            poll_after_ms,
            crate::clock::jitter_permille(),
        )
        .await
    {
        Ok(Some(step)) => {
            if let Some(settlement) = step.settlement {
                tracing::info!(refund_id, ?settlement, "outbox: refund settled");
            } else if let Some(error) = step.last_error {
                tracing::warn!(
                    refund_id,
                    attempts = step.attempts,
                    error,
                    "outbox: will try again"
                );
            }
        }
        Ok(None) => tracing::debug!(refund_id, "outbox: settled meanwhile"),
        Err(error) => tracing::error!(
            refund_id,
            error = error.log_text(),
            "outbox: recording an answer failed"
        ),
    }
}
