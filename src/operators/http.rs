//! The HTTP operator protocol (README, "Payment operators"): JSON over HTTPS, every message
//! signed with HMAC-SHA256 over a shared secret.
//!
//! - `POST {url}/refunds` with `Idempotency-Key: {refundId}` and
//!   `X-Signature: sha256=<hex HMAC of the body>`, body
//!   `{"refundId", "paymentExternalId", "amount" (decimal string), "currency"}`.
//! - `GET {url}/refunds/{refundId}` with `X-Signature` over `GET /refunds/{refundId}`.
//! - Both answer `{"status": "accepted" | "processing" | "completed" | "declined",
//!   "operatorRefundId"?, "reason"?}`; a status query answers 404 for a refund it never got.
//! - Asynchronous results come to `POST /operators/{name}/callback`, signed like a send, body
//!   `{"refundId", "status", "operatorRefundId"?, "reason"?}`.
//!
//! Timeouts, connection errors, 408, 409, 425, 429 and 5xx are not definite: the worker then
//! asks for the status instead of sending blindly. Any other 4xx is the operator refusing the
//! request, which fails the refund.

use std::time::Duration;

use anyhow::Context as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Deserialize;
use sha2::Sha256;

use super::{AnswerFuture, Operator};
use crate::money::parse_exact;
use crate::refunds::StatedAmount;
use crate::refunds::error::quote;
use crate::refunds::types::{OperatorAnswer, RefundJob};

pub fn default_timeout_ms() -> u64 {
    10_000
}

pub fn default_poll_after_ms() -> i64 {
    30_000
}

pub struct HttpOperator {
    url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
    poll_after_ms: i64,
}

/// An operator's answer or callback body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorMessage {
    #[serde(default)]
    pub refund_id: Option<i64>,
    pub status: String,
    #[serde(default)]
    pub operator_refund_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// In a callback: the amount it is about, a decimal string (`"40.00"`) or a JSON number.
    #[serde(default)]
    pub amount: Option<serde_json::Value>,
    /// In a callback: the currency of `amount`.
    #[serde(default)]
    pub currency: Option<String>,
}

impl OperatorMessage {
    /// The amount and currency the message names, read exactly (never through a float).
    pub fn stated_amount(&self) -> StatedAmount {
        let value = match &self.amount {
            Some(serde_json::Value::String(text)) => parse_exact(text.trim()),
            Some(serde_json::Value::Number(number)) => parse_exact(&number.to_string()),
            _ => None,
        };
        StatedAmount {
            value,
            currency: self.currency.clone(),
        }
    }

    pub fn answer(self) -> OperatorAnswer {
        match self.status.as_str() {
            "completed" => OperatorAnswer::Completed {
                external_id: self.operator_refund_id.unwrap_or_default(),
            },
            "declined" => OperatorAnswer::Declined {
                reason: format!(
                    "declined by the operator: {}",
                    self.reason.unwrap_or_default()
                ),
            },
            "accepted" | "processing" => OperatorAnswer::Accepted,
            other => OperatorAnswer::Uncertain {
                error: format!("unknown status '{}' from the operator", quote(other)),
            },
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, message).
pub fn signature(secret: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a `sha256=<hex>` signature in constant time.
pub fn verify(secret: &[u8], message: &[u8], signature: Option<&str>) -> bool {
    let Some(hex_digest) = signature.and_then(|value| value.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message);
    mac.verify_slice(&digest).is_ok()
}

impl HttpOperator {
    pub fn new(
        url: &str,
        secret: Vec<u8>,
        timeout_ms: u64,
        poll_after_ms: i64,
    ) -> anyhow::Result<HttpOperator> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .connect_timeout(Duration::from_millis(timeout_ms.min(5_000)))
            .build()
            .context("building the operator HTTP client")?;
        Ok(HttpOperator {
            url: url.trim_end_matches('/').to_owned(),
            secret,
            client,
            poll_after_ms,
        })
    }

    async fn answer(
        response: Result<reqwest::Response, reqwest::Error>,
        query: bool,
    ) -> OperatorAnswer {
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return OperatorAnswer::Uncertain {
                    error: format!("operator unreachable or slow: {error}"),
                };
            }
        };
        let status = response.status().as_u16();
        let body = response.bytes().await;
        match (status, body) {
            (200..=299, Ok(body)) => match serde_json::from_slice::<OperatorMessage>(&body) {
                Ok(message) => message.answer(),
                Err(error) => OperatorAnswer::Uncertain {
                    error: format!("unreadable operator answer: {error}"),
                },
            },
            (404, _) if query => OperatorAnswer::NotFound,
            (408 | 409 | 425 | 429 | 500..=599, _) | (_, Err(_)) => OperatorAnswer::Uncertain {
                error: format!("operator answered HTTP {status}"),
            },
            (_, Ok(body)) => OperatorAnswer::Declined {
                reason: format!(
                    "operator refused the request: HTTP {status} {}",
                    quote(&String::from_utf8_lossy(&body))
                ),
            },
        }
    }
}

