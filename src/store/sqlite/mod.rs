//! The SQLite adapter of the ledger port, the default: one database file.
//!
//! Writes go to one writer thread that owns the only write connection ([`writer`]). It takes
//! every write queued up, runs them one after another inside one `BEGIN IMMEDIATE … COMMIT`,
//! each in its own savepoint, and answers them after the commit (group commit: one fsync for
//! the batch, every answer durable). Writers are serialized, so two requests can never both see
//! the same refundable balance, and audit entries are chained in their own transaction. Reads
//! use a small pool of read-only connections (WAL mode lets them run beside the writer) inside
//! a read transaction ([`read`]), so one operation sees one snapshot: short reads on the
//! caller's thread, long ones on a blocking thread.
//!
//! [`connection`] opens connections and runs the migrations, [`ledger`] is the port's
//! `Ledger` over SQL, [`maintenance`] what the command line does.

mod connection;
mod ledger;
mod maintenance;
mod read;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use anyhow::Context as _;

use crate::refunds::ledger::{AuditSealing, LedgerFuture, LedgerStore, LedgerWork};

pub use maintenance::SqliteMaintenance;

/// The most reads running at once on blocking threads: a few more than cores, so that a read
/// waiting on the disk does not idle a core, without a thread and a page cache per waiting
/// request.
const MAX_SCANS: usize = 8;

/// The most writes committed together.
const MAX_BATCH: usize = 256;

/// The SQLite store: one writer thread, a pool of readers.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    writer: Mutex<Option<mpsc::Sender<writer::BatchedWrite>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<rusqlite::Connection>>,
    /// Bounds the scans running at once, and so the read connections and blocking threads.
    scan_slots: tokio::sync::Semaphore,
    path: PathBuf,
}

/// Why a write's savepoint was undone.
enum Undone {
    /// The work asked for it (its operation failed).
    ByWork,
    /// The savepoint could not be opened or closed, or the work panicked.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Undone {
    fn from(error: anyhow::Error) -> Undone {
        Undone::Failed(error)
    }
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path` and starts the writer.
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        let mut connection = connection::open_writer(path)?;
        connection::migrate(&mut connection)?;
        let (sender, receiver) = mpsc::channel::<writer::BatchedWrite>();
        let writer_thread = std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn(move || writer::run(&mut connection, &receiver, MAX_BATCH))
            .context("starting the ledger writer thread")?;
        Ok(SqliteStore {
            inner: Arc::new(StoreInner {
                writer: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(Some(writer_thread)),
                readers: Mutex::new(Vec::new()),
                scan_slots: tokio::sync::Semaphore::new(MAX_SCANS),
                path: path.to_owned(),
            }),
        })
    }

    fn submit(&self, job: writer::BatchedWrite) -> anyhow::Result<()> {
        let sender = self
            .inner
            .writer
            .lock()
            .map_err(|_| anyhow::anyhow!("writer lock poisoned"))?;
        let sender = sender
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the store is closed"))?;
        sender
            .send(job)
            .map_err(|_| anyhow::anyhow!("the ledger writer has stopped"))
    }

    /// Runs `work` in a read transaction on a pooled connection, on the calling thread.
    fn read_here(&self, mut work: LedgerWork) -> anyhow::Result<()> {
        let pooled = self
            .inner
            .readers
            .lock()
            .ok()
            .and_then(|mut readers| readers.pop());
        let mut connection = match pooled {
            Some(connection) => connection,
            None => connection::open_reader(&self.inner.path)?,
        };
        let result = read::in_read_transaction(&mut connection, |ledger| {
            work(ledger);
            Ok::<(), anyhow::Error>(())
        });
        // Only a connection outside any transaction goes back to the pool.
        if connection.is_autocommit()
            && let Ok(mut readers) = self.inner.readers.lock()
        {
            readers.push(connection);
        }
        result
    }
}

impl LedgerStore for SqliteStore {
    fn run_write(&self, mut work: LedgerWork) -> LedgerFuture {
        let (reply, answer) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let job: writer::BatchedWrite = Box::new(move |connection| {
            let outcome = writer::in_savepoint(connection, |ledger| {
                if work(ledger) {
                    Ok(())
                } else {
                    Err(Undone::ByWork)
                }
            });
            Box::new(move |committed: Result<(), &str>| {
                let answer = match (outcome, committed) {
                    // Undone by its own choice: nothing of it was to be kept, whatever the batch did.
                    (Err(Undone::ByWork), _) => Ok(()),
                    (Err(Undone::Failed(error)), _) => Err(error),
                    (Ok(()), Ok(())) => Ok(()),
                    (Ok(()), Err(reason)) => Err(anyhow::anyhow!("{reason}")),
                };
                let _ = reply.send(answer);
            })
        });
        let submitted = self.submit(job);
        Box::pin(async move {
            submitted?;
            answer
                .await
                .map_err(|_| anyhow::anyhow!("the ledger writer dropped a job"))?
        })
    }

    /// A short read runs on the caller's thread: handing it to another thread would cost more
    /// than the read.
    fn run_read(&self, work: LedgerWork) -> LedgerFuture {
        let result = self.read_here(work);
        Box::pin(std::future::ready(result))
    }

    /// A long read runs on a blocking thread, at most `MAX_SCANS` (8) at once, so that it never
    /// holds up the other requests on the calling thread.
    fn run_scan(&self, work: LedgerWork) -> LedgerFuture {
        let store = self.clone();
        Box::pin(async move {
            let _slot = store
                .inner
                .scan_slots
                .acquire()
                .await
                .map_err(|_| anyhow::anyhow!("the store is closed"))?;
            let reader = store.clone();
            tokio::task::spawn_blocking(move || reader.read_here(work))
                .await
                .map_err(|e| anyhow::anyhow!("read task failed: {e}"))?
        })
    }

    fn audit_sealing(&self) -> AuditSealing {
        AuditSealing::InTransaction
    }

    /// Stops the writer after the jobs already queued, and waits for it.
    fn close(&self) {
        if let Ok(mut writer) = self.inner.writer.lock() {
            writer.take();
        }
        let handle = self
            .inner
            .writer_thread
            .lock()
            .ok()
            .and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}
