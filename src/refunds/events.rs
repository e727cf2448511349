//! Refund events for the shop's webhooks: what changed, written in the same transaction as the
//! change (so no change is without its event and no event outlives a change that rolled back),
//! and delivered later by the webhook worker (`crate::webhooks`), at least once, in order per
//! refund and endpoint.

use super::audit::AuditEntry;
use super::types::{MovementId, Refund, RefundMethod, RefundStatus, SourceRef, Timestamp};
use crate::money::Money;

/// What happened to a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Created,
    Updated,
    Confirmed,
    Completed,
    Failed,
    Canceled,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::Created,
        EventType::Updated,
        EventType::Confirmed,
        EventType::Completed,
        EventType::Failed,
        EventType::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "refund.created",
            EventType::Updated => "refund.updated",
            EventType::Confirmed => "refund.confirmed",
            EventType::Completed => "refund.completed",
            EventType::Failed => "refund.failed",
            EventType::Canceled => "refund.canceled",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// The events one audited step of a refund raises, in order. A manual refund is confirmed
    /// and completed in one step: both, confirmed first.
    pub fn of_step(before: Option<RefundStatus>, after: RefundStatus) -> &'static [EventType] {
        use RefundStatus::{Canceled, Completed, Failed, New, Processing};
        match (before, after) {
            (None, _) => &[EventType::Created],
            (Some(New), New) => &[EventType::Updated],
            (Some(New), Processing) => &[EventType::Confirmed],
            (Some(New), Completed) => &[EventType::Confirmed, EventType::Completed],
            (Some(New), Canceled) => &[EventType::Canceled],
            (Some(Processing), Completed) => &[EventType::Completed],
            (Some(Processing), Failed) => &[EventType::Failed],
            _ => &[],
        }
    }
}

/// One event: the refund as `getRefundStatus` shows it after the change, what it refunds, and
/// who changed it through which face.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundEvent {
    /// Unique, `evt_` and 24 hex digits; the receiver's deduplication key.
    pub id: String,
    pub kind: EventType,
    pub created: Timestamp,
    pub refund_id: MovementId,
    pub source: SourceRef,
    /// The refunded payment (automatic refunds); `None` for manual ones.
    pub payment_id: Option<MovementId>,
    pub status: RefundStatus,
    pub amount: Money,
    pub date_add: Timestamp,
    pub date_confirm: Option<Timestamp>,
    pub external_id: Option<String>,
    /// The face (`soap`, `rest`, `json-gate`, `worker`, `operator`, …).
    pub channel: String,
    pub caller: String,
}

impl RefundEvent {
    /// The events of one audited step; `refund` is the refund as the step left it.
    pub fn of_step(refund: &Refund, entry: &AuditEntry) -> anyhow::Result<Vec<RefundEvent>> {
        let before = match &entry.status_before {
            None => None,
            Some(word) => Some(
                RefundStatus::parse(word)
                    .ok_or_else(|| anyhow::anyhow!("audited status '{word}'"))?,
            ),
        };
        EventType::of_step(before, refund.status)
            .iter()
            .map(|kind| {
                Ok(RefundEvent {
                    id: new_event_id()?,
                    kind: *kind,
                    created: entry.at,
                    refund_id: refund.id,
                    source: refund.source,
                    payment_id: match refund.method {
                        RefundMethod::Automatic { payment_id } => Some(payment_id),
                        RefundMethod::Manual => None,
                    },
                    status: refund.status,
                    amount: refund.amount,
                    date_add: refund.created_at,
                    date_confirm: refund.confirmed_at,
                    external_id: refund.external_id.clone(),
                    channel: entry.channel.clone(),
                    caller: entry.caller.clone(),
                })
            })
            .collect()
    }
}

/// A shop's webhook endpoint as the worker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: i64,
    pub url: String,
    /// The HMAC key the endpoint's receiver shares.
    pub secret: String,
    pub created_ms: i64,
    /// When a delivery to it last succeeded.
    pub last_success_ms: Option<i64>,
}

