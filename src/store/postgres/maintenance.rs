//! What the command line does to a PostgreSQL ledger: import, users and keys, the audit trail,
//! the outbox listing. Each call is one transaction, safe beside running instances. Backups
//! are PostgreSQL's job.

use std::path::Path;

use ::postgres::{Client, Statement, Transaction};
use anyhow::{Context as _, bail};

use super::connection::{config, connect, migrate};
use super::ledger::{api_key_from_row, audit_entry_from_row, job_from_row, job_select};
use crate::clock::Timestamp;
use crate::refunds::audit::ChainedEntry;
use crate::refunds::events::EventType;
use crate::refunds::types::{AdminUser, ApiKey, ApiUser, MovementId, RefundJob, Scopes};
use crate::shop::ShopData;
use crate::store::{
    DeliveryInfo, ImportSummary, Maintenance, StoredClaim, WebhookInfo, check_refunded_claim,
};

pub const UPSERT_PAYMENT_FORM: &str = "INSERT INTO payment_forms (id, name) VALUES ($1, $2) \
     ON CONFLICT (id) DO UPDATE SET name = excluded.name";
pub const UPSERT_ORDER: &str = "INSERT INTO orders (id, currency, fulfilled) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO UPDATE SET currency = excluded.currency, fulfilled = excluded.fulfilled";
pub const CLAIM_PAYMENT_ID: &str = "INSERT INTO movements (id, kind) VALUES ($1, 'payment') \
     ON CONFLICT (id) DO NOTHING";
pub const MOVEMENT_KIND: &str = "SELECT kind FROM movements WHERE id = $1";
pub const UPSERT_PAYMENT: &str = "INSERT INTO payments (id, order_id, amount_minor, currency, \
     payment_form_id, payment_system, auto_refund, external_transaction_id, paid_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (id) DO UPDATE SET order_id = excluded.order_id, \
         amount_minor = excluded.amount_minor, currency = excluded.currency, \
         payment_form_id = excluded.payment_form_id, payment_system = excluded.payment_system, \
         auto_refund = excluded.auto_refund, \
         external_transaction_id = excluded.external_transaction_id, paid_at = excluded.paid_at";
/// Imported payments bring their own ids: the shared sequence moves past the highest, so a
/// refund never draws an id a payment has (only ever forward).
pub const ADVANCE_MOVEMENT_IDS: &str = "SELECT setval('movement_ids', max(id)) FROM movements \
     HAVING max(id) > coalesce(pg_sequence_last_value('movement_ids'), 0)";
pub const ORDER_CURRENCY: &str = "SELECT currency FROM orders WHERE id = $1";
pub const UPSERT_RETURN: &str = "INSERT INTO returns (id, order_id, value_minor, currency) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET order_id = excluded.order_id, \
     value_minor = excluded.value_minor, currency = excluded.currency";
pub const UPSERT_RMA: &str = "INSERT INTO rmas (id, order_id, value_minor, currency) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET order_id = excluded.order_id, \
     value_minor = excluded.value_minor, currency = excluded.currency";
/// A stored return or claim, locked as a refund's write locks it, so that no refund lands
/// between this check and the upsert.
pub const STORED_RETURN: &str = "SELECT order_id, currency, refunded_minor, \
     EXISTS (SELECT 1 FROM refunds WHERE source_type = 'return' AND source_id = $1) \
     FROM returns WHERE id = $1 FOR UPDATE";
pub const STORED_RMA: &str = "SELECT order_id, currency, refunded_minor, \
     EXISTS (SELECT 1 FROM refunds WHERE source_type = 'rma' AND source_id = $1) \
     FROM rmas WHERE id = $1 FOR UPDATE";
pub const PUT_API_USER: &str = "INSERT INTO api_users (login, password_sha1, scopes, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (login) DO UPDATE SET \
     password_sha1 = excluded.password_sha1, scopes = excluded.scopes";
