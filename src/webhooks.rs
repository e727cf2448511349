//! The webhook worker: delivers refund events to the shop's endpoints, signed, at least once, in
//! order per refund and endpoint. Runs inside `serve` beside the outbox worker; it only reads
//! deliveries the refund operations queued in their own transactions, so a slow or failing
//! receiver never slows an operation.
//!
//! Each request is `POST` with the event as JSON and `Refunds-Signature: t=<unix
//! seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The target's host is resolved once per
//! delivery and the connection is pinned to that address; unless `--allow-private-webhooks`,
//! only `https://` targets on public addresses are used (no loopback, private, link-local,
//! shared or unique-local addresses), and redirects are never followed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chrono_tz::Tz;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};

use crate::clock::{format_local_datetime, system_millis};
use crate::metrics::Metrics;
use crate::refunds::RefundService;
use crate::refunds::events::{Delivery, DeliveryPolicy, DeliveryState, plan_delivery};

/// Deliveries attempted at once.
const BATCH: u32 = 32;
/// How often the worker looks for due deliveries.
const TICK: Duration = Duration::from_millis(200);
/// The most of a receiver's answer read (for the failure excerpt).
const MAX_ANSWER_BYTES: usize = 4096;

/// How the worker delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Allow `http://` and private, loopback and link-local targets (tests, development).
    pub allow_private: bool,
    pub policy: DeliveryPolicy,
    /// A receiver must answer within this (connect included).
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            allow_private: false,
            policy: DeliveryPolicy::default(),
            timeout: Duration::ZERO,
        }
        .with_timeout(Duration::from_secs(10))
    }
}

impl WebhookConfig {
    /// Receivers get `timeout` to answer; a claimed delivery is leased for that and five
    /// seconds more, so one whose worker died is tried again soon after.
    pub fn with_timeout(self, timeout: Duration) -> WebhookConfig {
        let lease_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2) + 5_000;
        WebhookConfig {
            timeout,
            policy: DeliveryPolicy {
                lease_ms,
                ..self.policy
            },
            ..self
        }
    }
}

/// Runs until `shutdown` resolves. Attempts in flight are dropped: their deliveries stay leased
/// and are tried again after the lease (at least once, never lost).
pub async fn run(
    service: RefundService,
    config: WebhookConfig,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let deliveries = match service.claim_deliveries(config.policy, BATCH).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                tracing::error!(
                    error = error.log_text(),
                    "webhooks: claiming deliveries failed"
                );
                Vec::new()
            }
        };
        let busy = deliveries.len() as u32 == BATCH;
        let attempts = futures_util::future::join_all(
            deliveries
                .into_iter()
                .map(|delivery| attempt(&service, &config, &metrics, delivery)),
        );
        tokio::select! {
            _ = attempts => {}
            () = &mut shutdown => return,
        }
        if busy {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = &mut shutdown => return,
        }
    }
}

async fn attempt(
    service: &RefundService,
    config: &WebhookConfig,
    metrics: &Metrics,
    delivery: Delivery,
) {
    let body = payload(&delivery, service.timezone()).to_string();
    let result = send(
        config,
        &delivery.endpoint.url,
        &delivery.endpoint.secret,
        &body,
    )
    .await;
    let step = plan_delivery(
        &delivery,
        result,
        &config.policy,
        system_millis(),
        crate::clock::jitter_permille(),
    );
    let outcome = match step.state {
        DeliveryState::Delivered => "delivered",
        DeliveryState::Pending => "retry",
        DeliveryState::Failed => "failed",
    };
    metrics.webhook_attempt(outcome);
    match outcome {
        "delivered" => tracing::debug!(event = delivery.event.id, "webhooks: delivered"),
        _ => tracing::warn!(
            event = delivery.event.id,
            endpoint = delivery.endpoint.id,
            attempts = step.attempts,
            status = step.last_status,
            error = step.last_error,
            outcome,
            "webhooks: delivery failed"
        ),
    }
    if step.disable_endpoint {
        tracing::error!(
            endpoint = delivery.endpoint.id,
            "webhooks: endpoint disabled: no delivery succeeded for the whole retry window"
        );
    }
    if let Err(error) = service.record_delivery(delivery.lease, step).await {
        tracing::error!(
            error = error.log_text(),
            "webhooks: recording a delivery failed"
        );
    }
}

