//! A FUSE filesystem that behaves like a drive with a volatile write cache: every write stays in
//! memory until its file (or, for names, its directory) is fsync'ed; `cut` throws the rest away.
//! Over 600 lines because one FUSE operation per method is what a filesystem is; no logic hides here.
//!
//! What it models (see docs/DURABILITY.md): data written with `write`/`pwrite` and sizes changed
//! with `truncate` survive a cut only after `fsync`/`fdatasync` of that file; a created, renamed or
//! removed name survives only after `fsync` of its directory. `sync_file_range` never reaches a
//! FUSE filesystem, so it makes nothing durable here (as on a real drive: it neither flushes the
//! drive's cache nor the file's metadata). A cut may tear the last unsynced write at a random byte
//! (its prefix reaches the media). Not modelled: unsynced writes that survive out of order (a
//! drive's cache reordering within a sync), sector atomicity (tears are at any byte, which is
//! harsher), lost or corrupted *synced* data, and the kernel's own ordering guarantees (ext4's
//! journal makes a rename durable with the next commit; here only `fsync` of the directory does).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use rand::Rng;

const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;

enum Kind {
    File {
        data: Vec<u8>,
        synced: Vec<u8>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        synced: BTreeMap<OsString, u64>,
    },
}

struct Node {
    kind: Kind,
    perm: u16,
    mtime: SystemTime,
    /// Last name it was given (for reports only).
    name: OsString,
}

/// The last write not yet made durable: (inode, offset, bytes).
type LastWrite = (u64, u64, Vec<u8>);

/// Counters of what the program on the mount did (since mount).
#[derive(Debug, Default, Clone, Copy)]
pub struct Ops {
    pub writes: u64,
    pub bytes_written: u64,
    pub fsyncs: u64,
    pub fsyncdirs: u64,
    pub truncates: u64,
    pub renames: u64,
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    last_write: Option<LastWrite>,
    /// Total bytes of file data allowed (None: unlimited); beyond it writes fail with ENOSPC.
    capacity: Option<u64>,
    ops: Ops,
    /// How long a file fsync takes before it makes anything durable (a card's flush latency).
    fsync_delay: Duration,
    /// Set while the test inspects a frozen program: fsyncs completing meanwhile wait, so that
    /// what it saw unsynced is what a cut then loses.
    held: bool,
    /// The power is gone: fsyncs still in flight make nothing durable.
    dead: bool,
}

/// What was not durable at a cut, and what the cut did.
#[derive(Debug, Clone, Default)]
pub struct CutReport {
    /// Files with unsynced data (their last names).
    pub unsynced_files: Vec<String>,
    /// Directories with unsynced entries.
    pub unsynced_dirs: Vec<String>,
    /// Bytes of file data that differed from the synced image.
    pub lost_bytes: u64,
    /// The torn write, if any: (file name, bytes of it kept, bytes it had).
    pub torn: Option<(String, usize, usize)>,
    /// Names present before the cut that were gone after it.
    pub vanished: Vec<String>,
}

