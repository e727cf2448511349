//! Group commit: the writer thread's batches, each write in its own savepoint.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context as _, anyhow, bail};
use rusqlite::{Connection, TransactionBehavior};

use super::connection::run_cached;
use super::files::{FilesGuard, IDLE_FILE_CHECK};
use super::ledger::{self, SqliteLedger};
use crate::refunds::ledger::Ledger;

/// How to answer one write of a batch once the batch's commit has succeeded or failed.
pub type Completion = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// One request's write as the writer thread runs it inside a batch's transaction.
pub type BatchedWrite = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// The writer thread's loop: whatever has queued up while the last batch committed goes into
/// the next one, up to `max_batch` writes; while idle, the files are checked once a second.
/// Ends when every sender is gone (closing the ledger cleanly) or when the files were lost.
pub fn run(
    connection: &mut Connection,
    queue: &mpsc::Receiver<BatchedWrite>,
    max_batch: usize,
    guard: &FilesGuard,
) {
    loop {
        let first = match queue.recv_timeout(IDLE_FILE_CHECK) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if guard.idle_check(connection) {
                    return;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(connection, batch, |connection| {
            guard.after_commit(connection)
        });
        if guard.lost.is_set() {
            return;
        }
    }
    if let Err(error) = end_run(connection) {
        tracing::error!(error = format!("{error:#}"), "closing the ledger");
    }
}

/// Group commit: runs every write of `batch` in one `BEGIN IMMEDIATE` transaction, each in its
/// own savepoint (so a failed or panicking write leaves no trace and the others stand), commits
/// once, and only then answers each write. One fsync serves the whole batch.
///
/// `verify` runs after a successful commit and before any answer: an `Err` from it turns the
/// batch's answers into failures (the writer checks there that its files are still on disk).
pub fn run_batch(
    connection: &mut Connection,
    batch: Vec<BatchedWrite>,
    verify: impl FnOnce(&Connection) -> Result<(), String>,
) {
    let transaction = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(error) => {
            // Nothing ran. Dropping the writes drops their reply channels, which their callers
            // see as an internal failure.
            tracing::error!(%error, writes = batch.len(), "a write batch could not begin");
            return;
        }
    };
    ledger::batch_started();
    let completions: Vec<Completion> = batch.into_iter().map(|write| write(&transaction)).collect();
    ledger::batch_ended();
    let committed = transaction
        .commit()
        .map_err(|error| format!("committing a write batch: {error}"))
        .and_then(|()| verify(connection));
    if let Err(reason) = &committed {
        tracing::error!(%reason, writes = completions.len(), "a write batch was rolled back");
    }
    for complete in completions {
        complete(committed.as_ref().map(|_| ()).map_err(String::as_str));
    }
}

/// How far the id sequence moves at a start after a run that did not close the ledger: more
/// ids than the refunds a write-ahead log holds between two checkpoints (1 000 pages), so that
/// no id acknowledged by the lost run can come back.
pub const ID_GAP_AFTER_UNCLEAN_RUN: i64 = 1_000_000;

/// Marks the ledger open by a `serve` process. If the last run did not close it, moves the
/// movements sequence forward by [`ID_GAP_AFTER_UNCLEAN_RUN`] and returns the new floor.
pub fn begin_run(connection: &mut Connection) -> anyhow::Result<Option<i64>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let was_open: bool =
        transaction.query_row("SELECT open FROM ledger_runs WHERE id = 1", [], |row| {
            row.get(0)
        })?;
    let mut floor = None;
    if was_open {
        let highest: i64 = transaction.query_row(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'movements'), 0),
                        coalesce((SELECT max(id) FROM movements), 0))",
            [],
            |row| row.get(0),
        )?;
        let moved = highest.saturating_add(ID_GAP_AFTER_UNCLEAN_RUN);
        let updated = transaction.execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'movements'",
            [moved],
        )?;
        if updated == 0 {
            transaction.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('movements', ?1)",
                [moved],
            )?;
        }
        floor = Some(moved);
    }
    transaction.execute("UPDATE ledger_runs SET open = 1 WHERE id = 1", [])?;
    transaction.commit().context("marking the ledger open")?;
    Ok(floor)
}

