//! A small file beside sled's that records what a checkpoint contained (snapshot records, highest
//! outbox seq), so records sled silently drops when its log is damaged are found missing.
//!
//! sled's recovery stops at the first damaged log entry and discards everything after it without
//! an error: checksums of the records that remain cannot tell. The manifest is written (temp file,
//! fsync, rename, directory fsync) after each snapshot's flush, about every `persist_interval`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;

const NAME: &str = "edgewatch.manifest";

/// What the last checkpoint held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Manifest {
    pub state_records: u64,
    pub outbox_seq: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, source }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

impl Manifest {
    fn text(&self) -> String {
        let body = format!(
            "state_records={}\noutbox_seq={}\n",
            self.state_records, self.outbox_seq
        );
        format!("{body}crc={:08x}\n", crc32fast::hash(body.as_bytes()))
    }

    /// The last checkpoint, if a sound manifest exists (a damaged one counts as none).
    pub(super) fn read(dir: &Path) -> Option<Manifest> {
        let text = std::fs::read_to_string(path(dir)).ok()?;
        let (body, crc) = text.rsplit_once("crc=")?;
        if u32::from_str_radix(crc.trim(), 16).ok()? != crc32fast::hash(body.as_bytes()) {
            tracing::warn!(file = %path(dir).display(), "store manifest damaged; ignored");
            return None;
        }
        let field = |name: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        Some(Manifest {
            state_records: field("state_records")?,
            outbox_seq: field("outbox_seq")?,
        })
    }

    /// Replaces the manifest atomically and durably.
    pub(super) fn write(&self, dir: &Path) -> Result<(), StoreError> {
        let tmp = dir.join(format!("{NAME}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(self.text().as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path(dir)).map_err(io(dir))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_a_damaged_manifest_is_none() {
        let d = tempfile::tempdir().expect("tmp");
        assert_eq!(Manifest::read(d.path()), None);
        let m = Manifest {
            state_records: 50,
            outbox_seq: 1234,
        };
        m.write(d.path()).expect("write");
        assert_eq!(Manifest::read(d.path()), Some(m));
        let t = std::fs::read_to_string(path(d.path())).expect("read");
        std::fs::write(path(d.path()), t.replace("50", "51")).expect("tamper");
        assert_eq!(Manifest::read(d.path()), None);
    }
}
