//! Payment operators: where confirmed automatic refunds go. One small trait, [`Operator`], with
//! two connectors: [`sandbox`] (in-process, deterministic, the default) and [`http`] (the
//! documented JSON-over-HTTPS protocol). Which operator refunds which payment is configured per
//! `paymentSystem` in a TOML file (`serve --operators PATH`).

pub mod http;
pub mod sandbox;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::refunds::outbox::{OperatorRouting, RetryPolicy};
use crate::refunds::types::{OperatorAnswer, RefundJob};

pub type AnswerFuture<'a> = Pin<Box<dyn Future<Output = OperatorAnswer> + Send + 'a>>;

/// A payment operator that can send money back.
pub trait Operator: Send + Sync {
    /// Sends the refund, idempotently: the same job sent twice is one refund.
    fn send<'a>(&'a self, job: &'a RefundJob) -> AnswerFuture<'a>;
    /// Asks what became of a refund sent before.
    fn status<'a>(&'a self, job: &'a RefundJob) -> AnswerFuture<'a>;
    /// How long to wait before asking about a refund the operator accepted.
    fn poll_after_ms(&self) -> i64;
    /// Checks an asynchronous callback's signature; operators without callbacks say no.
    fn verify_callback(&self, body: &[u8], signature: Option<&str>) -> bool;
}

/// The configured operators by name, with the routing and retry policy.
pub struct Operators {
    by_name: HashMap<String, Arc<dyn Operator>>,
    pub routing: OperatorRouting,
    pub retry: RetryPolicy,
}

impl Operators {
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Operator>> {
        self.by_name.get(name)
    }
}

/// The operators file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorsConfig {
    /// The operator for payment systems not listed in `payment_systems`.
    #[serde(default = "default_operator")]
    pub default: String,
    /// `paymentSystem` id → operator name.
    #[serde(default)]
    pub payment_systems: HashMap<String, String>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub operators: HashMap<String, OperatorConfig>,
}

fn default_operator() -> String {
    "sandbox".to_owned()
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub base_ms: i64,
    pub cap_ms: i64,
    pub lease_ms: i64,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        let policy = RetryPolicy::default();
        RetryConfig {
            base_ms: policy.base_ms,
            cap_ms: policy.cap_ms,
            lease_ms: policy.lease_ms,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OperatorConfig {
    Sandbox {
        /// How long after it is sent a sandbox refund settles.
        #[serde(default = "sandbox::default_settle_after_ms")]
        settle_after_ms: i64,
    },
    Http {
        /// Base URL: refunds are POSTed to `{url}/refunds`, asked about at `{url}/refunds/{id}`.
        url: String,
        /// The shared HMAC-SHA256 secret, or the name of an environment variable holding it
        /// (`secret_env`).
        #[serde(default)]
        secret: Option<String>,
        #[serde(default)]
        secret_env: Option<String>,
        #[serde(default = "http::default_timeout_ms")]
        timeout_ms: u64,
        #[serde(default = "http::default_poll_after_ms")]
        poll_after_ms: i64,
    },
}

impl Default for OperatorsConfig {
    /// Every refund goes to the sandbox, which settles after two seconds.
    fn default() -> OperatorsConfig {
        OperatorsConfig {
            default: default_operator(),
            payment_systems: HashMap::new(),
            retry: RetryConfig::default(),
            operators: HashMap::from([(
                "sandbox".to_owned(),
                OperatorConfig::Sandbox {
                    settle_after_ms: sandbox::default_settle_after_ms(),
                },
            )]),
        }
    }
}

impl OperatorsConfig {
    pub fn load(path: &Path) -> anyhow::Result<OperatorsConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid operators file", path.display()))
    }

    /// Builds the connectors, checking that every name used is configured.
    pub fn build(&self) -> anyhow::Result<Operators> {
        let mut by_name: HashMap<String, Arc<dyn Operator>> = HashMap::new();
        for (name, config) in &self.operators {
            let operator: Arc<dyn Operator> = match config {
                OperatorConfig::Sandbox { settle_after_ms } => {
                    Arc::new(sandbox::Sandbox::new(*settle_after_ms))
                }
                OperatorConfig::Http {
                    url,
                    secret,
                    secret_env,
                    timeout_ms,
                    poll_after_ms,
                } => {
                    let secret = match (secret, secret_env) {
                        (Some(secret), None) => secret.clone(),
                        (None, Some(variable)) => std::env::var(variable).with_context(|| {
                            format!("operator {name}: environment variable {variable} is not set")
                        })?,
                        _ => bail!("operator {name}: give exactly one of secret and secret_env"),
                    };
                    Arc::new(http::HttpOperator::new(
                        url,
                        secret.into_bytes(),
                        *timeout_ms,
                        *poll_after_ms,
                    )?)
                }
            };
            by_name.insert(name.clone(), operator);
        }
        let mut routing = OperatorRouting::single(&self.default);
        for (system, operator) in &self.payment_systems {
            let system: i64 = system.parse().with_context(|| {
                format!("payment_systems: '{system}' is not a paymentSystem id")
            })?;
            routing.by_payment_system.insert(system, operator.clone());
        }
        for name in
            std::iter::once(&routing.default_operator).chain(routing.by_payment_system.values())
        {
            if !by_name.contains_key(name) {
                bail!("operator '{name}' is used but not configured under [operators.{name}]");
            }
        }
        let retry = RetryPolicy {
            base_ms: self.retry.base_ms,
            cap_ms: self.retry.cap_ms,
            lease_ms: self.retry.lease_ms,
        };
        if retry.base_ms <= 0 || retry.cap_ms < retry.base_ms || retry.lease_ms <= 0 {
            bail!("retry: need 0 < base_ms <= cap_ms and lease_ms > 0");
        }
        Ok(Operators {
            by_name,
            routing,
            retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_operators_file() {
        let config: OperatorsConfig = toml::from_str(
            r#"
            default = "sandbox"
            [payment_systems]
            27 = "payu"
            [retry]
            base_ms = 50
            [operators.sandbox]
            kind = "sandbox"
            settle_after_ms = 10
            [operators.payu]
            kind = "http"
            url = "http://127.0.0.1:9/payu"
            secret = "s3cret"
            "#,
        )
        .unwrap();
        let operators = config.build().unwrap();
        assert_eq!(operators.routing.operator_for(Some(27)), "payu");
        assert_eq!(operators.retry.base_ms, 50);
        assert!(operators.get("payu").is_some());
    }

    #[test]
    fn refuses_a_routing_to_an_unconfigured_operator() {
        let config: OperatorsConfig = toml::from_str("[payment_systems]\n27 = \"nobody\"").unwrap();
        assert!(config.build().is_err());
        assert!(
            toml::from_str::<OperatorsConfig>("[operators.x]\nkind = \"carrier-pigeon\"").is_err()
        );
    }
}
