//! What the command line does to an SQLite ledger: import, users and keys, the audit trail,
//! the outbox listing, backups.

use std::path::Path;

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::connection::{migrate, open_writer};
use super::ledger::{AUDIT_COLUMNS, JOB_COLUMNS, JOB_FROM, chained_from_row, job_from_row};
use crate::clock::Timestamp;
use crate::refunds::audit::ChainedEntry;
use crate::refunds::events::EventType;
use crate::refunds::types::{AdminUser, ApiKey, ApiUser, MovementId, RefundJob, Scopes};
use crate::shop::ShopData;
use crate::store::{DeliveryInfo, ImportSummary, Maintenance, WebhookInfo};

/// The command line's connection to an SQLite ledger.
pub struct SqliteMaintenance {
    connection: Connection,
}

impl SqliteMaintenance {
    pub fn open(path: &Path) -> anyhow::Result<SqliteMaintenance> {
        let mut connection = open_writer(path)?;
        migrate(&mut connection)?;
        Ok(SqliteMaintenance { connection })
    }
}

impl Maintenance for SqliteMaintenance {
    fn import_shop(&mut self, shop: &ShopData) -> anyhow::Result<ImportSummary> {
        import_shop(&mut self.connection, shop)
    }

    fn put_api_user(&mut self, user: &ApiUser, now: Timestamp) -> anyhow::Result<()> {
        put_api_user(&mut self.connection, user, now)
    }

    fn put_admin_user(&mut self, user: &AdminUser, now: Timestamp) -> anyhow::Result<()> {
        put_admin_user(&mut self.connection, user, now)
    }

    fn create_api_key(
        &mut self,
        name: &str,
        key_sha256: &str,
        scopes: Scopes,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        create_api_key(&mut self.connection, name, key_sha256, scopes, now)
    }

    fn api_keys(&mut self) -> anyhow::Result<Vec<ApiKey>> {
        api_keys(&mut self.connection)
    }

    fn revoke_api_key(&mut self, name: &str, now: Timestamp) -> anyhow::Result<bool> {
        revoke_api_key(&mut self.connection, name, now)
    }

    /// Every entry is chained in its own transaction here, so none is ever pending.
    fn audit_entries(
        &mut self,
        refund_id: Option<MovementId>,
    ) -> anyhow::Result<(Vec<ChainedEntry>, u64)> {
        Ok((audit_entries(&mut self.connection, refund_id)?, 0))
    }

    /// `VACUUM INTO`: a consistent copy, safe while the service runs.
    fn backup(&mut self, target: &Path) -> anyhow::Result<()> {
        backup(&mut self.connection, target)
    }

    fn jobs(&mut self, include_done: bool) -> anyhow::Result<Vec<RefundJob>> {
        jobs(&mut self.connection, include_done)
    }

    fn is_empty(&mut self) -> anyhow::Result<bool> {
        is_empty(&mut self.connection)
    }

    fn add_webhook(
        &mut self,
        url: &str,
        events: &[EventType],
        secret: &str,
        now_ms: i64,
    ) -> anyhow::Result<i64> {
        let events: Vec<&str> = events.iter().map(|kind| kind.as_str()).collect();
        self.connection
            .execute(
                "INSERT INTO webhook_endpoints (url, events, secret, created_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![url, events.join(","), secret, now_ms],
            )
            .context("saving the webhook endpoint")?;
        Ok(self.connection.last_insert_rowid())
    }

