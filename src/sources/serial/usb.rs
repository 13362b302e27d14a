//! Finds the tty of a USB serial adapter by identity (VID:PID, serial number, interface) in
//! sysfs, so a sensor is found again after it re-enumerates as another `/dev/ttyUSB*`.
//!
//! Pure over a directory tree: `resolve` takes the sysfs `class/tty` and `/dev` roots, so tests
//! run it on a fake tree. Layout read (as on Linux): `class/tty/NAME/device` links to the port's
//! device; an ancestor of it holds `bInterfaceNumber` (the USB interface), a further one
//! `idVendor`, `idProduct` and maybe `serial` (the USB device).

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::UsbId;

/// Why no single port matched.
#[derive(Debug, thiserror::Error)]
pub enum UsbError {
    #[error(
        "no serial port matches {want} (USB serial ports present: {})",
        list(present)
    )]
    NotFound { want: String, present: Vec<String> },
    #[error(
        "{want} matches several ports ({}): add `serial` or `interface` to tell them apart",
        list(matches)
    )]
    Ambiguous { want: String, matches: Vec<String> },
    #[error("cannot read {path}: {source}")]
    Sysfs {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// What sysfs says about one tty that sits on a USB device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbTty {
    /// Kernel name, e.g. `ttyUSB0`.
    pub name: String,
    pub vid: String,
    pub pid: String,
    pub serial: Option<String>,
    pub interface: Option<u8>,
}

impl UsbTty {
    fn describe(&self) -> String {
        let mut s = format!("{} = {}:{}", self.name, self.vid, self.pid);
        if let Some(x) = &self.serial {
            s.push_str(&format!(" serial {x}"));
        }
        if let Some(i) = self.interface {
            s.push_str(&format!(" interface {i}"));
        }
        s
    }

    fn matches(&self, want: &UsbId) -> bool {
        self.vid.eq_ignore_ascii_case(&want.vid)
            && self.pid.eq_ignore_ascii_case(&want.pid)
            && want
                .serial
                .as_ref()
                .is_none_or(|s| self.serial.as_ref() == Some(s))
            && want.interface.is_none_or(|i| self.interface == Some(i))
    }
}