/// The event document: `{"id", "type", "created", "data"}`, `data` being the refund as
/// `getRefundStatus` shows it plus its ids and who changed it through which face.
pub fn payload(delivery: &Delivery, timezone: Tz) -> Value {
    let event = &delivery.event;
    let created = chrono::DateTime::from_timestamp(event.created, 0)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    json!({
        "id": event.id,
        "type": event.kind.as_str(),
        "created": created,
        "data": {
            "refundId": event.refund_id,
            "sourceType": event.source.source_type.as_str(),
            "sourceId": event.source.id,
            "paymentId": event.payment_id,
            "refundDateAdd": format_local_datetime(event.date_add, timezone),
            "refundValue": crate::rest::exact_money(&event.amount),
            "refundStatus": event.status.as_str(),
            "refundDateConfirm": event
                .date_confirm
                .map(|at| format_local_datetime(at, timezone))
                .unwrap_or_default(),
            "refundExternalId": event.external_id.clone().unwrap_or_default(),
            "refundCurrency": event.amount.currency.code(),
            "face": event.channel,
            "actor": event.caller,
        },
    })
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, unix_seconds: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// One attempt: `Ok(status)` on a 2xx, else the status (if any) and what went wrong.
async fn send(
    config: &WebhookConfig,
    url: &str,
    secret: &str,
    body: &str,
) -> Result<u16, (Option<u16>, String)> {
    let target = safe_target(url, config.allow_private)
        .await
        .map_err(|error| (None, error))?;
    let client = reqwest::Client::builder()
        .resolve(&target.host, target.address)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .build()
        .map_err(|error| (None, format!("building the HTTP client: {error}")))?;
    let now = chrono::Utc::now().timestamp();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("refunds-gateway/", env!("CARGO_PKG_VERSION")),
        )
        .header("refunds-signature", signature(secret, now, body))
        .body(body.to_owned())
        .send()
        .await
        .map_err(|error| (None, format!("sending: {error}")))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(status);
    }
    let mut excerpt = Vec::new();
    let mut response = response;
    while let Ok(Some(chunk)) = response.chunk().await {
        excerpt.extend_from_slice(&chunk);
        if excerpt.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    excerpt.truncate(MAX_ANSWER_BYTES);
    Err((
        Some(status),
        format!("HTTP {status}: {}", String::from_utf8_lossy(&excerpt)),
    ))
}

struct Target {
    host: String,
    address: SocketAddr,
}

/// Resolves `url`'s host once and checks where it leads.
async fn safe_target(url: &str, allow_private: bool) -> Result<Target, String> {
    let parsed = reqwest::Url::parse(url).map_err(|error| format!("invalid URL: {error}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        scheme => return Err(format!("scheme '{scheme}' is not allowed (https only)")),
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| "the URL has no host".to_owned())?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| "the URL has no port".to_owned())?;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|error| format!("resolving {host}: {error}"))?
        .collect();
    if !allow_private && let Some(blocked) = addresses.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, which is not a public address",
            blocked.ip()
        ));
    }
    let address = addresses
        .first()
        .copied()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    Ok(Target { host, address })
}

/// Whether `ip` is a public unicast address (not loopback, private, link-local, shared,
/// documentation, multicast, unspecified, or an IPv6 form of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_targets() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(blocked.parse().unwrap()), "{blocked}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_signature_is_an_hmac_of_time_and_body() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed with Python's hmac module.
        let signed = signature("whsec_test", 1_700_000_000, "{}");
        assert_eq!(
            signed,
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
        assert_ne!(signed, signature("whsec_other", 1_700_000_000, "{}"));
        assert_ne!(signed, signature("whsec_test", 1_700_000_001, "{}"));
    }

    #[tokio::test]
    async fn plain_http_and_private_targets_are_refused_unless_allowed() {
        let refused = safe_target("http://example.invalid/hook", false).await;
        assert!(refused.is_err_and(|error| error.contains("https only")));
        let loopback = safe_target("https://127.0.0.1:9/hook", false).await;
        assert!(loopback.is_err_and(|error| error.contains("not a public address")));
        let allowed = safe_target("http://127.0.0.1:9/hook", true).await;
        assert!(allowed.is_ok_and(|target| target.address.ip().is_loopback()));
    }
}
