//! What sled leaves out on the way to the disk: fsync of its log file (it calls only
//! `sync_file_range`), of `conf`, of its blob files (nodes over 1/4 of a segment, e.g. a leaf of
//! large snapshots), and of the directories that hold their names.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::StoreError;

/// Holds sled's log file open to fsync it (fsync applies to the file, whichever descriptor).
pub(super) struct Syncer {
    dir: PathBuf,
    log: File,
    /// The directory's entries (name, inode) when it was last fsynced: a flush that created,
    /// renamed or removed nothing skips the directory fsync (a journal commit on an SD card).
    synced_names: std::sync::Mutex<Vec<(std::ffi::OsString, u64)>>,
    /// The same for `blobs/`, whose new files are fsynced before the log that points to them.
    synced_blobs: std::sync::Mutex<Vec<(std::ffi::OsString, u64)>>,
}

/// The entries of `dir` as (name, inode), sorted: a rename over an existing name changes it.
fn names(dir: &Path) -> Result<Vec<(std::ffi::OsString, u64)>, StoreError> {
    use std::os::unix::fs::DirEntryExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        out.push((e.file_name(), e.ino()));
    }
    out.sort_unstable();
    Ok(out)
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
            synced_names: Default::default(),
            synced_blobs: Default::default(),
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
        self.dir_if_changed(true)?;
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent)?;
        }
        Ok(())
    }

    /// After `Db::flush`: the log's new bytes and size, and the directory when a name in it
    /// changed since its last fsync (sled's snapshot files are renamed into place without one).
    pub(super) fn log(&self) -> Result<(), StoreError> {
        self.blobs()?;
        self.log.sync_all().map_err(io(&self.dir.join("db")))?;
        self.dir_if_changed(false)
    }

    /// sled writes a node larger than a quarter segment to its own file in `blobs/` and never
    /// fsyncs it nor the directory: after a cut the log would point to a file that is not there.
    /// New blob files and `blobs/` are fsynced here, before the log.
    fn blobs(&self) -> Result<(), StoreError> {
        let dir = self.dir.join("blobs");
        if !dir.is_dir() {
            return Ok(());
        }
        let now = names(&dir)?;
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *synced == now {
            return Ok(());
        }
        for entry in &now {
            if synced.binary_search(entry).is_ok() {
                continue;
            }
            let p = dir.join(&entry.0);
            match File::open(&p).and_then(|f| f.sync_all()) {
                // sled removes blobs no longer referenced at any time.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(io(&p))?,
            }
        }
        sync_path(&dir)?;
        *synced = now;
        Ok(())
    }

    /// Fsyncs the data directory if its entries differ from those it had at its last fsync
    /// (or always, with `force`). The listing is taken before the fsync, so a name created in
    /// between is seen as changed next time.
    pub(super) fn dir_if_changed(&self, force: bool) -> Result<(), StoreError> {
        let now = names(&self.dir)?;
        let mut synced = self
            .synced_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !force && *synced == now {
            return Ok(());
        }
        sync_path(&self.dir)?;
        *synced = now;
        Ok(())
    }
}
