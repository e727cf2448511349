//! Opening connections, and the embedded migrations.

use std::path::Path;

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

/// Embedded migrations; `PRAGMA user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_ledger.sql"),
    include_str!("migrations/0002_api_keys.sql"),
    include_str!("migrations/0003_outbox.sql"),
    include_str!("migrations/0004_trust.sql"),
    include_str!("migrations/0005_counts.sql"),
    include_str!("migrations/0006_triggers_without_in_lists.sql"),
    include_str!("migrations/0007_outbox_lease.sql"),
    include_str!("migrations/0008_refunds_by_payment.sql"),
    include_str!("migrations/0009_webhooks.sql"),
    include_str!("migrations/0010_ledger_runs.sql"),
    include_str!("migrations/0011_refunded_claims_keep_identity.sql"),
    include_str!("migrations/0012_logins_without_colon.sql"),
    include_str!("migrations/0013_admin.sql"),
    include_str!("migrations/0014_idempotency_caller.sql"),
    include_str!("migrations/0015_refund_checks_without_in_lists.sql"),
];

pub fn open_writer(path: &Path) -> anyhow::Result<Connection> {
    let connection =
        Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -32768;
             PRAGMA journal_size_limit = 67108864;",
        )
        .context("configuring the database connection")?;
    Ok(connection)
}

pub fn open_reader(path: &Path) -> anyhow::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening database {} for reading", path.display()))?;
    connection
        .execute_batch("PRAGMA busy_timeout = 5000;")
        .context("configuring a read connection")?;
    Ok(connection)
}

/// Runs the migrations the database has not had, in one transaction.
///
/// Foreign keys are not enforced while they run, so that a migration can rebuild a table that
/// others reference (drop the old one, rename the new one into its place: 0015) as SQLite's
/// documentation describes; `PRAGMA foreign_key_check` must then find nothing before anything is
/// committed. The setting cannot change inside a transaction, hence around it.
pub fn migrate(connection: &mut Connection) -> anyhow::Result<()> {
    connection
        .pragma_update(None, "foreign_keys", false)
        .context("suspending foreign keys for the migrations")?;
    let migrated = run_migrations(connection);
    let restored = connection
        .pragma_update(None, "foreign_keys", true)
        .context("enforcing foreign keys again after the migrations");
    migrated.and(restored)
}

fn run_migrations(connection: &mut Connection) -> anyhow::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let version = usize::try_from(version).context("negative schema version")?;
    if version > MIGRATIONS.len() {
        bail!(
            "database schema version {version} is newer than this binary knows ({})",
            MIGRATIONS.len()
        );
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        transaction
            .execute_batch(migration)
            .with_context(|| format!("running migration {}", index + 1))?;
        transaction.pragma_update(None, "user_version", (index + 1) as i64)?;
    }
    // Only after a migration ran: the check reads every referencing table, which a start on a
    // current schema must not pay.
    let dangling: Vec<(String, Option<i64>)> = if version == MIGRATIONS.len() {
        Vec::new()
    } else {
        transaction
            .prepare("PRAGMA foreign_key_check")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    if let Some((table, rowid)) = dangling.first() {
        bail!(
            "the migrations would leave {} rows naming missing rows (the first: {table} row {rowid:?})",
            dangling.len()
        );
    }
    transaction.commit().context("committing migrations")?;
    Ok(())
}