    fn webhooks(&mut self) -> anyhow::Result<Vec<WebhookInfo>> {
        let mut statement = self.connection.prepare(
            "SELECT e.id, e.url, e.events, e.enabled, e.disabled_reason, e.created_ms,
                 e.last_success_ms,
                 (SELECT count(*) FROM webhook_deliveries d
                  WHERE d.endpoint_id = e.id AND d.state = 'pending')
             FROM webhook_endpoints e ORDER BY e.id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(WebhookInfo {
                id: row.get(0)?,
                url: row.get(1)?,
                events: row.get(2)?,
                enabled: row.get(3)?,
                disabled_reason: row.get(4)?,
                created_ms: row.get(5)?,
                last_success_ms: row.get(6)?,
                pending: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn remove_webhook(&mut self, id: i64) -> anyhow::Result<bool> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        transaction.execute(
            "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1",
            [id],
        )?;
        let removed = transaction.execute("DELETE FROM webhook_endpoints WHERE id = ?1", [id])?;
        transaction.commit()?;
        Ok(removed == 1)
    }

    fn webhook_deliveries(
        &mut self,
        endpoint: Option<i64>,
        failed_only: bool,
        limit: u32,
    ) -> anyhow::Result<Vec<DeliveryInfo>> {
        let mut statement = self.connection.prepare(
            "SELECT d.id, d.endpoint_id, v.event_id, v.type, d.refund_id, d.state, d.attempts,
                 d.next_attempt_ms, d.last_status, d.last_error, d.delivered_ms
             FROM webhook_deliveries d JOIN webhook_events v ON v.seq = d.event_seq
             WHERE (?1 IS NULL OR d.endpoint_id = ?1)
               AND (NOT ?2 OR d.state = 'failed' OR d.last_error IS NOT NULL)
             ORDER BY d.id DESC LIMIT ?3",
        )?;
        let rows = statement.query_map(params![endpoint, failed_only, limit], |row| {
            Ok(DeliveryInfo {
                id: row.get(0)?,
                endpoint_id: row.get(1)?,
                event_id: row.get(2)?,
                event_type: row.get(3)?,
                refund_id: row.get(4)?,
                state: row.get(5)?,
                attempts: row.get(6)?,
                next_attempt_ms: row.get(7)?,
                last_status: row.get(8)?,
                last_error: row.get(9)?,
                delivered_ms: row.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn redeliver(&mut self, event_id: &str, now_ms: i64) -> anyhow::Result<usize> {
        Ok(self.connection.execute(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_ms = ?2,
                 created_ms = ?2, last_status = NULL, last_error = NULL, delivered_ms = NULL
             WHERE event_seq = (SELECT seq FROM webhook_events WHERE event_id = ?1)",
            params![event_id, now_ms],
        )?)
    }
}

pub fn import_shop(connection: &mut Connection, shop: &ShopData) -> anyhow::Result<ImportSummary> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (index, form) in shop.payment_forms.iter().enumerate() {
        transaction
            .execute(
                "INSERT INTO payment_forms (id, name) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                params![form.payment_form_id, form.name],
            )
            .with_context(|| format!("paymentForms[{index}]"))?;
    }
    let mut payments = 0;
    for (order_index, order) in shop.orders.iter().enumerate() {
        let at = || format!("orders[{order_index}] (orderId {})", order.order_id);
        transaction
            .execute(
                "INSERT INTO orders (id, currency, fulfilled) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET currency = excluded.currency,
                     fulfilled = excluded.fulfilled",
                params![order.order_id, order.currency.code(), order.fulfilled],
            )
            .with_context(at)?;
        for (payment_index, payment) in order.payments.iter().enumerate() {
            let at = || {
                format!(
                    "orders[{order_index}].payments[{payment_index}] (paymentId {})",
                    payment.payment_id
                )
            };
            transaction
                .execute(
                    "INSERT INTO movements (id, kind) VALUES (?1, 'payment')
                     ON CONFLICT (id) DO NOTHING",
                    [payment.payment_id],
                )
                .with_context(at)?;
            let kind: String = transaction
                .query_row(
                    "SELECT kind FROM movements WHERE id = ?1",
                    [payment.payment_id],
                    |r| r.get(0),
                )
                .with_context(at)?;
            if kind != "payment" {
                bail!("{}: paymentId is already the id of a refund", at());
            }
            transaction
                .execute(
                    "INSERT INTO payments (id, order_id, amount_minor, currency, payment_form_id,
                         payment_system, auto_refund, external_transaction_id, paid_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (id) DO UPDATE SET order_id = excluded.order_id,
                         amount_minor = excluded.amount_minor, currency = excluded.currency,
                         payment_form_id = excluded.payment_form_id,
                         payment_system = excluded.payment_system,
                         auto_refund = excluded.auto_refund,
                         external_transaction_id = excluded.external_transaction_id,
                         paid_at = excluded.paid_at",
                    params![
                        payment.payment_id,
                        order.order_id,
                        payment.amount.minor,
                        payment.amount.currency.code(),
                        payment.payment_form_id,
                        payment.payment_system,
                        payment.auto_refund,
                        payment.external_transaction_id,
                        payment.paid_at,
                    ],
                )
                .with_context(at)?;
            payments += 1;
        }
    }
    for (table, field, claims) in [
        ("returns", "returns", &shop.returns),
        ("rmas", "rmas", &shop.rmas),
    ] {
        for (index, claim) in claims.iter().enumerate() {
            let at = || format!("{field}[{index}] (id {})", claim.id);
            let order_currency: Option<String> = transaction
                .query_row(
                    "SELECT currency FROM orders WHERE id = ?1",
                    [claim.order_id],
                    |r| r.get(0),
                )
                .optional()
                .with_context(at)?;
            match order_currency {
                None => bail!("{}: orderId {} is not a known order", at(), claim.order_id),
                Some(code) if code != claim.value.currency.code() => bail!(
                    "{}: currency {} differs from the order's currency {code}",
                    at(),
                    claim.value.currency
                ),
                Some(_) => {}
            }
            check_refunded_claim(&transaction, table, claim)
                .map_err(|why| anyhow::anyhow!("{}: {why}", at()))?;
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {table} (id, order_id, value_minor, currency)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (id) DO UPDATE SET order_id = excluded.order_id,
                             value_minor = excluded.value_minor, currency = excluded.currency"
                    ),
                    params![
                        claim.id,
                        claim.order_id,
                        claim.value.minor,
                        claim.value.currency.code()
                    ],
                )
                .with_context(at)?;
        }
    }
    transaction.commit().context("committing the import")?;
    Ok(ImportSummary {
        payment_forms: shop.payment_forms.len(),
        orders: shop.orders.len(),
        payments,
        returns: shop.returns.len(),
        rmas: shop.rmas.len(),
    })
}

/// What the ledger holds of `claim` (see [`crate::store::check_refunded_claim`]; the triggers of
/// migration 0011 and the `CHECK` constraints refuse the same in their own words).
fn check_refunded_claim(
    connection: &Connection,
    table: &str,
    claim: &crate::shop::ShopClaim,
) -> anyhow::Result<()> {
    let source_type = if table == "returns" { "return" } else { "rma" };
    let stored = connection
        .query_row(
            &format!(
                "SELECT order_id, currency, refunded_minor,
                        EXISTS (SELECT 1 FROM refunds WHERE source_type = ?2 AND source_id = ?1)
                 FROM {table} WHERE id = ?1"
            ),
            params![claim.id, source_type],
            |row| {
                Ok(crate::store::StoredClaim {
                    order_id: row.get(0)?,
                    currency: row.get(1)?,
                    refunded_minor: row.get(2)?,
                    has_refunds: row.get(3)?,
                })
            },
        )
        .optional()?;
    crate::store::check_refunded_claim(stored, claim)
}

pub fn put_api_user(
    connection: &mut Connection,
    user: &ApiUser,
    now: Timestamp,
) -> anyhow::Result<()> {
    connection
        .execute(
            "INSERT INTO api_users (login, password_sha1, scopes, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (login) DO UPDATE SET password_sha1 = excluded.password_sha1,
                 scopes = excluded.scopes",
            params![user.login, user.password_sha1_hex, user.scopes.to_list(), now],
        )
        .context("saving the API user")?;
    Ok(())
}

pub fn is_empty(connection: &mut Connection) -> anyhow::Result<bool> {
    let orders: i64 = connection.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))?;
    Ok(orders == 0)
}

type ApiKeyRow = anyhow::Result<ApiKey>;

pub(super) fn api_key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    let name: String = row.get(0)?;
    let scopes: String = row.get(1)?;
    let created_at = row.get(2)?;
    let revoked_at = row.get(3)?;
    Ok(Scopes::parse(&scopes)
        .with_context(|| format!("stored scopes '{scopes}' of API key {name}"))
        .map(|scopes| ApiKey {
            name,
            scopes,
            created_at,
            revoked_at,
        }))
}

pub fn create_api_key(
    connection: &mut Connection,
    name: &str,
    key_sha256: &str,
    scopes: Scopes,
    now: Timestamp,
) -> anyhow::Result<()> {
    let taken: bool = connection
        .prepare("SELECT 1 FROM api_keys WHERE name = ?1")?
        .exists([name])?;
    if taken {
        bail!("an API key named '{name}' already exists (revoked keys keep their names)");
    }
    connection
        .execute(
            "INSERT INTO api_keys (name, key_sha256, scopes, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, key_sha256, scopes.to_list(), now],
        )
        .context("saving the API key")?;
    Ok(())
}

pub fn api_keys(connection: &mut Connection) -> anyhow::Result<Vec<ApiKey>> {
    let mut statement = connection.prepare(
        "SELECT name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at, name",
    )?;
    let rows = statement.query_map([], api_key_from_row)?;
    rows.map(|row| row?).collect()
}

pub fn revoke_api_key(
    connection: &mut Connection,
    name: &str,
    now: Timestamp,
) -> anyhow::Result<bool> {
    let changed = connection.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        params![name, now],
    )?;
    Ok(changed == 1)
}

pub fn jobs(connection: &mut Connection, include_done: bool) -> anyhow::Result<Vec<RefundJob>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE ?1 OR o.state <> 'done' ORDER BY o.refund_id"
    );
    let mut statement = connection.prepare(&sql)?;
    let rows = statement.query_map([include_done], job_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn audit_entries(
    connection: &mut Connection,
    refund_id: Option<MovementId>,
) -> anyhow::Result<Vec<ChainedEntry>> {
    let sql = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE ?1 IS NULL OR refund_id = ?1 ORDER BY seq"
    );
    let mut statement = connection.prepare(&sql)?;
    let rows = statement.query_map([refund_id], chained_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn put_admin_user(
    connection: &mut Connection,
    user: &AdminUser,
    now: Timestamp,
) -> anyhow::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction
        .execute(
            "INSERT INTO admin_users (login, password_hash, scopes, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (login) DO UPDATE SET password_hash = excluded.password_hash,
                 scopes = excluded.scopes, updated_at = excluded.updated_at",
            params![user.login, user.password_hash, user.scopes.to_list(), now],
        )
        .context("saving the panel user")?;
    // A replaced password or scope list takes effect at once: the user's sessions end.
    transaction
        .execute("DELETE FROM admin_sessions WHERE login = ?1", [&user.login])
        .context("ending the panel user's sessions")?;
    transaction.commit()?;
    Ok(())
}

pub fn backup(connection: &mut Connection, target: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!target.exists(), "{} already exists", target.display());
    let target = target.to_str().context("the backup path is not UTF-8")?;
    connection
        .execute("VACUUM INTO ?1", [target])
        .context("copying the database")?;
    Ok(())
}
