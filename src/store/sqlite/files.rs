//! Whether the database and WAL files the writer holds open are still the files on disk.
//!
//! SQLite cannot survive its `-wal` file being deleted (or the database file being replaced)
//! under a running process: it goes on writing to the unlinked file, and everything since the
//! last checkpoint vanishes when the process ends. The writer compares the device and inode of
//! both paths with the files it opened after every commit, before answering, and once a second
//! while idle; see `SqliteStore::open` for what happens when they differ.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// How often an idle writer checks that its files are still on disk.
pub const IDLE_FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A file's identity on disk: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let metadata = std::fs::metadata(path)?;
        Ok(FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }
}

/// Which of the ledger's files is no longer the one the writer holds open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplacedFile {
    /// The `-wal` file was deleted or replaced: what the writer committed since the last
    /// checkpoint is only in the unlinked file it still holds.
    Wal,
    /// The database file itself was deleted or replaced.
    Database,
}

impl ReplacedFile {
    pub fn describe(self) -> &'static str {
        match self {
            ReplacedFile::Wal => "the write-ahead log (-wal) was deleted or replaced",
            ReplacedFile::Database => "the database file was deleted or replaced",
        }
    }
}

/// The identities of the database and WAL files, taken right after the writer opened them
/// (the writer keeps both open for its whole life, so they stay the identities of its files).
pub struct LedgerFiles {
    database_path: PathBuf,
    wal_path: PathBuf,
    database: FileIdentity,
    wal: FileIdentity,
}

impl LedgerFiles {
    /// Records the identities of `database` and its `-wal`; call after a transaction has run on
    /// the writer connection, so that the WAL exists.
    pub fn record(database: &Path) -> anyhow::Result<LedgerFiles> {
        let wal_path = wal_path(database);
        Ok(LedgerFiles {
            database: FileIdentity::of(database)
                .with_context(|| format!("reading the identity of {}", database.display()))?,
            wal: FileIdentity::of(&wal_path)
                .with_context(|| format!("reading the identity of {}", wal_path.display()))?,
            database_path: database.to_owned(),
            wal_path,
        })
    }

    /// `Err` when either path no longer names the file recorded (deleted, or another file).
    /// Two `stat` calls: cheap next to the commit's fsync.
    pub fn check(&self) -> Result<(), ReplacedFile> {
        if FileIdentity::of(&self.database_path).ok() != Some(self.database) {
            return Err(ReplacedFile::Database);
        }
        if FileIdentity::of(&self.wal_path).ok() != Some(self.wal) {
            return Err(ReplacedFile::Wal);
        }
        Ok(())
    }
}

/// Set once by the writer when it stops because its files were deleted or replaced.
#[derive(Default)]
pub struct FilesLost {
    set: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl FilesLost {
    pub fn is_set(&self) -> bool {
        self.set.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn raise(&self) {
        self.set.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    pub async fn wait(&self) {
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
pub fn files_lost(
    connection: &rusqlite::Connection,
    database: &Path,
    replaced: ReplacedFile,
    lost: &FilesLost,
) -> Result<(), String> {
    lost.raise();
    let outcome = match replaced {
        ReplacedFile::Wal => super::writer::checkpoint_into_database(connection)
            .map(|()| "checkpointed into the database file; the process stops".to_owned()),
        ReplacedFile::Database => {
            let seconds = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            let mut rescue = database.as_os_str().to_owned();
            rescue.push(format!(".rescued-{seconds}"));
            let rescue = std::path::PathBuf::from(rescue);
            super::writer::rescue_copy(connection, &rescue).and_then(|()| {
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

/// What the writer thread checks its files with.
pub struct FilesGuard {
    pub files: LedgerFiles,
    pub database: PathBuf,
    pub lost: std::sync::Arc<FilesLost>,
}

impl FilesGuard {
    /// After a commit, before answering: `Err` fails the batch's answers.
    pub fn after_commit(&self, connection: &rusqlite::Connection) -> Result<(), String> {
        match self.files.check() {
            Ok(()) => Ok(()),
            Err(replaced) => files_lost(connection, &self.database, replaced, &self.lost),
        }
    }

    /// While idle: `true` when the files are gone and the writer must stop.
    pub fn idle_check(&self, connection: &rusqlite::Connection) -> bool {
        match self.files.check() {
            Ok(()) => false,
            Err(replaced) => {
                let _ = files_lost(connection, &self.database, replaced, &self.lost);
                true
            }
        }
    }
}

/// SQLite's name for a database's write-ahead log.
pub fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}