impl Operator for HttpOperator {
    fn send<'a>(&'a self, job: &'a RefundJob) -> AnswerFuture<'a> {
        Box::pin(async move {
            let body = serde_json::json!({
                "refundId": job.refund_id,
                "paymentExternalId": job.payment_external_id,
                "amount": job.amount.to_decimal().to_string(),
                "currency": job.amount.currency.code(),
            })
            .to_string();
            let response = self
                .client
                .post(format!("{}/refunds", self.url))
                .header("content-type", "application/json")
                .header("idempotency-key", job.refund_id.to_string())
                .header("x-signature", signature(&self.secret, body.as_bytes()))
                .body(body)
                .send()
                .await;
            HttpOperator::answer(response, false).await
        })
    }

    fn status<'a>(&'a self, job: &'a RefundJob) -> AnswerFuture<'a> {
        Box::pin(async move {
            let path = format!("/refunds/{}", job.refund_id);
            let response = self
                .client
                .get(format!("{}{path}", self.url))
                .header(
                    "x-signature",
                    signature(&self.secret, format!("GET {path}").as_bytes()),
                )
                .send()
                .await;
            HttpOperator::answer(response, true).await
        })
    }

    fn poll_after_ms(&self) -> i64 {
        self.poll_after_ms
    }

    fn verify_callback(&self, body: &[u8], signature: Option<&str>) -> bool {
        verify(&self.secret, body, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_same_secret_and_message() {
        let signed = signature(b"secret", b"{\"refundId\":20}");
        assert!(signed.starts_with("sha256=") && signed.len() == 7 + 64);
        assert!(verify(b"secret", b"{\"refundId\":20}", Some(&signed)));
        assert!(!verify(b"other", b"{\"refundId\":20}", Some(&signed)));
        assert!(!verify(b"secret", b"{\"refundId\":21}", Some(&signed)));
        assert!(!verify(b"secret", b"{\"refundId\":20}", None));
        assert!(!verify(b"secret", b"{\"refundId\":20}", Some("sha256=zz")));
    }

    #[test]
    fn statuses_map_to_answers() {
        let message = |status: &str| OperatorMessage {
            refund_id: None,
            status: status.to_owned(),
            operator_refund_id: Some("OP-1".into()),
            reason: None,
            amount: None,
            currency: None,
        };
        assert_eq!(
            message("completed").answer(),
            OperatorAnswer::Completed {
                external_id: "OP-1".into()
            }
        );
        assert_eq!(message("processing").answer(), OperatorAnswer::Accepted);
        assert!(matches!(
            message("declined").answer(),
            OperatorAnswer::Declined { .. }
        ));
        assert!(matches!(
            message("lost").answer(),
            OperatorAnswer::Uncertain { .. }
        ));
    }
}
