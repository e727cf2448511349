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
