//! Whether the database and WAL files the writer holds open are still the files on disk.
//!
//! SQLite cannot survive its `-wal` file being deleted (or the database file being replaced)
//! under a running process: it goes on writing to the unlinked file, and everything since the
//! last checkpoint vanishes when the process ends. The writer compares the device and inode of
//! both paths with the files it opened after every commit, before answering, and once a second
//! while idle; see `Store::open` for what happens when they differ.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

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

/// SQLite's name for a database's write-ahead log.
pub fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}