/// Every tty under `class_tty` that sits on a USB device, sorted by name.
pub fn scan(class_tty: &Path) -> Result<Vec<UsbTty>, UsbError> {
    let entries = fs::read_dir(class_tty).map_err(|source| UsbError::Sysfs {
        path: class_tty.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Virtual ttys have no `device`; a link that no longer resolves is a port going away.
        let Ok(device) = fs::canonicalize(entry.path().join("device")) else {
            continue;
        };
        if let Some(tty) = describe(&name, &device) {
            out.push(tty);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Walks up from a port's device directory to its USB interface and device.
fn describe(name: &str, device: &Path) -> Option<UsbTty> {
    let mut interface = None;
    for dir in device.ancestors().take(8) {
        if interface.is_none() {
            interface = read(dir, "bInterfaceNumber").and_then(|s| u8::from_str_radix(&s, 16).ok());
        }
        if let (Some(vid), Some(pid)) = (read(dir, "idVendor"), read(dir, "idProduct")) {
            return Some(UsbTty {
                name: name.to_string(),
                vid: vid.to_ascii_lowercase(),
                pid: pid.to_ascii_lowercase(),
                serial: read(dir, "serial"),
                interface,
            });
        }
    }
    None
}

fn read(dir: &Path, file: &str) -> Option<String> {
    let s = fs::read_to_string(dir.join(file)).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The device node (`dev_dir/NAME`) of the one USB tty matching `want`.
pub fn resolve(class_tty: &Path, dev_dir: &Path, want: &UsbId) -> Result<PathBuf, UsbError> {
    let all = scan(class_tty)?;
    let matching: Vec<&UsbTty> = all.iter().filter(|t| t.matches(want)).collect();
    match matching.as_slice() {
        [one] => Ok(dev_dir.join(&one.name)),
        [] => Err(UsbError::NotFound {
            want: want.to_string(),
            present: all.iter().map(UsbTty::describe).collect(),
        }),
        many => Err(UsbError::Ambiguous {
            want: want.to_string(),
            matches: many.iter().map(|t| t.describe()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Builds a sysfs-like tree: USB devices with interfaces and ttys, plus a non-USB tty.
    struct FakeSys {
        dir: tempfile::TempDir,
    }

    impl FakeSys {
        fn new() -> Self {
            let s = FakeSys {
                dir: tempfile::tempdir().expect("tempdir"),
            };
            fs::create_dir_all(s.class()).expect("class");
            // A built-in UART: no USB ancestor.
            let uart = s.root().join("devices/platform/serial8250/tty/ttyS0");
            fs::create_dir_all(&uart).expect("uart");
            symlink(&uart, s.tty_dir("ttyS0")).expect("link");
            // A virtual console: no `device` at all.
            fs::create_dir_all(s.class().join("tty0")).expect("tty0");
            s
        }
        fn root(&self) -> PathBuf {
            self.dir.path().join("sys")
        }
        fn class(&self) -> PathBuf {
            self.root().join("class/tty")
        }
        fn tty_dir(&self, name: &str) -> PathBuf {
            let d = self.class().join(name);
            fs::create_dir_all(&d).expect("tty dir");
            d.join("device")
        }
        /// A USB device at `port` (e.g. "1-1.2") with a tty on interface `intf`. `acm` puts the
        /// tty's `device` link on the interface itself (cdc-acm) instead of a port below it.
        #[allow(clippy::too_many_arguments)]
        fn usb(
            &self,
            port: &str,
            vid: &str,
            pid: &str,
            serial: Option<&str>,
            intf: u8,
            tty: &str,
            acm: bool,
        ) {
            let dev = self
                .root()
                .join(format!("devices/pci0000:00/0000:00:14.0/usb1/{port}"));
            fs::create_dir_all(&dev).expect("usb dev");
            fs::write(dev.join("idVendor"), format!("{vid}\n")).expect("vid");
            fs::write(dev.join("idProduct"), format!("{pid}\n")).expect("pid");
            if let Some(s) = serial {
                fs::write(dev.join("serial"), format!("{s}\n")).expect("serial");
            }
            let iface = dev.join(format!("{port}:1.{intf}"));
            fs::create_dir_all(&iface).expect("iface");
            fs::write(iface.join("bInterfaceNumber"), format!("{intf:02x}\n")).expect("intf");
            let target = if acm { iface } else { iface.join(tty) };
            fs::create_dir_all(&target).expect("port dir");
            symlink(&target, self.tty_dir(tty)).expect("link");
        }
        fn unplug(&self, port: &str, tty: &str) {
            fs::remove_dir_all(
                self.root()
                    .join(format!("devices/pci0000:00/0000:00:14.0/usb1/{port}")),
            )
            .expect("unplug");
            fs::remove_dir_all(self.class().join(tty)).expect("class entry");
        }
        fn resolve(&self, want: &UsbId) -> Result<PathBuf, UsbError> {
            resolve(&self.class(), Path::new("/dev"), want)
        }
    }

    fn id(vid: &str, pid: &str, serial: Option<&str>, interface: Option<u8>) -> UsbId {
        UsbId {
            vid: vid.into(),
            pid: pid.into(),
            serial: serial.map(Into::into),
            interface,
        }
    }

    #[test]
    fn finds_the_adapter_by_vid_pid_and_serial() {
        let sys = FakeSys::new();
        sys.usb("1-1.2", "0403", "6001", Some("A10K1"), 0, "ttyUSB0", false);
        sys.usb("1-1.3", "0403", "6001", Some("B22X9"), 0, "ttyUSB1", false);
        sys.usb("1-1.4", "2341", "0043", Some("ARD1"), 0, "ttyACM0", true);
        assert_eq!(
            sys.resolve(&id("0403", "6001", Some("B22X9"), None))
                .expect("found"),
            PathBuf::from("/dev/ttyUSB1")
        );
        // Case of the hex digits does not matter; cdc-acm layout works too.
        assert_eq!(
            sys.resolve(&id("2341", "0043", None, None)).expect("acm"),
            PathBuf::from("/dev/ttyACM0")
        );
        let all = scan(&sys.class()).expect("scan");
        assert_eq!(
            all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["ttyACM0", "ttyUSB0", "ttyUSB1"],
            "ttyS0 and tty0 are not USB"
        );
        assert_eq!(all[0].interface, Some(0));
        assert_eq!(all[1].serial.as_deref(), Some("A10K1"));
    }

    #[test]
    fn follows_the_adapter_to_a_new_tty_number() {
        let sys = FakeSys::new();
        sys.usb("1-1.2", "10c4", "EA60", Some("0001"), 0, "ttyUSB0", false);
        let want = id("10C4", "ea60", Some("0001"), None);
        assert_eq!(
            sys.resolve(&want).expect("first"),
            PathBuf::from("/dev/ttyUSB0")
        );
        sys.unplug("1-1.2", "ttyUSB0");
        assert!(matches!(sys.resolve(&want), Err(UsbError::NotFound { .. })));
        // Replugged into another port while something else holds ttyUSB0.
        sys.usb("1-1.1", "0403", "6001", None, 0, "ttyUSB0", false);
        sys.usb("1-1.4", "10c4", "ea60", Some("0001"), 0, "ttyUSB1", false);
        assert_eq!(
            sys.resolve(&want).expect("again"),
            PathBuf::from("/dev/ttyUSB1")
        );
    }

    #[test]
    fn identical_adapters_are_ambiguous_and_interfaces_split_dual_ports() {
        let sys = FakeSys::new();
        sys.usb("1-1.2", "0403", "6010", Some("FT2"), 0, "ttyUSB0", false);
        // Second interface of the same dual-port chip.
        let iface1 = sys
            .root()
            .join("devices/pci0000:00/0000:00:14.0/usb1/1-1.2/1-1.2:1.1");
        fs::create_dir_all(iface1.join("ttyUSB1")).expect("iface1");
        fs::write(iface1.join("bInterfaceNumber"), "01\n").expect("intf");
        symlink(iface1.join("ttyUSB1"), sys.tty_dir("ttyUSB1")).expect("link");

        let e = sys
            .resolve(&id("0403", "6010", Some("FT2"), None))
            .expect_err("ambiguous");
        let msg = e.to_string();
        assert!(msg.contains("matches several ports"), "{msg}");
        assert!(
            msg.contains("ttyUSB0 = 0403:6010 serial FT2 interface 0"),
            "{msg}"
        );
        assert!(
            msg.contains("ttyUSB1 = 0403:6010 serial FT2 interface 1"),
            "{msg}"
        );
        assert_eq!(
            sys.resolve(&id("0403", "6010", None, Some(1)))
                .expect("intf 1"),
            PathBuf::from("/dev/ttyUSB1")
        );
    }

    #[test]
    fn no_match_lists_what_is_there() {
        let sys = FakeSys::new();
        sys.usb("1-1.2", "0403", "6001", Some("A10K1"), 0, "ttyUSB0", false);
        let msg = sys
            .resolve(&id("0403", "6001", Some("ZZZ"), None))
            .expect_err("none")
            .to_string();
        assert_eq!(
            msg,
            "no serial port matches usb 0403:6001 serial ZZZ (USB serial ports present: ttyUSB0 = 0403:6001 serial A10K1 interface 0)"
        );
        let e = resolve(
            Path::new("/nonexistent/sys/class/tty"),
            Path::new("/dev"),
            &id("0403", "6001", None, None),
        );
        assert!(matches!(e, Err(UsbError::Sysfs { .. })), "{e:?}");
    }
}
