//! Prometheus metrics: requests by face, operation and outcome, latency by face, and, read from
//! the ledger at each scrape, the outbox depth and refunds by status.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::refunds::types::LedgerCounts;

// Static strings: every request looks its counters up, so the labels must not allocate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    face: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaceLabels {
    face: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// How a request ended, for the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a result.
    Ok,
    /// Answered with a business error (`faultCode` other than 0).
    BusinessError,
    /// Refused before the operation ran (SOAP Fault, 4xx).
    Rejected,
    /// The gateway failed (5xx).
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BusinessError => "business_error",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

/// What the router learned about a request, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub face: &'static str,
    pub operation: Option<&'static str>,
    pub outcome: Outcome,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<FaceLabels, Histogram>,
    callbacks: Family<OutcomeLabels, Counter>,
    outbox_depth: Gauge,
    refunds: Family<StatusLabels, Gauge>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    webhook_queue_depth: Gauge,
    webhook_oldest_pending_seconds: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("refunds_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by face, operation and outcome",
            requests.clone(),
        );
        let latency = Family::<FaceLabels, Histogram>::new_with_constructor(|| {
            // 50 µs to ~1.6 s.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by face",
            latency.clone(),
        );
        let callbacks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "operator_callbacks",
            "Operator callbacks by outcome (settled, ignored, mismatch: amount or currency not \
             the refund's, refused: bad signature or body, unknown: no such operator or refund, \
             failed)",
            callbacks.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Confirmed automatic refunds not yet settled by their operator",
            outbox_depth.clone(),
        );
        let refunds = Family::<StatusLabels, Gauge>::default();
        registry.register("refunds", "Refunds by status", refunds.clone());
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retry, failed)",
            webhook_deliveries.clone(),
        );
        let webhook_queue_depth = Gauge::default();
        registry.register(
            "webhook_queue_depth",
            "Webhook deliveries not delivered yet",
            webhook_queue_depth.clone(),
        );
        let webhook_oldest_pending_seconds = Gauge::default();
        registry.register(
            "webhook_oldest_pending_seconds",
            "Age of the oldest webhook delivery not delivered yet (0 when none)",
            webhook_oldest_pending_seconds.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            callbacks,
            outbox_depth,
            refunds,
            webhook_deliveries,
            webhook_queue_depth,
            webhook_oldest_pending_seconds,
        }
    }

    pub fn observe(&self, served: Served, elapsed: Duration) {
        let labels = RequestLabels {
            face: served.face,
            operation: served.operation.unwrap_or("-"),
            outcome: served.outcome.as_str(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&FaceLabels { face: served.face })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one webhook delivery attempt: `delivered`, `retry` or `failed`.
    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one operator callback by its outcome.
    pub fn callback(&self, outcome: &'static str) {
        self.callbacks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The text exposition format, with the ledger's counts as of `now_ms`.
    pub fn render(&self, counts: &LedgerCounts, now_ms: i64) -> String {
        self.outbox_depth.set(counts.outbox_pending);
        self.webhook_queue_depth.set(counts.webhook_pending);
        self.webhook_oldest_pending_seconds.set(
            counts
                .webhook_oldest_pending_ms
                .map_or(0, |queued| (now_ms - queued).max(0) / 1000),
        );
        for (status, count) in &counts.refunds_by_status {
            self.refunds
                .get_or_create(&StatusLabels {
                    status: status.clone(),
                })
                .set(*count);
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
