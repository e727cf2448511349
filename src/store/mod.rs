//! Persistence. All SQL of the service lives below this module.
//!
//! The domain sees the ledger only through [`Ledger`], whose methods are domain operations
//! (load a payment with what is refunded from it, reserve a refund, confirm it, …), each called
//! inside one transaction that [`Store::write`] or [`Store::read`] opens. A second backend
//! (PostgreSQL for several gateway instances) implements `Ledger` over its own transactions and
//! row locks; the domain code does not change.
//!
//! Writes go to one writer thread that owns the only write connection. It takes every write
//! queued up, runs them one after another inside one `BEGIN IMMEDIATE … COMMIT`, each in its own
//! savepoint, and answers them after the commit (group commit: one fsync for the batch, every
//! answer durable). Writers are serialized, so two requests can never both see the same
//! refundable balance. Reads use a small pool of read-only connections (WAL mode
//! lets them run beside the writer) inside a read transaction, so one operation sees one
//! snapshot: short reads on the caller's thread ([`Store::read`]), long ones on a blocking
//! thread ([`Store::scan`]).

mod files;
mod sqlite;

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use anyhow::Context as _;

use crate::refunds::StoredResponse;
use crate::refunds::audit::{AuditEntry, ChainedEntry};
use crate::refunds::types::{
    ApiKey, ApiUser, JobStep, LedgerCounts, MovementId, NewRefund, Order, Payment, Refund,
    RefundJob, RefundStatus, Scopes, Settlement, Source, SourceFilter, SourceRef, Timestamp,
};
use crate::shop::ShopData;

pub use sqlite::ImportSummary;

/// The ledger as the domain sees it inside one transaction.
pub trait Ledger {
    fn order(&mut self, order_id: i64) -> anyhow::Result<Option<Order>>;
    fn payment(&mut self, payment_id: MovementId) -> anyhow::Result<Option<Payment>>;
    /// The order's payments, oldest first.
    fn order_payments(&mut self, order_id: i64) -> anyhow::Result<Vec<Payment>>;
    fn source(&mut self, source: SourceRef) -> anyhow::Result<Option<Source>>;
    fn refund(&mut self, refund_id: MovementId) -> anyhow::Result<Option<Refund>>;
    fn payment_form_exists(&mut self, payment_form_id: i64) -> anyhow::Result<bool>;
    /// One page of unapproved (`New`) refunds, oldest first, and how many there are in all.
    fn unapproved_refunds(
        &mut self,
        filter: SourceFilter,
        offset: u64,
        limit: u32,
    ) -> anyhow::Result<(u64, Vec<Refund>)>;
    fn api_user(&mut self, login: &str) -> anyhow::Result<Option<ApiUser>>;
    /// The API key whose SHA-256 (lowercase hex) is `key_sha256`, revoked or not.
    fn api_key(&mut self, key_sha256: &str) -> anyhow::Result<Option<ApiKey>>;

    /// Records a `New` refund, reserving its amount; returns its id from the movements sequence.
    fn reserve_refund(&mut self, refund: &NewRefund) -> anyhow::Result<MovementId>;
    /// Changes the amount a `New` refund reserves.
    fn change_reserved_amount(&mut self, refund_id: MovementId, minor: i64) -> anyhow::Result<()>;
    /// Approves a refund: `Completed` (manual) or `Processing` (automatic).
    fn confirm(
        &mut self,
        refund_id: MovementId,
        status: RefundStatus,
        at: Timestamp,
    ) -> anyhow::Result<()>;
    /// Cancels a `New` refund, releasing its amount.
    fn cancel(&mut self, refund_id: MovementId) -> anyhow::Result<()>;

    /// Refunds by status and the outbox depth, for monitoring.
    fn counts(&mut self) -> anyhow::Result<LedgerCounts>;
    /// The hash of the last audit entry, or the chain's genesis.
    fn audit_head(&mut self) -> anyhow::Result<String>;
    fn append_audit(
        &mut self,
        entry: &AuditEntry,
        prev_hash: &str,
        hash: &str,
    ) -> anyhow::Result<()>;

