//! Opens a serial port from `PortSettings`: resolves the path (following `/dev/serial/by-id`
//! links) or the USB identity anew at every open, and remembers which device node it got, so
//! the source notices when that node disappears or is replaced while it is open.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use super::usb;
use crate::config::{FlowControl, Parity, PortSettings};

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Missing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Usb(#[from] usb::UsbError),
    #[error("cannot open {path}: {source}{}", hint(.source))]
    Open {
        path: String,
        #[source]
        source: tokio_serial::Error,
    },
    #[error("no port configured")]
    NoPort,
}

fn hint(e: &tokio_serial::Error) -> &'static str {
    let text = e.to_string();
    if text.contains("ermission denied") {
        " (add the user to the `dialout` group; for the systemd unit, SupplementaryGroups=dialout)"
    } else if text.contains("ot permitted") {
        // EPERM: the device cgroup said no. The unit allows the Pi's serial drivers by name.
        " (under systemd: the unit's DevicePolicy=closed needs a DeviceAllow=char-<driver> rw line for this device's driver, see /proc/devices; `systemctl edit edgewatch` to add one)"
    } else if text.contains("busy") {
        " (another program has it open: a login console on the port, ModemManager, or a second edgewatch)"
    } else {
        ""
    }
}

/// The device node a port was opened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeId {
    rdev: u64,
}

/// An open port and where it came from.
pub struct Opened {
    pub stream: SerialStream,
    /// The device node behind the configured path, e.g. `/dev/ttyUSB1` or `/dev/pts/7`.
    pub node_path: PathBuf,
    node: NodeId,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("node_path", &self.node_path)
            .finish_non_exhaustive()
    }
}

/// Where the configured port is right now.
pub fn resolve(settings: &PortSettings) -> Result<PathBuf, OpenError> {
    match (&settings.path, &settings.usb) {
        (Some(p), _) => std::fs::canonicalize(p).map_err(|source| OpenError::Missing {
            path: p.clone(),
            source,
        }),
        (None, Some(id)) => Ok(usb::resolve(
            Path::new("/sys/class/tty"),
            Path::new("/dev"),
            id,
        )?),
        (None, None) => Err(OpenError::NoPort),
    }
}

fn node_of(path: &Path) -> std::io::Result<NodeId> {
    std::fs::metadata(path).map(|m| NodeId { rdev: m.rdev() })
}

/// Resolves and opens the port (exclusively), with the configured line settings, and drops
/// whatever was received before the settings took effect. Needs a tokio runtime.
pub fn open(settings: &PortSettings) -> Result<Opened, OpenError> {
    let node_path = resolve(settings)?;
    let shown = node_path.display().to_string();
    let node = node_of(&node_path).map_err(|source| OpenError::Missing {
        path: shown.clone(),
        source,
    })?;
    let data_bits = match settings.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let parity = match settings.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = match settings.stop_bits {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    let flow = match settings.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    let stream = tokio_serial::new(shown.clone(), settings.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(flow)
        .open_native_async()
        .map_err(|source| OpenError::Open {
            path: shown.clone(),
            source,
        })?;
    // Bytes received before the line settings applied may be garbled; a failure here is harmless.
    let _ = stream.clear(tokio_serial::ClearBuffer::Input);
    Ok(Opened {
        stream,
        node_path,
        node,
    })
}

impl Opened {
    /// Why the port is gone, when its device node was removed or now is another device.
    /// `configured` is the path from the config (a by-id link may have been repointed).
    pub fn gone(&self, configured: Option<&str>) -> Option<String> {
        match node_of(&self.node_path) {
            Err(_) => return Some(format!("device node {} removed", self.node_path.display())),
            Ok(n) if n != self.node => {
                return Some(format!("device node {} replaced", self.node_path.display()))
            }
            Ok(_) => {}
        }
        let link = configured?;
        match node_of(Path::new(link)) {
            Ok(n) if n == self.node => None,
            Ok(_) => Some(format!("{link} now points to another device")),
            Err(_) => Some(format!("{link} removed")),
        }
    }
}
