//! What sled leaves out on the way to the disk: fsync of its log file (it calls only
//! `sync_file_range`), of `conf`, and of the directories that hold their names.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::StoreError;

/// Holds sled's log file open to fsync it (fsync applies to the file, whichever descriptor).
pub(super) struct Syncer {
    dir: PathBuf,
    log: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

impl Syncer {
    pub(super) fn new(dir: &Path) -> Result<Self, StoreError> {
        let db = dir.join("db");
        let log = File::open(&db).map_err(io(&db))?;
        Ok(Syncer {
            dir: dir.to_path_buf(),
            log,
        })
    }

    /// Makes sled's files, and their names in the data directory and its parent, durable.
    pub(super) fn files_and_names(&self) -> Result<(), StoreError> {
        for f in ["conf", "db", "blobs"] {
            let p = self.dir.join(f);
            if p.exists() {
                sync_path(&p)?;
            }
        }
        sync_path(&self.dir)?;
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent)?;
        }
        Ok(())
    }

    /// After `Db::flush`: the log's new bytes and size, and the directory (sled's snapshot files
    /// are renamed into place without a directory sync).
    pub(super) fn log(&self) -> Result<(), StoreError> {
        self.log.sync_all().map_err(io(&self.dir.join("db")))?;
        sync_path(&self.dir)
    }
}