/// One event on its way to one endpoint, as claimed by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub endpoint: WebhookEndpoint,
    pub event: RefundEvent,
    pub attempts: u32,
    /// When the delivery was queued (with its event).
    pub created_ms: i64,
    /// The fencing token of the claim: a result is recorded only under the newest one.
    pub lease: i64,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Given up after the retry window.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(word: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == word)
    }
}

/// What one attempt leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStep {
    pub delivery_id: i64,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// The receiver's HTTP status, when it answered.
    pub last_status: Option<u16>,
    /// What went wrong, bounded (a body excerpt or a connection error).
    pub last_error: Option<String>,
    /// The endpoint has failed for the whole window: stop sending to it.
    pub disable_endpoint: bool,
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub base_ms: i64,
    pub cap_ms: i64,
    /// How long a delivery is retried, from when it was queued (three days).
    pub give_up_after_ms: i64,
    /// How long a claimed delivery stays with the worker that claimed it.
    pub lease_ms: i64,
}

impl Default for DeliveryPolicy {
    fn default() -> DeliveryPolicy {
        DeliveryPolicy {
            base_ms: 5_000,
            cap_ms: 3_600_000,
            give_up_after_ms: 3 * 24 * 3_600_000,
            lease_ms: 15_000,
        }
    }
}

/// The most characters of a failure kept with a delivery.
pub const ERROR_EXCERPT_CHARS: usize = 256;

/// The next step after an attempt: `Ok(status)` for a 2xx answer, `Err((status, text))` for
/// anything else (no status: the request did not get an answer). Capped exponential backoff
/// with `jitter_permille` (800–1200); past the window the delivery fails, and the endpoint is
/// disabled when nothing reached it during the whole window either.
pub fn plan_delivery(
    delivery: &Delivery,
    result: Result<u16, (Option<u16>, String)>,
    policy: &DeliveryPolicy,
    now_ms: i64,
    jitter_permille: i64,
) -> DeliveryStep {
    let attempts = delivery.attempts.saturating_add(1);
    match result {
        Ok(status) => DeliveryStep {
            delivery_id: delivery.id,
            state: DeliveryState::Delivered,
            attempts,
            next_attempt_ms: now_ms,
            last_status: Some(status),
            last_error: None,
            disable_endpoint: false,
        },
        Err((status, error)) => {
            let error: String = error.chars().take(ERROR_EXCERPT_CHARS).collect();
            let window_over = now_ms - delivery.created_ms >= policy.give_up_after_ms;
            let silent_since = delivery
                .endpoint
                .last_success_ms
                .unwrap_or(delivery.endpoint.created_ms);
            let exponent = attempts.saturating_sub(1).min(30);
            let backoff = policy
                .base_ms
                .saturating_mul(1_i64 << exponent)
                .min(policy.cap_ms);
            DeliveryStep {
                delivery_id: delivery.id,
                state: if window_over {
                    DeliveryState::Failed
                } else {
                    DeliveryState::Pending
                },
                attempts,
                next_attempt_ms: now_ms + backoff * jitter_permille / 1000,
                last_status: status,
                last_error: Some(error),
                disable_endpoint: window_over && now_ms - silent_since >= policy.give_up_after_ms,
            }
        }
    }
}

/// `evt_` and 96 random bits in hex.
fn new_event_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("no randomness for an event id: {error}"))?;
    Ok(format!("evt_{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_of_the_lifecycle_raises_its_events() {
        use RefundStatus::*;
        let names = |before, after| -> Vec<&str> {
            EventType::of_step(before, after)
                .iter()
                .map(|kind| kind.as_str())
                .collect()
        };
        assert_eq!(names(None, New), ["refund.created"]);
        assert_eq!(names(Some(New), New), ["refund.updated"]);
        assert_eq!(names(Some(New), Processing), ["refund.confirmed"]);
        assert_eq!(
            names(Some(New), Completed),
            ["refund.confirmed", "refund.completed"]
        );
        assert_eq!(names(Some(New), Canceled), ["refund.canceled"]);
        assert_eq!(names(Some(Processing), Completed), ["refund.completed"]);
        assert_eq!(names(Some(Processing), Failed), ["refund.failed"]);
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
    }
}