pub const ORDER_COUNT: &str = "SELECT count(*) FROM orders";
pub const API_KEY_NAME_TAKEN: &str = "SELECT 1 FROM api_keys WHERE name = $1";
pub const CREATE_API_KEY: &str =
    "INSERT INTO api_keys (name, key_sha256, scopes, created_at) VALUES ($1, $2, $3, $4)";
pub const API_KEYS: &str =
    "SELECT name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at, name";
pub const REVOKE_API_KEY: &str =
    "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL";
pub const JOBS: &str = concat!(
    job_select!(),
    " WHERE $1 OR o.state <> 'done' ORDER BY o.refund_id"
);
pub const CHAINED_AUDIT: &str = "SELECT seq, at, actor, channel, operation, refund_id, \
     status_before, status_after, amount_before, amount_after, currency, request_id, prev_hash, \
     hash FROM audit_log WHERE seq IS NOT NULL AND ($1::bigint IS NULL OR refund_id = $1) \
     ORDER BY seq";
pub const UNSEALED_AUDIT_COUNT: &str = "SELECT count(*) FROM audit_log \
     WHERE seq IS NULL AND ($1::bigint IS NULL OR refund_id = $1)";

pub const PUT_ADMIN_USER: &str = "INSERT INTO admin_users (login, password_hash, scopes, \
     updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (login) DO UPDATE SET \
     password_hash = excluded.password_hash, scopes = excluded.scopes, \
     updated_at = excluded.updated_at";
pub const END_ADMIN_SESSIONS: &str = "DELETE FROM admin_sessions WHERE login = $1";
pub const ADD_WEBHOOK: &str = "INSERT INTO webhook_endpoints (url, events, secret, created_ms) \
     VALUES ($1, $2, $3, $4) RETURNING id";
pub const WEBHOOKS: &str = "SELECT e.id, e.url, e.events, e.enabled, e.disabled_reason, \
     e.created_ms, e.last_success_ms, (SELECT count(*) FROM webhook_deliveries d \
     WHERE d.endpoint_id = e.id AND d.state = 'pending') FROM webhook_endpoints e ORDER BY e.id";
pub const REMOVE_WEBHOOK_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE endpoint_id = $1";
pub const REMOVE_WEBHOOK: &str = "DELETE FROM webhook_endpoints WHERE id = $1";
pub const WEBHOOK_DELIVERIES: &str = "SELECT d.id, d.endpoint_id, v.event_id, v.type, \
     d.refund_id, d.state, d.attempts, d.next_attempt_ms, d.last_status, d.last_error, \
     d.delivered_ms FROM webhook_deliveries d JOIN webhook_events v ON v.seq = d.event_seq \
     WHERE ($1::bigint IS NULL OR d.endpoint_id = $1) \
       AND (NOT $2 OR d.state = 'failed' OR d.last_error IS NOT NULL) \
     ORDER BY d.id DESC LIMIT $3";
pub const REDELIVER: &str = "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, \
     next_attempt_ms = $2, created_ms = $2, last_status = NULL, last_error = NULL, \
     delivered_ms = NULL WHERE event_seq = (SELECT seq FROM webhook_events WHERE event_id = $1)";

/// Every statement of this file.
pub const STATEMENTS: &[&str] = &[
    UPSERT_PAYMENT_FORM,
    UPSERT_ORDER,
    CLAIM_PAYMENT_ID,
    MOVEMENT_KIND,
    UPSERT_PAYMENT,
    ADVANCE_MOVEMENT_IDS,
    ORDER_CURRENCY,
    UPSERT_RETURN,
    UPSERT_RMA,
    STORED_RETURN,
    STORED_RMA,
    PUT_API_USER,
    ORDER_COUNT,
    API_KEY_NAME_TAKEN,
    CREATE_API_KEY,
    API_KEYS,
    REVOKE_API_KEY,
    JOBS,
    CHAINED_AUDIT,
    UNSEALED_AUDIT_COUNT,
    PUT_ADMIN_USER,
    END_ADMIN_SESSIONS,
    ADD_WEBHOOK,
    WEBHOOKS,
    REMOVE_WEBHOOK_DELIVERIES,
    REMOVE_WEBHOOK,
    WEBHOOK_DELIVERIES,
    REDELIVER,
];

