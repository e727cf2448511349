//! Group commit: the writer thread's batches, each write in its own savepoint.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use anyhow::{Context as _, anyhow};
use rusqlite::{Connection, TransactionBehavior};

use super::connection::run_cached;
use super::ledger::SqliteLedger;
use crate::refunds::ledger::Ledger;

/// How to answer one write of a batch once the batch's commit has succeeded or failed.
pub type Completion = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// One request's write as the writer thread runs it inside a batch's transaction.
pub type BatchedWrite = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// The writer thread's loop: whatever has queued up while the last batch committed goes into
/// the next one, up to `max_batch` writes. Ends when every sender is gone.
pub fn run(connection: &mut Connection, queue: &mpsc::Receiver<BatchedWrite>, max_batch: usize) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(connection, batch);
    }
}

/// Group commit: runs every write of `batch` in one `BEGIN IMMEDIATE` transaction, each in its
/// own savepoint (so a failed or panicking write leaves no trace and the others stand), commits
/// once, and only then answers each write. One fsync serves the whole batch.
pub fn run_batch(connection: &mut Connection, batch: Vec<BatchedWrite>) {
    let transaction = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(error) => {
            // Nothing ran. Dropping the writes drops their reply channels, which their callers
            // see as an internal failure.
            tracing::error!(%error, writes = batch.len(), "a write batch could not begin");
            return;
        }
    };
    let completions: Vec<Completion> = batch.into_iter().map(|write| write(&transaction)).collect();
    let committed = transaction
        .commit()
        .map_err(|error| format!("committing a write batch: {error}"));
    if let Err(reason) = &committed {
        tracing::error!(%reason, writes = completions.len(), "a write batch was rolled back");
    }
    for complete in completions {
        complete(committed.as_ref().map(|_| ()).map_err(String::as_str));
    }
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
        run_batch(&mut connection, batch);
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
