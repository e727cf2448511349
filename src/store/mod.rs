//! Storage adapters. All SQL of the service lives below this module.
//!
//! The domain owns the storage port (`crate::refunds::ledger`: [`LedgerStore`] runs
//! transactions, `Ledger` is what the rules see inside one, with the concurrency contract every
//! adapter keeps). Two adapters implement it side by side and import the domain, never the
//! reverse:
//!
//! - [`sqlite`], the default: one file, one writer thread committing queued writes together
//!   (group commit), a pool of read-only connections.
//! - [`postgres`]: several gateway instances on one database, with row locks, a shared id
//!   sequence, and audit entries chained by one leader.
//!
//! [`open`] picks the adapter from the `--db` value: a `postgres://` or `postgresql://` URL is
//! PostgreSQL, anything else a path to an SQLite file. [`Maintenance`] is what the command line
//! does beside a running service (import, users, keys, the audit trail, the outbox, backups).
//!
//! Another adapter changes nothing under `refunds/`: it implements [`LedgerStore`] and
//! `Ledger` keeping the contract written on them (choosing, through
//! `LedgerStore::audit_sealing`, whether it chains audit entries in the business transaction or
//! leaves them to a sealer), implements [`Maintenance`], and gets a [`Database`] variant with
//! its arms in [`Database::parse`], [`open`] and [`maintenance`]. The in-memory double the rules
//! are unit-tested over (`refunds::testutil`) is such an implementation of the port.

pub mod postgres;
pub mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::refunds::audit::ChainedEntry;
use crate::refunds::events::EventType;
use crate::refunds::ledger::LedgerStore;
use crate::refunds::types::{AdminUser, ApiKey, ApiUser, MovementId, RefundJob, Scopes};
use crate::shop::{ShopClaim, ShopData};

/// Where the ledger lives, as `--db` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    pub fn parse(value: &str) -> Database {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Database::Postgres(value.to_owned())
        } else {
            Database::Sqlite(PathBuf::from(value))
        }
    }

    /// How to name the database in a log line: the path, or the URL without its password.
    pub fn display_name(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(url) => redacted(url),
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display_name())
    }
}

/// Opens (creating and migrating if needed) the ledger and starts what it runs (SQLite's
/// writer thread, PostgreSQL's connection pool). Blocking: call it off the async threads.
pub fn open(database: &Database) -> anyhow::Result<Arc<dyn LedgerStore>> {
    match database {
        Database::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path)?)),
        Database::Postgres(url) => Ok(Arc::new(postgres::PostgresStore::open(url)?)),
    }
}

/// Opens the ledger for the command line (migrating it if needed).
pub fn maintenance(database: &Database) -> anyhow::Result<Box<dyn Maintenance>> {
    match database {
        Database::Sqlite(path) => Ok(Box::new(sqlite::SqliteMaintenance::open(path)?)),
        Database::Postgres(url) => Ok(Box::new(postgres::PostgresMaintenance::open(url)?)),
    }
}

/// How many of each a shop document held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub payment_forms: usize,
    pub orders: usize,
    pub payments: usize,
    pub returns: usize,
    pub rmas: usize,
}