/// The statements an import runs per row, prepared once per import: `execute` with SQL text
/// prepares the statement again on every call, a second round trip per row.
struct ImportStatements {
    upsert_payment_form: Statement,
    upsert_order: Statement,
    claim_payment_id: Statement,
    movement_kind: Statement,
    upsert_payment: Statement,
    order_currency: Statement,
    upsert_return: Statement,
    upsert_rma: Statement,
    stored_return: Statement,
    stored_rma: Statement,
}

impl ImportStatements {
    fn prepare(transaction: &mut Transaction) -> anyhow::Result<ImportStatements> {
        let mut prepare = |sql| {
            transaction
                .prepare(sql)
                .context("preparing the import's statements")
        };
        Ok(ImportStatements {
            upsert_payment_form: prepare(UPSERT_PAYMENT_FORM)?,
            upsert_order: prepare(UPSERT_ORDER)?,
            claim_payment_id: prepare(CLAIM_PAYMENT_ID)?,
            movement_kind: prepare(MOVEMENT_KIND)?,
            upsert_payment: prepare(UPSERT_PAYMENT)?,
            order_currency: prepare(ORDER_CURRENCY)?,
            upsert_return: prepare(UPSERT_RETURN)?,
            upsert_rma: prepare(UPSERT_RMA)?,
            stored_return: prepare(STORED_RETURN)?,
            stored_rma: prepare(STORED_RMA)?,
        })
    }
}

/// The command line's session with a PostgreSQL ledger.
pub struct PostgresMaintenance {
    client: Client,
}

impl PostgresMaintenance {
    pub fn open(url: &str) -> anyhow::Result<PostgresMaintenance> {
        let mut client = connect(&config(url)?)?;
        migrate(&mut client)?;
        Ok(PostgresMaintenance { client })
    }
}

impl Maintenance for PostgresMaintenance {
    fn import_shop(&mut self, shop: &ShopData) -> anyhow::Result<ImportSummary> {
        let mut transaction = self.client.transaction()?;
        let statements = ImportStatements::prepare(&mut transaction)?;
        for (index, form) in shop.payment_forms.iter().enumerate() {
            transaction
                .execute(
                    &statements.upsert_payment_form,
                    &[&form.payment_form_id, &form.name],
                )
                .with_context(|| format!("paymentForms[{index}]"))?;
        }
        let mut payments = 0;
        for (order_index, order) in shop.orders.iter().enumerate() {
            let at = || format!("orders[{order_index}] (orderId {})", order.order_id);
            transaction
                .execute(
                    &statements.upsert_order,
                    &[&order.order_id, &order.currency.code(), &order.fulfilled],
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
                    .execute(&statements.claim_payment_id, &[&payment.payment_id])
                    .with_context(at)?;
                let kind: String = transaction
                    .query_one(&statements.movement_kind, &[&payment.payment_id])
                    .with_context(at)?
                    .get(0);
                if kind != "payment" {
                    bail!("{}: paymentId is already the id of a refund", at());
                }
                transaction
                    .execute(
                        &statements.upsert_payment,
                        &[
                            &payment.payment_id,
                            &order.order_id,
                            &payment.amount.minor,
                            &payment.amount.currency.code(),
                            &payment.payment_form_id,
                            &payment.payment_system,
                            &payment.auto_refund,
                            &payment.external_transaction_id,
                            &payment.paid_at,
                        ],
                    )
                    .with_context(at)?;
                payments += 1;
            }
        }
        for (stored_claim, statement, field, claims) in [
            (
                &statements.stored_return,
                &statements.upsert_return,
                "returns",
                &shop.returns,
            ),
            (
                &statements.stored_rma,
                &statements.upsert_rma,
                "rmas",
                &shop.rmas,
            ),
        ] {
            for (index, claim) in claims.iter().enumerate() {
                let at = || format!("{field}[{index}] (id {})", claim.id);
                let order_currency: Option<String> = transaction
                    .query_opt(&statements.order_currency, &[&claim.order_id])
                    .with_context(at)?
                    .map(|row| row.get(0));
                match order_currency {
                    None => bail!("{}: orderId {} is not a known order", at(), claim.order_id),
                    Some(code) if code != claim.value.currency.code() => bail!(
                        "{}: currency {} differs from the order's currency {code}",
                        at(),
                        claim.value.currency
                    ),
                    Some(_) => {}
                }
                let stored = transaction
                    .query_opt(stored_claim, &[&claim.id])
                    .with_context(at)?
                    .map(|row| StoredClaim {
                        order_id: row.get(0),
                        currency: row.get(1),
                        refunded_minor: row.get(2),
                        has_refunds: row.get(3),
                    });
                check_refunded_claim(stored, claim)
                    .map_err(|why| anyhow::anyhow!("{}: {why}", at()))?;
                transaction
                    .execute(
                        statement,
                        &[
                            &claim.id,
                            &claim.order_id,
                            &claim.value.minor,
                            &claim.value.currency.code(),
                        ],
                    )
                    .with_context(at)?;
            }
        }
        transaction
            .query(ADVANCE_MOVEMENT_IDS, &[])
            .context("moving the id sequence past the imported payments")?;
        transaction.commit().context("committing the import")?;
        Ok(ImportSummary {
            payment_forms: shop.payment_forms.len(),
            orders: shop.orders.len(),
            payments,
            returns: shop.returns.len(),
            rmas: shop.rmas.len(),
        })
    }