    /// The stored answer under an idempotency key: the request's digest and the answer.
    fn idempotent_answer(
        &mut self,
        principal: &str,
        key: &str,
    ) -> anyhow::Result<Option<(String, StoredResponse)>>;
    fn remember_answer(
        &mut self,
        principal: &str,
        key: &str,
        request_digest: &str,
        answer: &StoredResponse,
        now: Timestamp,
    ) -> anyhow::Result<()>;
    /// Forgets the answer under `principal`'s `key` if it was stored at or before `at` (it has
    /// expired), so that an expired key is never replayed, whenever the purge runs.
    fn forget_expired_answer(
        &mut self,
        principal: &str,
        key: &str,
        at: Timestamp,
    ) -> anyhow::Result<()>;
    /// Forgets answers stored before `before`; returns how many.
    fn purge_answers(&mut self, before: Timestamp) -> anyhow::Result<u64>;

    /// A nested transaction inside the current one, so an operation's own changes can be undone
    /// while what the transaction records about it (an idempotent answer) is kept.
    fn savepoint(&mut self) -> anyhow::Result<()>;
    fn release_savepoint(&mut self) -> anyhow::Result<()>;
    fn rollback_to_savepoint(&mut self) -> anyhow::Result<()>;

    /// Adds the outbox job that sends a just-confirmed automatic refund to `operator`.
    fn enqueue_job(
        &mut self,
        refund_id: MovementId,
        operator: &str,
        now_ms: i64,
    ) -> anyhow::Result<()>;
    /// Claims up to `limit` jobs due at `now_ms`, leasing each until `now_ms + lease_ms` so that
    /// a worker that dies mid-step leaves the job to be retried after the lease, starting with a
    /// status query (the send may have arrived).
    fn claim_due_jobs(
        &mut self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<RefundJob>>;
    fn job(&mut self, refund_id: MovementId) -> anyhow::Result<Option<RefundJob>>;
    /// Records what the worker will do next for a job.
    fn record_job_step(&mut self, step: &JobStep, now_ms: i64) -> anyhow::Result<()>;
    /// Settles a `Processing` refund: `Completed` with the operator's id, or `Failed`
    /// (releasing its amount).
    fn settle(&mut self, refund_id: MovementId, settlement: &Settlement) -> anyhow::Result<()>;
}

type WriteJob = sqlite::BatchedWrite;

/// The most reads running at once: a few more than cores, so that a read waiting on the disk
/// does not idle a core, without a thread and a page cache per waiting request.
const MAX_READERS: usize = 8;

/// The most writes committed together.
const MAX_BATCH: usize = 256;

/// How often an idle writer checks that its files are still on disk.
const IDLE_FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Set once by the writer when it stops because its files were deleted or replaced.
#[derive(Default)]
struct FilesLost {
    set: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl FilesLost {
    fn is_set(&self) -> bool {
        self.set.load(std::sync::atomic::Ordering::Acquire)
    }

    fn raise(&self) {
        self.set.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

/// What the writer does on finding `replaced`: log it, save what the process still holds, and
/// stop. A deleted WAL is checkpointed into the database file through the handle the writer
/// still has, so every commit already answered, and the batch being answered, survive; a
/// replaced database file is copied next to it (`{path}.rescued-{unix seconds}`), and the
/// batch being answered is failed. `Err` says why the batch must fail.
fn files_lost(
    connection: &rusqlite::Connection,
    database: &Path,
    replaced: files::ReplacedFile,
    lost: &FilesLost,
) -> Result<(), String> {
    lost.raise();
    let outcome = match replaced {
        files::ReplacedFile::Wal => sqlite::checkpoint_into_database(connection)
            .map(|()| "checkpointed into the database file; the process stops".to_owned()),
        files::ReplacedFile::Database => {
            let seconds = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            let mut rescue = database.as_os_str().to_owned();
            rescue.push(format!(".rescued-{seconds}"));
            let rescue = std::path::PathBuf::from(rescue);
            sqlite::rescue_copy(connection, &rescue).and_then(|()| {
                Err(anyhow::anyhow!(
                    "what the process held was copied to {}; the process stops",
                    rescue.display()
                ))
            })
        }
    };
    match &outcome {
        Ok(saved) => tracing::error!(
            database = %database.display(),
            "{}: {saved}; restart the service",
            replaced.describe()
        ),
        Err(error) => tracing::error!(
            database = %database.display(),
            error = format!("{error:#}"),
            "{}: the ledger stops; writes since the last checkpoint may be lost",
            replaced.describe()
        ),
    }
    outcome
        .map(|_| ())
        .map_err(|error| format!("{}: {error:#}", replaced.describe()))
}

/// The SQLite store: one writer thread, a pool of readers.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<rusqlite::Connection>>,
    /// Bounds the reads running at once, and so the read connections and blocking threads.
    read_slots: tokio::sync::Semaphore,
    path: std::path::PathBuf,
    /// Raised by the writer when it stops because its files were deleted or replaced.
    lost: Arc<FilesLost>,
}

impl Store {
    /// Opens (creating and migrating if needed) the database at `path` and starts the writer.
    ///
    /// If the writer finds its database or `-wal` file deleted or replaced on disk (see
    /// [`files`]), it stops: the batch that found it is answered only if its commit reached the
    /// database file (the still-open, unlinked WAL is checkpointed into it), every later write
    /// is refused, readiness fails, and [`Store::files_lost`] resolves so that the process can
    /// exit for its supervisor to restart it.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let mut connection = sqlite::open_writer(path)?;
        sqlite::migrate(&mut connection)?;
        if let Some(floor) = sqlite::begin_run(&mut connection)? {
            tracing::warn!(
                next_id_above = floor,
                "the last run did not close the ledger; refund ids continue above anything it \
                 may have handed out"
            );
        }
        let files = files::LedgerFiles::record(path)?;
        let lost = Arc::new(FilesLost::default());
        let writer_lost = lost.clone();
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        let database = path.to_owned();
        let writer_thread = std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn(move || {
                let lost = writer_lost;
                loop {
                    // Group commit: whatever has queued up while the last batch committed goes
                    // into the next one. While idle, the files are checked once a second.
                    let first = match receiver.recv_timeout(IDLE_FILE_CHECK) {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let Err(replaced) = files.check() {
                                let _ = files_lost(&connection, &database, replaced, &lost);
                                return;
                            }
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    sqlite::run_batch(&mut connection, batch, |connection| match files.check() {
                        Ok(()) => Ok(()),
                        Err(replaced) => files_lost(connection, &database, replaced, &lost),
                    });
                    if lost.is_set() {
                        return;
                    }
                }
                if let Err(error) = sqlite::end_run(&mut connection) {
                    tracing::error!(error = format!("{error:#}"), "closing the ledger");
                }
            })
            .context("starting the ledger writer thread")?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                writer: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(Some(writer_thread)),
                readers: Mutex::new(Vec::new()),
                read_slots: tokio::sync::Semaphore::new(MAX_READERS),
                path: path.to_owned(),
                lost,
            }),
        })
    }

    /// Resolves when the writer has found its files deleted or replaced and stopped.
    pub async fn files_lost(&self) {
        self.inner.lost.wait().await;
    }

    /// `Err` once the writer has stopped because its files were deleted or replaced.
    pub fn check_files(&self) -> anyhow::Result<()> {
        if self.inner.lost.is_set() {
            anyhow::bail!("the ledger refuses writes: its files on disk were deleted or replaced");
        }
        Ok(())
    }

    /// Runs `work` in one write transaction on the writer thread: committed when it returns
    /// `Ok`, rolled back when it returns `Err` or panics.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Ledger) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: WriteJob = Box::new(move |connection| {
            let outcome = sqlite::in_savepoint(connection, work);
            Box::new(move |committed: Result<(), &str>| {
                let answer = match (committed, outcome) {
                    (_, Err(error)) => Err(error),
                    (Ok(()), Ok(value)) => Ok(value),
                    (Err(reason), Ok(_)) => {
                        Err(anyhow::anyhow!("the write was not committed: {reason}").into())
                    }
                };
                let _ = reply.send(answer);
            })
        });
        self.submit(job)?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the ledger writer dropped a job"))?
    }

    fn submit(&self, job: WriteJob) -> anyhow::Result<()> {
        self.check_files()?;
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

    /// Runs `work` in one read transaction on a pooled read-only connection, on the calling
    /// thread. For reads whose cost is bounded (a lookup by key, one order's payments, a short
    /// page): handing them to another thread would cost more than the read.
    pub async fn read<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Ledger) -> Result<T, E>,
        E: From<anyhow::Error>,
    {
        self.read_blocking(work)
    }

    /// Runs `work` like [`Store::read`], but on a blocking thread, at most `MAX_READERS` (8) at
    /// once: for reads that may walk many rows (a page far into the list), which would hold up
    /// every other request on the calling thread.
    pub async fn scan<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Ledger) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
    {
        let _slot = self
            .inner
            .read_slots
            .acquire()
            .await
            .map_err(|_| anyhow::anyhow!("the store is closed"))?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(work))
            .await
            .map_err(|e| anyhow::anyhow!("read task failed: {e}"))?
    }

    fn read_blocking<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut dyn Ledger) -> Result<T, E>,
        E: From<anyhow::Error>,
    {
        let pooled = self
            .inner
            .readers
            .lock()
            .ok()
            .and_then(|mut readers| readers.pop());
        let mut connection = match pooled {
            Some(connection) => connection,
            None => sqlite::open_reader(&self.inner.path)?,
        };
        let result = sqlite::in_read_transaction(&mut connection, work);
        // Only a connection outside any transaction goes back to the pool.
        if connection.is_autocommit()
            && let Ok(mut readers) = self.inner.readers.lock()
        {
            readers.push(connection);
        }
        result
    }

    /// Stops the writer after the jobs already queued, and waits for it.
    pub fn close(&self) {
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

/// Synchronous maintenance used by the command line (import, users). Each call is one
/// transaction on its own connection, safe beside a running service.
pub struct Maintenance {
    connection: rusqlite::Connection,
}

impl Maintenance {
    pub fn open(path: &Path) -> anyhow::Result<Maintenance> {
        let mut connection = sqlite::open_writer(path)?;
        sqlite::migrate(&mut connection)?;
        Ok(Maintenance { connection })
    }

    /// Upserts a shop document in one transaction; nothing is written if any entry fails.
    pub fn import_shop(&mut self, shop: &ShopData) -> anyhow::Result<ImportSummary> {
        sqlite::import_shop(&mut self.connection, shop)
    }

    /// Adds or replaces a legacy API user.
    pub fn put_api_user(&mut self, user: &ApiUser, now: Timestamp) -> anyhow::Result<()> {
        sqlite::put_api_user(&mut self.connection, user, now)
    }

    /// Creates an API key named `name` from the key's SHA-256; fails if the name is taken.
    pub fn create_api_key(
        &mut self,
        name: &str,
        key_sha256: &str,
        scopes: Scopes,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        sqlite::create_api_key(&mut self.connection, name, key_sha256, scopes, now)
    }

    pub fn api_keys(&mut self) -> anyhow::Result<Vec<ApiKey>> {
        sqlite::api_keys(&mut self.connection)
    }

    /// Revokes the key named `name`; `false` if there is no such live key.
    pub fn revoke_api_key(&mut self, name: &str, now: Timestamp) -> anyhow::Result<bool> {
        sqlite::revoke_api_key(&mut self.connection, name, now)
    }

    /// The audit chain in order, or one refund's entries.
    pub fn audit_entries(
        &mut self,
        refund_id: Option<MovementId>,
    ) -> anyhow::Result<Vec<ChainedEntry>> {
        sqlite::audit_entries(&mut self.connection, refund_id)
    }

    /// A consistent copy of the database at `target` (`VACUUM INTO`), safe while the service runs.
    pub fn backup(&mut self, target: &Path) -> anyhow::Result<()> {
        sqlite::backup(&mut self.connection, target)
    }

    /// The outbox: jobs not done yet, or all of them.
    pub fn jobs(&mut self, include_done: bool) -> anyhow::Result<Vec<RefundJob>> {
        sqlite::jobs(&mut self.connection, include_done)
    }

    /// Whether the shop has no orders yet (the demo data is loaded only into an empty shop).
    pub fn is_empty(&mut self) -> anyhow::Result<bool> {
        sqlite::is_empty(&mut self.connection)
    }
}