impl State {
    fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                kind: Kind::Dir {
                    entries: BTreeMap::new(),
                    synced: BTreeMap::new(),
                },
                perm: 0o755,
                mtime: SystemTime::now(),
                name: OsString::from("/"),
            },
        );
        State {
            nodes,
            next_ino: 2,
            last_write: None,
            capacity: None,
            ops: Ops::default(),
            fsync_delay: Duration::ZERO,
            held: false,
            dead: false,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &n.kind {
            Kind::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Kind::Dir { .. } => (FileType::Directory, 0, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm: n.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }

    fn entries(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir).map(|n| &mut n.kind) {
            Some(Kind::Dir { entries, .. }) => Ok(entries),
            Some(Kind::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn used(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match &n.kind {
                Kind::File { data, .. } => data.len() as u64,
                Kind::Dir { .. } => 0,
            })
            .sum()
    }

    fn new_node(&mut self, parent: u64, name: &OsStr, kind: Kind, perm: u16) -> Result<u64, Errno> {
        let ino = self.next_ino;
        let entries = self.entries(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        entries.insert(name.to_os_string(), ino);
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                kind,
                perm,
                mtime: SystemTime::now(),
                name: name.to_os_string(),
            },
        );
        Ok(ino)
    }

    /// Names reachable from the root, as paths.
    fn paths(&self, current: bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![(ROOT, String::new())];
        while let Some((ino, path)) = stack.pop() {
            if let Some(Node {
                kind: Kind::Dir { entries, synced },
                ..
            }) = self.nodes.get(&ino)
            {
                for (name, child) in if current { entries } else { synced } {
                    let p = format!("{path}/{}", name.to_string_lossy());
                    out.push(p.clone());
                    stack.push((*child, p));
                }
            }
        }
        out.sort();
        out
    }

    /// Throws away everything not synced; optionally keeps a random prefix of the last write.
    fn cut(&mut self, tear: Option<&mut dyn rand::RngCore>) -> CutReport {
        let mut r = CutReport::default();
        let before = self.paths(true);
        for n in self.nodes.values_mut() {
            match &mut n.kind {
                Kind::File { data, synced } => {
                    if data != synced {
                        r.unsynced_files.push(n.name.to_string_lossy().into_owned());
                        r.lost_bytes += data.len().abs_diff(synced.len()) as u64
                            + data
                                .iter()
                                .zip(synced.iter())
                                .filter(|(a, b)| a != b)
                                .count() as u64;
                        *data = synced.clone();
                    }
                }
                Kind::Dir { entries, synced } => {
                    if entries != synced {
                        r.unsynced_dirs.push(n.name.to_string_lossy().into_owned());
                        *entries = synced.clone();
                    }
                }
            }
        }
        if let (Some(rng), Some((ino, off, bytes))) = (tear, self.last_write.take()) {
            if let Some(Node {
                kind: Kind::File { data, synced },
                name,
                ..
            }) = self.nodes.get_mut(&ino)
            {
                let keep = rng.gen_range(0..bytes.len().max(1));
                if keep > 0 {
                    let off = off as usize;
                    if data.len() < off + keep {
                        data.resize(off + keep, 0);
                    }
                    data[off..off + keep].copy_from_slice(&bytes[..keep]);
                    // What reached the media is durable now.
                    *synced = data.clone();
                }
                r.torn = Some((name.to_string_lossy().into_owned(), keep, bytes.len()));
            }
        }
        self.last_write = None;
        let after = self.paths(true);
        r.vanished = before.into_iter().filter(|p| !after.contains(p)).collect();
        r
    }
}

/// The filesystem the kernel talks to: a handle on the shared state.
struct Fs(Arc<Mutex<State>>);

impl Fs {
    fn st(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.st();
        let found = st.entries(parent.0).map(|e| e.get(name).copied());
        match found {
            Ok(Some(ino)) => match st.attr(ino) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.st().attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.st();
        let st = &mut *st;
        let Some(n) = st.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.perm = (m & 0o7777) as u16;
        }
        if let Some(sz) = size {
            match &mut n.kind {
                Kind::File { data, .. } => {
                    data.resize(sz as usize, 0);
                    n.mtime = SystemTime::now();
                    st.ops.truncates += 1;
                }
                Kind::Dir { .. } => return reply.error(Errno::EISDIR),
            }
        }
        match st.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.st();
        let kind = Kind::Dir {
            entries: BTreeMap::new(),
            synced: BTreeMap::new(),
        };
        match st.new_node(parent.0, name, kind, (mode & !umask & 0o7777) as u16) {
            Ok(ino) => match st.attr(ino) {
                Some(a) => reply.entry(&TTL, &a, Generation(0)),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.st();
        let kind = Kind::File {
            data: Vec::new(),
            synced: Vec::new(),
        };
        match st.new_node(parent.0, name, kind, (mode & !umask & 0o7777) as u16) {
            Ok(ino) => match st.attr(ino) {
                Some(a) => {
                    reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty())
                }
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        match st.entries(parent.0).map(|e| e.remove(name)) {
            Ok(Some(_)) => reply.ok(),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let child = match st.entries(parent.0).map(|e| e.get(name).copied()) {
            Ok(Some(c)) => c,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        match st.entries(child) {
            Ok(e) if !e.is_empty() => return reply.error(Errno::ENOTEMPTY),
            Ok(_) => {}
            Err(e) => return reply.error(e),
        }
        if let Ok(e) = st.entries(parent.0) {
            e.remove(name);
        }
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        let ino = match st.entries(parent.0).map(|e| e.remove(name)) {
            Ok(Some(i)) => i,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        match st.entries(newparent.0) {
            Ok(e) => {
                e.insert(newname.to_os_string(), ino);
            }
            Err(e) => return reply.error(e),
        }
        if let Some(n) = st.nodes.get_mut(&ino) {
            n.name = newname.to_os_string();
        }
        st.ops.renames += 1;
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.st().nodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.st();
        match st.nodes.get(&ino.0).map(|n| &n.kind) {
            Some(Kind::File { data, .. }) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(Kind::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.st();
        let st = &mut *st;
        let end = offset as usize + bytes.len();
        if let Some(cap) = st.capacity {
            let cur = match st.nodes.get(&ino.0).map(|n| &n.kind) {
                Some(Kind::File { data, .. }) => data.len(),
                _ => 0,
            };
            if end > cur && st.used() + (end - cur) as u64 > cap {
                return reply.error(Errno::ENOSPC);
            }
        }
        let Some(n) = st.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Kind::File { data, .. } = &mut n.kind else {
            return reply.error(Errno::EISDIR);
        };
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(bytes);
        n.mtime = SystemTime::now();
        st.last_write = Some((ino.0, offset, bytes.to_vec()));
        st.ops.writes += 1;
        st.ops.bytes_written += bytes.len() as u64;
        reply.written(bytes.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) is not a sync.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The data is not durable before the delay is over (the lock is not held meanwhile).
        let delay = self.st().fsync_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut st = loop {
            let st = self.st();
            if st.dead {
                return reply.error(Errno::EIO);
            }
            if !st.held {
                break st;
            }
            drop(st);
            std::thread::sleep(Duration::from_millis(1));
        };
        let st = &mut *st;
        // fsync of a file makes its data and size durable, not its name.
        if let Some(Node {
            kind: Kind::File { data, synced },
            ..
        }) = st.nodes.get_mut(&ino.0)
        {
            synced.clone_from(data);
            if st.last_write.as_ref().is_some_and(|w| w.0 == ino.0) {
                st.last_write = None;
            }
        }
        st.ops.fsyncs += 1;
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.st();
        let Some(Node {
            kind: Kind::Dir { entries, .. },
            ..
        }) = st.nodes.get(&ino.0)
        else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for (name, child) in entries {
            let kind = match st.nodes.get(child).map(|n| &n.kind) {
                Some(Kind::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        if let Some(Node {
            kind: Kind::Dir { entries, synced },
            ..
        }) = st.nodes.get_mut(&ino.0)
        {
            synced.clone_from(entries);
        }
        st.ops.fsyncdirs += 1;
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.st();
        let total = st.capacity.unwrap_or(1 << 34) / 4096;
        let used = st.used() / 4096;
        let free = total.saturating_sub(used);
        reply.statfs(total, free, free, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// The mounted filesystem; `cut` simulates a power cut and remounts what survived.
pub struct PowerCutFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl PowerCutFs {
    /// Mounts an empty filesystem on `mountpoint` (an existing, empty directory).
    pub fn mount(mountpoint: &Path) -> io::Result<Self> {
        let state = Arc::new(Mutex::new(State::new()));
        let mut fs = PowerCutFs {
            state,
            mountpoint: mountpoint.to_path_buf(),
            session: None,
        };
        fs.session = Some(fs.spawn()?);
        Ok(fs)
    }

    fn spawn(&self) -> io::Result<fuser::BackgroundSession> {
        let mut cfg = Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("powercut".into()),
            MountOption::Subtype("powercut".into()),
        ];
        fuser::spawn_mount(Fs(self.state.clone()), &self.mountpoint, &cfg)
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A power cut: unmounts (every process using the mount must be gone), drops everything not
    /// synced (tearing the last unsynced write when `tear` is given), and mounts what survived.
    pub fn cut(&mut self, tear: Option<&mut dyn rand::RngCore>) -> io::Result<CutReport> {
        self.st().dead = true;
        self.unmount()?;
        let report = {
            let mut st = self.st();
            (st.held, st.dead) = (false, false);
            st.cut(tear)
        };
        self.session = Some(self.spawn()?);
        Ok(report)
    }

    /// Unmounts, retrying briefly while the kernel still holds the last files of a killed process.
    pub fn unmount(&mut self) -> io::Result<()> {
        let Some(s) = self.session.take() else {
            return Ok(());
        };
        s.umount_and_join()
    }

    /// Limits file data to `bytes` in total (writes beyond fail with ENOSPC); None lifts it.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.st().capacity = bytes;
    }

    /// Makes every file fsync take `d` before its data becomes durable (an SD card takes
    /// milliseconds), so that cuts can land between a write and the end of its fsync.
    pub fn set_fsync_delay(&self, d: Duration) {
        self.st().fsync_delay = d;
    }

    /// The power goes: fsyncs in flight (held ones included) fail and make nothing durable, so a
    /// killed program's last fsync cannot keep its process (and the mount) alive.
    pub fn power_off(&self) {
        self.st().dead = true;
    }

    /// Holds (true) or releases fsyncs that complete while the test looks at a frozen program.
    pub fn hold(&self, on: bool) {
        self.st().held = on;
    }

    /// Names in the filesystem now (current view).
    pub fn paths(&self) -> Vec<String> {
        self.st().paths(true)
    }

    /// Whether anything is waiting for an fsync, and what: (files, dirs) with unsynced changes.
    pub fn pending(&self) -> (Vec<String>, Vec<String>) {
        let st = self.st();
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for n in st.nodes.values() {
            match &n.kind {
                Kind::File { data, synced } if data != synced => {
                    files.push(n.name.to_string_lossy().into_owned())
                }
                Kind::Dir { entries, synced } if entries != synced => {
                    dirs.push(n.name.to_string_lossy().into_owned())
                }
                _ => {}
            }
        }
        (files, dirs)
    }

    /// Files whose unsynced changes rewrite bytes that were synced (rather than only append):
    /// (name, offset of the first rewritten byte; `None`: the file was cut shorter). For sled's
    /// log that is a freed segment being reused or the file truncated (the end of its segment
    /// cleanup), or its tail rewritten after a recovery.
    pub fn overwritten(&self) -> Vec<(String, Option<usize>)> {
        let st = self.st();
        let mut out = Vec::new();
        for n in st.nodes.values() {
            if let Kind::File { data, synced } = &n.kind {
                let common = data.len().min(synced.len());
                // Slice compares (memcmp) first: this runs while the program is frozen.
                let first = (data[..common] != synced[..common]).then(|| {
                    let chunk = (0..common)
                        .step_by(4096)
                        .find(|&i| {
                            let e = (i + 4096).min(common);
                            data[i..e] != synced[i..e]
                        })
                        .unwrap_or(0);
                    let e = (chunk + 4096).min(common);
                    chunk
                        + data[chunk..e]
                            .iter()
                            .zip(&synced[chunk..e])
                            .position(|(a, b)| a != b)
                            .unwrap_or(0)
                });
                if data.len() < synced.len() {
                    out.push((n.name.to_string_lossy().into_owned(), None));
                } else if first.is_some() {
                    out.push((n.name.to_string_lossy().into_owned(), first));
                }
            }
        }
        out
    }

    pub fn ops(&self) -> Ops {
        self.st().ops
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("powercut: unmount {}: {e}", self.mountpoint.display());
        }
    }
}

/// Whether a FUSE filesystem can be mounted here; Err says why not.
pub fn can_mount() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist".into());
    }
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(1)
        != 0
    {
        return Err("not running as root".into());
    }
    let probe = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let fs = PowerCutFs::mount(probe.path()).map_err(|e| format!("mount: {e}"))?;
    drop(fs);
    Ok(())
}