    fn put_api_user(&mut self, user: &ApiUser, now: Timestamp) -> anyhow::Result<()> {
        self.client
            .execute(
                PUT_API_USER,
                &[
                    &user.login,
                    &user.password_sha1_hex,
                    &user.scopes.to_list(),
                    &now,
                ],
            )
            .context("saving the API user")?;
        Ok(())
    }

    fn create_api_key(
        &mut self,
        name: &str,
        key_sha256: &str,
        scopes: Scopes,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let mut transaction = self.client.transaction()?;
        if transaction
            .query_opt(API_KEY_NAME_TAKEN, &[&name])?
            .is_some()
        {
            bail!("an API key named '{name}' already exists (revoked keys keep their names)");
        }
        transaction
            .execute(
                CREATE_API_KEY,
                &[&name, &key_sha256, &scopes.to_list(), &now],
            )
            .context("saving the API key")?;
        transaction.commit().context("saving the API key")?;
        Ok(())
    }

    fn api_keys(&mut self) -> anyhow::Result<Vec<ApiKey>> {
        self.client
            .query(API_KEYS, &[])?
            .iter()
            .map(api_key_from_row)
            .collect()
    }

    fn revoke_api_key(&mut self, name: &str, now: Timestamp) -> anyhow::Result<bool> {
        Ok(self.client.execute(REVOKE_API_KEY, &[&name, &now])? == 1)
    }