/// Runs a statement prepared once per connection.
pub fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::refunds::audit;
    use crate::refunds::ledger::Ledger as _;
    use crate::store::sqlite::ledger::SqliteLedger;
    use crate::store::sqlite::maintenance::audit_entries;

    /// A ledger written by schema 13, when an idempotency key's owner was `principal` and
    /// before the Rust field of the audit entry was renamed `caller`: migration 0014 keeps its
    /// stored answer (found under its caller, so a retry is still replayed) and its audit
    /// chain (the hash covers the values, not the field names, so the hashes written then
    /// still verify; they are pinned here as schema 13 wrote them).
    #[test]
    fn a_schema_13_ledger_keeps_its_idempotent_answers_and_its_audit_chain() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = open_writer(&dir.path().join("schema-13.db")).unwrap();
        for migration in &MIGRATIONS[..13] {
            connection.execute_batch(migration).unwrap();
        }
        connection.pragma_update(None, "user_version", 13).unwrap();
        connection
            .execute_batch(
                "INSERT INTO idempotency_keys (principal, key, request_hash, status,
                     content_type, body, created_at)
                 VALUES ('key:rt', 'retry-1', 'digest', 200, 'application/json', X'7B7D', 0);
                 INSERT INTO audit_log (at, actor, channel, operation, refund_id, status_before,
                     status_after, amount_before, amount_after, currency, request_id,
                     prev_hash, hash)
                 VALUES (1764800000, 'key:rt', 'rest', 'addManualRefund', 10, NULL, 'New',
                     NULL, 5000, 'PLN', 'r-1',
                     '0000000000000000000000000000000000000000000000000000000000000000',
                     '19b812c5cd894ec905ba59880caac033e64507eff79389fa4e9d41abd192a454'),
                    (1764800060, 'panel:clerk', 'admin', 'confirmRefund', 10, 'New',
                     'Completed', 5000, 5000, 'PLN', NULL,
                     '19b812c5cd894ec905ba59880caac033e64507eff79389fa4e9d41abd192a454',
                     'b10e54b084ee61985d6b625de8089514bd085f6b19d9cb6f0ec75b875c69ff5d');",
            )
            .unwrap();

        migrate(&mut connection).unwrap();

        let answer = SqliteLedger {
            connection: &connection,
        }
        .idempotent_answer("key:rt", "retry-1")
        .unwrap()
        .expect("the stored answer is found under its caller");
        assert_eq!(answer.0, "digest");
        assert_eq!(answer.1.body, b"{}");
        let entries = audit_entries(&mut connection, None).unwrap();
        assert_eq!(
            entries
                .iter()
                .map(|chained| chained.entry.caller.as_str())
                .collect::<Vec<_>>(),
            ["key:rt", "panel:clerk"]
        );
        assert_eq!(audit::verify(entries), Ok(2));
    }

    /// A ledger made before the kept counts (schema 4) gets them filled from its refunds, and
    /// the rewritten triggers go on keeping its totals.
    #[test]
    fn the_counts_migration_counts_the_refunds_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = open_writer(&dir.path().join("old.db")).unwrap();
        for migration in &MIGRATIONS[..4] {
            connection.execute_batch(migration).unwrap();
        }
        connection.pragma_update(None, "user_version", 4).unwrap();
        connection
            .execute_batch(
                "INSERT INTO orders (id, currency, fulfilled, paid_minor, refunded_minor)
                 VALUES (1, 'PLN', 0, 0, 0);
                 INSERT INTO movements (id, kind) VALUES (1, 'payment');
                 INSERT INTO payments (id, order_id, amount_minor, currency, payment_form_id,
                     auto_refund, paid_at)
                 VALUES (1, 1, 100000, 'PLN', 2, 1, 0);",
            )
            .unwrap();
        let statuses = ["New", "Canceled", "Processing", "New", "Completed", "New"];
        for (index, status) in statuses.iter().enumerate() {
            let id = 10 + index as i64;
            connection
                .execute(
                    "INSERT INTO movements (id, kind) VALUES (?1, 'refund')",
                    [id],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO refunds (id, order_id, source_type, source_id, method,
                         payment_id, amount_minor, currency, status, created_at, created_by)
                     VALUES (?1, 1, 'order', 1, 'automatic', 1, 100, 'PLN', 'New', 0, 'x')",
                    [id],
                )
                .unwrap();
            if *status != "New" {
                connection
                    .execute(
                        "UPDATE refunds SET status = ?2 WHERE id = ?1",
                        params![id, status],
                    )
                    .unwrap();
            }
        }

        migrate(&mut connection).unwrap();
        let count = |status: &str| -> i64 {
            connection
                .query_row(
                    "SELECT n FROM refund_counts WHERE source_type = 'order' AND status = ?1",
                    [status],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!(
            ["New", "Processing", "Completed", "Failed", "Canceled"].map(count),
            [3, 1, 1, 0, 1]
        );
        let total = || -> i64 {
            connection
                .query_row(
                    "SELECT refunded_minor FROM orders WHERE id = 1",
                    [],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!(total(), 500, "five live refunds of 1.00");
        connection
            .execute("UPDATE refunds SET status = 'Canceled' WHERE id = 10", [])
            .unwrap();
        assert_eq!(total(), 400, "canceling releases the amount");
        assert_eq!((count("New"), count("Canceled")), (2, 2));
    }

    /// Every row of `table`, each column as text, ordered by its first two columns (a key in
    /// every table compared here): what a rebuild must keep.
    fn rows(connection: &Connection, table: &str) -> Vec<Vec<String>> {
        let mut statement = connection
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let columns = statement.column_count();
        statement
            .query_map([], |row| {
                (0..columns)
                    .map(|index| {
                        let value: rusqlite::types::Value = row.get(index)?;
                        Ok(format!("{value:?}"))
                    })
                    .collect()
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The indexes and triggers of the schema, by name, with their SQL.
    fn indexes_and_triggers(connection: &Connection) -> Vec<(String, String)> {
        connection
            .prepare(
                "SELECT name, sql FROM sqlite_master WHERE type IN ('index', 'trigger')
                 AND sql IS NOT NULL ORDER BY name",
            )
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Migration 0015 rebuilds the refunds table of a ledger in use: its refunds, running
    /// totals, counts, outbox jobs and audit chain are the same afterwards, the same indexes and
    /// triggers are there, and the constraints still refuse what they refused (an unknown
    /// status or source type, an over-refund, a missing refund in the outbox).
    #[test]
    fn the_refunds_rebuild_keeps_a_ledger_in_use() {
        use crate::money::{Currency, Money};
        use crate::refunds::audit::{self, AuditEntry};
        use crate::refunds::ledger::{AuditSealing, Ledger as _};
        use crate::refunds::types::{
            ManualDetails, NewRefund, RefundMethod, RefundStatus, SourceRef, SourceType,
        };
        use crate::shop::ShopData;
        use crate::store::sqlite::ledger::SqliteLedger;
        use crate::store::sqlite::maintenance::{audit_entries, import_shop};

        const BEFORE_REBUILD: usize = 14;
        assert!(
            MIGRATIONS[BEFORE_REBUILD].contains("CREATE TABLE refunds_rebuilt"),
            "the rebuild is the migration after the first {BEFORE_REBUILD}"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut connection = open_writer(&dir.path().join("in-use.db")).unwrap();
        for migration in &MIGRATIONS[..BEFORE_REBUILD] {
            connection.execute_batch(migration).unwrap();
        }
        connection
            .pragma_update(None, "user_version", BEFORE_REBUILD as i64)
            .unwrap();
        let shop = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/test-shop.json"),
        )
        .unwrap();
        let shop = ShopData::parse(&shop, chrono_tz::Europe::Warsaw).unwrap();
        import_shop(&mut connection, &shop).unwrap();

        // Refunds in every state, each step audited as the rules audit it.
        let pln = |minor| Money {
            minor,
            currency: Currency::parse("PLN").unwrap(),
        };
        let transaction = connection.transaction().unwrap();
        let mut ledger = SqliteLedger {
            connection: &transaction,
        };
        let audited = |ledger: &mut SqliteLedger<'_>,
                       refund_id,
                       before: Option<RefundStatus>,
                       after: RefundStatus| {
            let entry = AuditEntry {
                at: 1_700_000_000 + refund_id,
                caller: "tester".to_owned(),
                channel: "soap".to_owned(),
                operation: "upgrade-test".to_owned(),
                refund_id,
                status_before: before.map(AuditEntry::status),
                status_after: AuditEntry::status(after),
                amount_before: before.map(|_| 1000),
                amount_after: 1000,
                currency: "PLN".to_owned(),
                request_id: None,
            };
            audit::append(ledger, AuditSealing::InTransaction, &entry).unwrap();
        };
        let automatic = |source: SourceRef| NewRefund {
            order_id: 2001,
            source,
            method: RefundMethod::Automatic { payment_id: 11 },
            amount: pln(1000),
            details: None,
            created_at: 1_700_000_000,
            caller: "tester".to_owned(),
        };
        let order_2001 = SourceRef {
            source_type: SourceType::Order,
            id: 2001,
        };
        let mut ids = Vec::new();
        for _ in 0..4 {
            let id = ledger.reserve_refund(&automatic(order_2001)).unwrap();
            audited(&mut ledger, id, None, RefundStatus::New);
            ids.push(id);
        }
        ledger.confirm(ids[1], RefundStatus::Processing, 1).unwrap();
        ledger.enqueue_job(ids[1], "sandbox", 1).unwrap();
        audited(
            &mut ledger,
            ids[1],
            Some(RefundStatus::New),
            RefundStatus::Processing,
        );
        ledger.cancel(ids[2]).unwrap();
        audited(
            &mut ledger,
            ids[2],
            Some(RefundStatus::New),
            RefundStatus::Canceled,
        );
        ledger.confirm(ids[3], RefundStatus::Processing, 1).unwrap();
        ledger.enqueue_job(ids[3], "sandbox", 1).unwrap();
        ledger
            .settle(
                ids[3],
                &crate::refunds::types::Settlement::Completed {
                    external_id: "SANDBOX-1".to_owned(),
                },
            )
            .unwrap();
        audited(
            &mut ledger,
            ids[3],
            Some(RefundStatus::Processing),
            RefundStatus::Completed,
        );
        let manual = NewRefund {
            order_id: 2002,
            source: SourceRef {
                source_type: SourceType::Return,
                id: 601,
            },
            method: RefundMethod::Manual,
            amount: pln(1000),
            details: Some(ManualDetails {
                payment_form_id: 2,
                payment_system: None,
                account: Some("PL61 1090 1014 0000 0712 1981 2874".to_owned()),
                client_account: None,
            }),
            created_at: 1_700_000_000,
            caller: "tester".to_owned(),
        };
        let manual_id = ledger.reserve_refund(&manual).unwrap();
        audited(&mut ledger, manual_id, None, RefundStatus::New);
        transaction.commit().unwrap();

        let kept = [
            "refunds",
            "orders",
            "payments",
            "returns",
            "rmas",
            "refund_counts",
            "outbox",
            "audit_log",
            "movements",
        ];
        let before: Vec<_> = kept.iter().map(|table| rows(&connection, table)).collect();
        let schema_before = indexes_and_triggers(&connection);
        let chain_before = audit_entries(&mut connection, None).unwrap();
        assert_eq!(audit::verify(chain_before.clone()), Ok(8));

        migrate(&mut connection).unwrap();

        let after: Vec<_> = kept.iter().map(|table| rows(&connection, table)).collect();
        assert_eq!(after, before, "every row is kept");
        assert_eq!(
            indexes_and_triggers(&connection),
            schema_before,
            "the same indexes and triggers, word for word"
        );
        let table_sql: String = connection
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'refunds'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(
            !table_sql.contains(" IN "),
            "no IN list is left in the refunds table's CHECKs: {table_sql}"
        );
        let chain_after = audit_entries(&mut connection, None).unwrap();
        assert_eq!(chain_after, chain_before);
        assert_eq!(audit::verify(chain_after), Ok(8), "audit verify holds");
        let integrity: String = connection
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        let foreign_keys: bool = connection
            .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
            .unwrap();
        assert!(foreign_keys, "foreign keys are enforced again");

        // The constraints still hold on the rebuilt table.
        let refused = |sql: &str| {
            let outcome = connection.execute(sql, []);
            assert!(outcome.is_err(), "accepted: {sql}");
        };
        let id = ids[0];
        refused(&format!(
            "UPDATE refunds SET status = 'Pending' WHERE id = {id}"
        ));
        refused(&format!(
            "UPDATE refunds SET status = 'Processing' WHERE id = {manual_id}"
        ));
        refused(&format!(
            "UPDATE refunds SET amount_minor = 1000000 WHERE id = {id}"
        ));
        refused(&format!(
            "UPDATE refunds SET amount_minor = 0 WHERE id = {id}"
        ));
        refused(&format!(
            "UPDATE refunds SET status = 'New' WHERE id = {}",
            ids[2]
        ));
        refused(&format!("DELETE FROM refunds WHERE id = {id}"));
        refused(
            "INSERT INTO outbox (refund_id, operator, state, next_attempt_ms, created_ms,
                 updated_ms)
             VALUES (999999, 'sandbox', 'send', 0, 0, 0)",
        );
        connection
            .execute_batch("INSERT INTO movements (id, kind) VALUES (991, 'refund');")
            .unwrap();
        refused(
            "INSERT INTO refunds (id, order_id, source_type, source_id, method, payment_id,
                 amount_minor, currency, status, created_at, created_by)
             VALUES (991, 2001, 'claim', 2001, 'automatic', 11, 100, 'PLN', 'New', 0, 'x')",
        );
        // And the triggers still keep the totals: cancelling releases the amount.
        let refunded = |connection: &Connection| -> i64 {
            connection
                .query_row(
                    "SELECT refunded_minor FROM payments WHERE id = 11",
                    [],
                    |row| row.get(0),
                )
                .unwrap()
        };
        let held = refunded(&connection);
        connection
            .execute(
                &format!("UPDATE refunds SET status = 'Canceled' WHERE id = {id}"),
                [],
            )
            .unwrap();
        assert_eq!(refunded(&connection), held - 1000);
    }
}