/// Marks the ledger closed cleanly by the writer that opened it.
pub fn end_run(connection: &mut Connection) -> anyhow::Result<()> {
    connection
        .execute("UPDATE ledger_runs SET open = 0 WHERE id = 1", [])
        .context("marking the ledger closed")?;
    Ok(())
}

/// Copies every committed frame of the WAL the connection holds open (linked or not) into the
/// database file and syncs it. `Err` unless all of them were copied.
pub fn checkpoint_into_database(connection: &Connection) -> anyhow::Result<()> {
    let (busy, log, checkpointed): (i64, i64, i64) = connection
        .query_row("PRAGMA wal_checkpoint(FULL)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .context("checkpointing the write-ahead log")?;
    if busy != 0 || checkpointed != log {
        bail!("the checkpoint copied {checkpointed} of {log} frames (busy: {busy})");
    }
    Ok(())
}

/// A copy of everything the connection sees, committed, at `target` (`VACUUM INTO`).
pub fn rescue_copy(connection: &Connection, target: &Path) -> anyhow::Result<()> {
    let target = target.to_str().context("the rescue path is not UTF-8")?;
    connection
        .execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("copying the ledger to {target}"))?;
    Ok(())
}

/// Runs `work` in a savepoint of the batch's transaction: released when it returns `Ok`,
/// rolled back when it returns `Err` or panics.
pub fn in_savepoint<T, E, F>(connection: &Connection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut dyn Ledger) -> Result<T, E>,
    E: From<anyhow::Error>,
{
    run_cached(connection, "SAVEPOINT write").context("opening a write savepoint")?;
    let outcome = {
        let mut ledger = SqliteLedger { connection };
        std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut ledger)))
    };
    let (outcome, keep) = match outcome {
        Ok(Ok(value)) => (Ok(value), true),
        Ok(Err(error)) => (Err(error), false),
        Err(_) => (
            Err(anyhow!("a write operation panicked; its changes were rolled back").into()),
            false,
        ),
    };
    if !keep {
        run_cached(connection, "ROLLBACK TO write").context("undoing a write savepoint")?;
    }
    run_cached(connection, "RELEASE write").context("closing a write savepoint")?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::connection::{migrate, open_writer};

    /// A write that adds payment form `id` and then succeeds, fails, or panics.
    fn write(
        id: i64,
        ending: &'static str,
        answers: mpsc::Sender<(i64, Result<(), String>)>,
    ) -> BatchedWrite {
        Box::new(move |connection| {
            let outcome: Result<(), anyhow::Error> = in_savepoint(connection, |_ledger| {
                connection.execute(
                    "INSERT INTO payment_forms (id, name) VALUES (?1, 'x')",
                    [id],
                )?;
                match ending {
                    "fail" => Err(anyhow!("refused")),
                    "panic" => panic!("a bug"),
                    _ => Ok(()),
                }
            });
            Box::new(move |committed| {
                let result = committed
                    .map_err(str::to_owned)
                    .and(outcome.map_err(|e| e.to_string()));
                let _ = answers.send((id, result));
            })
        })
    }

    #[test]
    fn a_batch_commits_its_good_writes_and_undoes_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut connection = open_writer(&dir.path().join("batch.db")).unwrap();
        migrate(&mut connection).unwrap();
        let (answers, answered) = mpsc::channel();
        let batch = vec![
            write(10, "ok", answers.clone()),
            write(11, "fail", answers.clone()),
            write(12, "panic", answers.clone()),
            write(13, "ok", answers),
        ];
        run_batch(&mut connection, batch, |_| Ok(()));
        let mut results: Vec<(i64, bool)> = answered
            .iter()
            .map(|(id, result)| (id, result.is_ok()))
            .collect();
        results.sort();
        assert_eq!(results, [(10, true), (11, false), (12, false), (13, true)]);
        let kept: Vec<i64> = connection
            .prepare("SELECT id FROM payment_forms WHERE id >= 10 ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            kept,
            [10, 13],
            "the failed and the panicking write left nothing behind"
        );
    }
}