    /// The chained entries and the count of those not chained yet, in one snapshot.
    fn audit_entries(
        &mut self,
        refund_id: Option<MovementId>,
    ) -> anyhow::Result<(Vec<ChainedEntry>, u64)> {
        let mut transaction = self
            .client
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let entries = transaction
            .query(CHAINED_AUDIT, &[&refund_id])?
            .iter()
            .map(|row| {
                Ok(ChainedEntry {
                    seq: row.try_get(0)?,
                    entry: audit_entry_from_row(row, 1)?,
                    prev_hash: row.try_get(12)?,
                    hash: row.try_get(13)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let unsealed: i64 = transaction
            .query_one(UNSEALED_AUDIT_COUNT, &[&refund_id])?
            .try_get(0)?;
        transaction.rollback()?;
        Ok((entries, u64::try_from(unsealed).context("negative count")?))
    }

    fn backup(&mut self, _target: &Path) -> anyhow::Result<()> {
        bail!(
            "backups of a PostgreSQL ledger are PostgreSQL's job: use pg_dump for a logical copy, \
             or base backups with WAL archiving (pg_basebackup) for point-in-time recovery"
        )
    }

    fn jobs(&mut self, include_done: bool) -> anyhow::Result<Vec<RefundJob>> {
        self.client
            .query(JOBS, &[&include_done])?
            .iter()
            .map(job_from_row)
            .collect()
    }

    fn is_empty(&mut self) -> anyhow::Result<bool> {
        let orders: i64 = self.client.query_one(ORDER_COUNT, &[])?.try_get(0)?;
        Ok(orders == 0)
    }

    /// Upserts the user and ends its sessions in one transaction: a replaced password or scope
    /// list takes effect at once.
    fn put_admin_user(&mut self, user: &AdminUser, now: Timestamp) -> anyhow::Result<()> {
        let mut transaction = self.client.transaction()?;
        transaction
            .execute(
                PUT_ADMIN_USER,
                &[
                    &user.login,
                    &user.password_hash,
                    &user.scopes.to_list(),
                    &now,
                ],
            )
            .context("saving the panel user")?;
        transaction
            .execute(END_ADMIN_SESSIONS, &[&user.login])
            .context("ending the panel user's sessions")?;
        transaction.commit()?;
        Ok(())
    }

    fn add_webhook(
        &mut self,
        url: &str,
        events: &[EventType],
        secret: &str,
        now_ms: i64,
    ) -> anyhow::Result<i64> {
        let events: Vec<&str> = events.iter().map(|kind| kind.as_str()).collect();
        Ok(self
            .client
            .query_one(ADD_WEBHOOK, &[&url, &events.join(","), &secret, &now_ms])
            .context("saving the webhook endpoint")?
            .try_get(0)?)
    }

    fn webhooks(&mut self) -> anyhow::Result<Vec<WebhookInfo>> {
        self.client
            .query(WEBHOOKS, &[])?
            .iter()
            .map(|row| {
                Ok(WebhookInfo {
                    id: row.try_get(0)?,
                    url: row.try_get(1)?,
                    events: row.try_get(2)?,
                    enabled: row.try_get(3)?,
                    disabled_reason: row.try_get(4)?,
                    created_ms: row.try_get(5)?,
                    last_success_ms: row.try_get(6)?,
                    pending: row.try_get(7)?,
                })
            })
            .collect()
    }

    fn remove_webhook(&mut self, id: i64) -> anyhow::Result<bool> {
        let mut transaction = self.client.transaction()?;
        transaction.execute(REMOVE_WEBHOOK_DELIVERIES, &[&id])?;
        let removed = transaction.execute(REMOVE_WEBHOOK, &[&id])?;
        transaction.commit()?;
        Ok(removed == 1)
    }

    fn webhook_deliveries(
        &mut self,
        endpoint: Option<i64>,
        failed_only: bool,
        limit: u32,
    ) -> anyhow::Result<Vec<DeliveryInfo>> {
        self.client
            .query(
                WEBHOOK_DELIVERIES,
                &[&endpoint, &failed_only, &i64::from(limit)],
            )?
            .iter()
            .map(|row| {
                let attempts: i64 = row.try_get(6)?;
                let status: Option<i64> = row.try_get(8)?;
                Ok(DeliveryInfo {
                    id: row.try_get(0)?,
                    endpoint_id: row.try_get(1)?,
                    event_id: row.try_get(2)?,
                    event_type: row.try_get(3)?,
                    refund_id: row.try_get(4)?,
                    state: row.try_get(5)?,
                    attempts: u32::try_from(attempts).context("attempts out of range")?,
                    next_attempt_ms: row.try_get(7)?,
                    last_status: status.and_then(|status| u16::try_from(status).ok()),
                    last_error: row.try_get(9)?,
                    delivered_ms: row.try_get(10)?,
                })
            })
            .collect()
    }

    fn redeliver(&mut self, event_id: &str, now_ms: i64) -> anyhow::Result<usize> {
        let queued = self.client.execute(REDELIVER, &[&event_id, &now_ms])?;
        Ok(usize::try_from(queued)?)
    }
}
