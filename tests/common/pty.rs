//! Real pseudo-terminal pairs for serial tests: edgewatch opens the slave side by path (or
//! through a symlink, like `/dev/serial/by-id`), the test plays the sensor on the master side.
//!
//! Both ends are opened close-on-exec: a pty fd leaked into an `edgewatch` child (this test's
//! or a parallel test's) would keep the master open and hide an "unplug" from the reader.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

/// One pty pair. The test keeps a handle on the slave too (never read), so the master side
/// does not see a hang-up while edgewatch closes and reopens the port. Dropping it closes both:
/// to a reader of the slave that is an unplug.
pub struct Pty {
    master: PtyMaster,
    _slave: File,
    /// The slave's device path, e.g. `/dev/pts/7`.
    pub path: String,
}

impl Pty {
    pub fn new() -> Self {
        let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let master = posix_openpt(flags).expect("posix_openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let path = ptsname_r(&master).expect("ptsname");
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(OFlag::O_NOCTTY.bits())
            .open(&path)
            .expect("open pty slave");
        let mut t = tcgetattr(&slave).expect("tcgetattr");
        cfmakeraw(&mut t);
        tcsetattr(&slave, SetArg::TCSANOW, &t).expect("tcsetattr");
        Pty {
            master,
            _slave: slave,
            path,
        }
    }

    pub fn send(&mut self, mut bytes: &[u8]) {
        let end = Instant::now() + Duration::from_secs(10);
        while !bytes.is_empty() {
            match self.master.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("pty write: {e}"),
            }
        }
    }

    pub fn line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// Reads what the other side wrote until `needle` has been seen (returns all bytes read) or
    /// `timeout` passes (panics).
    pub fn read_until(&mut self, needle: &[u8], timeout: Duration) -> Vec<u8> {
        let end = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.windows(needle.len()).any(|w| w == needle) {
            assert!(
                Instant::now() < end,
                "no {:?} from the port within {timeout:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&got)
            );
            match self.master.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // Nothing yet; EIO while no process has the slave open.
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(5) => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("pty read: {e}"),
            }
        }
        got
    }
}

/// Points `link` at `target`, replacing what it pointed at (atomically, like udev).
pub fn relink(target: &str, link: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename symlink");
}
