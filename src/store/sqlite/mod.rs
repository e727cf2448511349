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
mod files;
mod ledger;
mod maintenance;
mod read;
mod writer;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
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
    /// Raised by the writer when it stops because its files were deleted or replaced.
    lost: Arc<files::FilesLost>,
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
    ///
    /// If the writer finds its database or `-wal` file deleted or replaced on disk (see
    /// [`files`]), it stops: the batch that found it is answered only if its commit reached the
    /// database file (the still-open, unlinked WAL is checkpointed into it), every later write
    /// is refused, readiness fails, and `stopped_for_good` resolves so that the process can
    /// exit for its supervisor to restart it. A start after a run that did not close the
    /// ledger moves the id sequence forward, so no id it may have acknowledged comes back.
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        let mut connection = connection::open_writer(path)?;
        connection::migrate(&mut connection)?;
        if let Some(floor) = writer::begin_run(&mut connection)? {
            tracing::warn!(
                next_id_above = floor,
                "the last run did not close the ledger; refund ids continue above anything it \
                 may have handed out"
            );
        }
        let guard = files::FilesGuard {
            files: files::LedgerFiles::record(path)?,
            database: path.to_owned(),
            lost: Arc::new(files::FilesLost::default()),
        };
        let lost = guard.lost.clone();
        let (sender, receiver) = mpsc::channel::<writer::BatchedWrite>();
        let writer_thread = std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn(move || writer::run(&mut connection, &receiver, MAX_BATCH, &guard))
            .context("starting the ledger writer thread")?;
        Ok(SqliteStore {
            inner: Arc::new(StoreInner {
                writer: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(Some(writer_thread)),
                readers: Mutex::new(Vec::new()),
                scan_slots: tokio::sync::Semaphore::new(MAX_SCANS),
                path: path.to_owned(),
                lost,
            }),
        })
    }

    fn submit(&self, job: writer::BatchedWrite) -> anyhow::Result<()> {
        self.check_usable()?;
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

    /// `Err` once the writer has stopped because its files were deleted or replaced.
    fn check_usable(&self) -> anyhow::Result<()> {
        if self.inner.lost.is_set() {
            anyhow::bail!("the ledger refuses writes: its files on disk were deleted or replaced");
        }
        Ok(())
    }

    fn stopped_for_good(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let lost = self.inner.lost.clone();
        Box::pin(async move { lost.wait().await })
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
