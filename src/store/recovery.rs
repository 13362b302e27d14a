//! Opening the store when sled cannot: a damaged database is moved aside (a few old copies kept
//! for inspection) and a fresh one started; a full disk is an error to retry, never "damage".

use std::path::{Path, PathBuf};

use super::{Store, StoreError};
use crate::model::now_ms;

/// What `open_or_recover` had to do.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Where the damaged database now is.
    pub moved_to: PathBuf,
    /// Why sled could not open it.
    pub reason: String,
}

/// Whether an open error means the disk is full (retry later) rather than a damaged database.
pub fn is_disk_full(e: &StoreError) -> bool {
    let io = match e {
        StoreError::Sled(sled::Error::Io(io)) => io,
        StoreError::Io { source, .. } => source,
        _ => return false,
    };
    io.raw_os_error() == Some(28) || io.kind() == std::io::ErrorKind::StorageFull
}

/// Whether an open error means the files are damaged (as opposed to, say, permissions).
fn is_damage(e: &StoreError) -> bool {
    match e {
        StoreError::Sled(
            sled::Error::Corruption { .. }
            | sled::Error::ReportableBug(_)
            | sled::Error::Unsupported(_),
        )
        | StoreError::Corrupt { .. } => true,
        StoreError::Sled(sled::Error::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Opens the store in `dir`; when sled finds it damaged (or panics on it), moves `dir` to
/// `<dir>.damaged-<unix ms>` (keeping at most `keep` such copies), and opens a fresh one.
/// A full disk or any other I/O error is returned as is.
pub fn open_or_recover(
    dir: &Path,
    cache_bytes: u64,
    segment_size: usize,
    keep: usize,
) -> Result<(Store, Option<Recovery>), StoreError> {
    let first = std::panic::catch_unwind(|| Store::open_sized(dir, cache_bytes, segment_size));
    let reason = match first {
        Ok(Ok(s)) => return Ok((s, None)),
        Ok(Err(e)) if !is_damage(&e) => return Err(e),
        Ok(Err(e)) => e.to_string(),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .map_or_else(
                || "sled panicked".to_string(),
                |m| format!("sled panicked: {m}"),
            ),
    };
    let moved_to = move_aside(dir, keep)?;
    tracing::error!(data_dir = %dir.display(), moved_to = %moved_to.display(), reason = %reason,
        "the store could not be opened: damaged database moved aside, starting with a fresh one");
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let s = Store::open_sized(dir, cache_bytes, segment_size)?;
    Ok((s, Some(Recovery { moved_to, reason })))
}

/// Renames `dir` to a `.damaged-<ms>` sibling, removing the oldest siblings beyond `keep - 1`.
fn move_aside(dir: &Path, keep: usize) -> Result<PathBuf, StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let parent = dir.parent().unwrap_or(Path::new("."));
    let prefix = format!("{name}.damaged-");
    let mut old: Vec<PathBuf> = std::fs::read_dir(parent)
        .map_err(io(parent))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    old.sort();
    while old.len() >= keep.max(1) {
        let p = old.remove(0);
        std::fs::remove_dir_all(&p).map_err(io(&p))?;
        tracing::warn!(path = %p.display(), "removed an old damaged database (only the newest are kept)");
    }
    let to = parent.join(format!("{prefix}{}", now_ms()));
    std::fs::rename(dir, &to).map_err(io(dir))?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SEGMENT_SIZE;

    #[test]
    fn garbage_for_a_database_is_moved_aside_and_a_fresh_store_opens() {
        let root = tempfile::tempdir().expect("tmp");
        let dir = root.path().join("data");
        for round in 0..3 {
            std::fs::create_dir_all(&dir).expect("mkdir");
            // Not a sled database at all: a garbage `conf` and `db`.
            std::fs::write(dir.join("conf"), [0xAB; 64]).expect("conf");
            std::fs::write(dir.join("db"), [0xCD; 4096]).expect("db");
            let (s, r) = open_or_recover(&dir, 1 << 20, SEGMENT_SIZE, 2).expect("recovered");
            let r = r.expect("a recovery was reported");
            assert!(
                r.moved_to.join("db").exists(),
                "round {round}: kept for inspection"
            );
            s.save_snapshots(vec![("d".into(), vec![1])])
                .expect("fresh store works");
            drop(s);
            std::fs::remove_dir_all(&dir).expect("rm");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let copies = std::fs::read_dir(root.path())
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("data.damaged-"))
            .count();
        assert_eq!(copies, 2, "at most `keep` damaged copies");
    }

    #[test]
    fn a_full_disk_is_not_damage() {
        let e = StoreError::Sled(sled::Error::Io(std::io::Error::from_raw_os_error(28)));
        assert!(is_disk_full(&e));
        assert!(!is_damage(&e));
    }
}
