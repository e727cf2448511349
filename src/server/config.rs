//! What `run` is configured with: the command line fills [`Config`], tests build it directly.

use std::time::Duration;

use chrono_tz::Tz;

use crate::clock::Clock;
use crate::operators::OperatorsConfig;
use crate::soap::envelope::XmlLimits;
use crate::store::Database;

/// Everything `run` needs; the command line fills it, tests build it directly.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ledger: an SQLite file, or a PostgreSQL URL.
    pub database: Database,
    /// Base URL clients reach us at, for the WSDL's `soap:address`; else the request's Host.
    pub public_url: Option<String>,
    pub timezone: Tz,
    pub clock: Clock,
    pub max_body_bytes: usize,
    pub xml_limits: XmlLimits,
    pub max_connections: usize,
    /// The most bytes of request bodies held at once, over all connections; a body waits (up to
    /// `body_read_timeout`) for its share before it is read, so clients that park unfinished
    /// bodies cannot pin more memory than this.
    pub body_budget_bytes: usize,
    /// The most requests from one client address reading a body before their caller is known
    /// (SOAP and the JSON gate without a valid API key header); more wait for a slot, so one
    /// address cannot take the whole body budget.
    pub max_anonymous_bodies_per_address: usize,
    /// The part of the body budget that bodies whose caller is not known yet may hold, so that
    /// callers known from their headers (an API key) always find room.
    pub anonymous_body_budget_bytes: usize,
    /// The most open connections from one client address on which no caller has
    /// authenticated yet; more are closed as they are accepted.
    pub max_unauthenticated_connections_per_address: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Payment operators for confirmed automatic refunds (default: the sandbox for all).
    pub operators: OperatorsConfig,
    /// Maker-checker: confirmRefund refuses (faultCode 4021) when the confirming user or key is
    /// the one that added the refund.
    pub require_second_approver: bool,
    /// How long idempotency keys are kept.
    pub idempotency_ttl: Duration,
    /// How long checked credentials are trusted before the ledger is read again (the longest a
    /// revoked key or changed password keeps working).
    pub credentials_ttl: Duration,
    /// Whether this instance runs the outbox worker. Off, confirmed automatic refunds wait in
    /// the outbox (fixture tests use this to keep `Processing` refunds still).
    pub run_outbox: bool,
    /// How refund events reach the shop's webhook endpoints.
    pub webhooks: crate::webhooks::WebhookConfig,
    /// `/metrics` answers only requests with `Authorization: Bearer {token}`; without a token it
    /// is off (404): refund counts and the outbox depth are the shop's business.
    pub metrics_token: Option<MetricsToken>,
}

/// The token a scraper sends for `/metrics`; never printed.
#[derive(Clone)]
pub struct MetricsToken(pub String);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(…)")
    }
}

impl Config {
    pub fn new(database: Database) -> Config {
        Config {
            database,
            public_url: None,
            timezone: chrono_tz::Europe::Warsaw,
            clock: Clock::System,
            max_body_bytes: 1024 * 1024,
            xml_limits: XmlLimits::default(),
            max_connections: 8192,
            body_budget_bytes: 64 * 1024 * 1024,
            max_anonymous_bodies_per_address: 16,
            anonymous_body_budget_bytes: 32 * 1024 * 1024,
            max_unauthenticated_connections_per_address: 256,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            operators: OperatorsConfig::default(),
            run_outbox: true,
            webhooks: crate::webhooks::WebhookConfig::default(),
            metrics_token: None,
            require_second_approver: false,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            credentials_ttl: Duration::from_secs(1),
        }
    }
}
