//! Read transactions on the pooled read-only connections.

use std::panic::AssertUnwindSafe;

use anyhow::{Context as _, anyhow};
use rusqlite::Connection;

use super::connection::run_cached;
use super::ledger::SqliteLedger;
use crate::refunds::ledger::Ledger;

pub fn in_read_transaction<T, E, F>(connection: &mut Connection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut dyn Ledger) -> Result<T, E>,
    E: From<anyhow::Error>,
{
    // Prepared once per connection: parsing `BEGIN` and `ROLLBACK` again for every read costs
    // more than a point read itself.
    run_cached(connection, "BEGIN DEFERRED").context("beginning a read transaction")?;
    let outcome = {
        let mut ledger = SqliteLedger {
            connection: &*connection,
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut ledger)))
    };
    // A read changes nothing, so ending it either way is the same; ROLLBACK also ends it when
    // `work` failed halfway through a statement.
    if let Err(error) = run_cached(connection, "ROLLBACK") {
        tracing::error!(%error, "ending a read transaction");
        // A connection whose transaction is still open would serve a stale snapshot later.
        if !connection.is_autocommit() {
            return Err(anyhow!("a read transaction could not be ended: {error}").into());
        }
    }
    match outcome {
        Ok(result) => result,
        Err(_) => Err(anyhow!("a read operation panicked").into()),
    }
}
