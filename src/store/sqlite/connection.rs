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

pub fn migrate(connection: &mut Connection) -> anyhow::Result<()> {
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
}