/// What the command line does to a ledger. Each call is one transaction, safe beside running
/// services.
pub trait Maintenance {
    /// Upserts a shop document in one transaction; nothing is written if any entry fails.
    fn import_shop(&mut self, shop: &ShopData) -> anyhow::Result<ImportSummary>;
    /// Adds or replaces a legacy API user.
    fn put_api_user(&mut self, user: &ApiUser, now: Timestamp) -> anyhow::Result<()>;
    /// Adds or replaces an admin panel user, ending the sessions it had.
    fn put_admin_user(&mut self, user: &AdminUser, now: Timestamp) -> anyhow::Result<()>;
    /// Creates an API key named `name` from the key's SHA-256; fails if the name is taken.
    fn create_api_key(
        &mut self,
        name: &str,
        key_sha256: &str,
        scopes: Scopes,
        now: Timestamp,
    ) -> anyhow::Result<()>;
    fn api_keys(&mut self) -> anyhow::Result<Vec<ApiKey>>;
    /// Revokes the key named `name`; `false` if there is no such live key.
    fn revoke_api_key(&mut self, name: &str, now: Timestamp) -> anyhow::Result<bool>;
    /// The chained audit entries in chain order (or one refund's), and how many entries are
    /// appended but not chained yet (only where a leader chains them after commit).
    fn audit_entries(
        &mut self,
        refund_id: Option<MovementId>,
    ) -> anyhow::Result<(Vec<ChainedEntry>, u64)>;
    /// A consistent copy of the database at `target`, safe while the service runs.
    fn backup(&mut self, target: &Path) -> anyhow::Result<()>;
    /// The outbox: jobs not done yet, or all of them.
    fn jobs(&mut self, include_done: bool) -> anyhow::Result<Vec<RefundJob>>;
    /// Whether the shop has no orders yet (the demo data is loaded only into an empty shop).
    fn is_empty(&mut self) -> anyhow::Result<bool>;

    /// Adds a webhook endpoint; returns its id.
    fn add_webhook(
        &mut self,
        url: &str,
        events: &[EventType],
        secret: &str,
        now_ms: i64,
    ) -> anyhow::Result<i64>;
    fn webhooks(&mut self) -> anyhow::Result<Vec<WebhookInfo>>;
    /// Removes an endpoint and its deliveries; `false` if there is none with that id.
    fn remove_webhook(&mut self, id: i64) -> anyhow::Result<bool>;
    /// Deliveries, newest first (at most `limit`), of one endpoint or all, or only failed ones.
    fn webhook_deliveries(
        &mut self,
        endpoint: Option<i64>,
        failed_only: bool,
        limit: u32,
    ) -> anyhow::Result<Vec<DeliveryInfo>>;
    /// Queues an event's deliveries again, from the start; returns how many.
    fn redeliver(&mut self, event_id: &str, now_ms: i64) -> anyhow::Result<usize>;
}

/// A return or claim as the ledger holds it, read by an import before it upserts one.
pub struct StoredClaim {
    pub order_id: i64,
    pub currency: String,
    pub refunded_minor: i64,
    pub has_refunds: bool,
}

/// Refuses to re-import a return or claim that has refunds onto another order or currency, or
/// below what is refunded from it, in the import's own words (both schemas refuse it too, in
/// theirs). One wording for both adapters.
pub fn check_refunded_claim(stored: Option<StoredClaim>, claim: &ShopClaim) -> anyhow::Result<()> {
    let Some(stored) = stored else {
        return Ok(());
    };
    if stored.has_refunds && stored.order_id != claim.order_id {
        anyhow::bail!(
            "it has refunds, so it stays on order {} (not {})",
            stored.order_id,
            claim.order_id
        );
    }
    if stored.has_refunds && stored.currency != claim.value.currency.code() {
        anyhow::bail!(
            "it has refunds, so it stays in {} (not {})",
            stored.currency,
            claim.value.currency
        );
    }
    if claim.value.minor < stored.refunded_minor {
        let currency = claim.value.currency;
        anyhow::bail!(
            "value {} {currency} is below the {} {currency} already refunded from it",
            claim.value.to_decimal(),
            crate::money::minor_to_decimal(stored.refunded_minor, currency)
        );
    }
    Ok(())
}

/// A webhook endpoint as `webhook list` shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookInfo {
    pub id: i64,
    pub url: String,
    pub events: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_ms: i64,
    pub last_success_ms: Option<i64>,
    pub pending: i64,
}

/// One delivery as `webhook deliveries` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    pub id: i64,
    pub endpoint_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub refund_id: i64,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_ms: Option<i64>,
}

/// A PostgreSQL URL without its password, for logs and messages.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}
