//! Peer networks in CIDR notation (`192.168.1.0/24`, `fd00::/8`, a bare address) for the TCP
//! source's `allow_from` list: parsed from the config, matched against each accepted peer.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// One network: an address and how many leading bits of it must match.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix` or a bare address (all bits). IPv4-mapped IPv6 peers match IPv4 networks.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| {
            format!("{s:?} is not an address or network (write e.g. \"192.168.1.0/24\")")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // the TCP source reads its table whole, so the error names the key itself
        Cidr::parse(&s).map_err(|e| serde::de::Error::custom(format!("allow_from: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn networks_match_their_addresses_only() {
        let lan = Cidr::parse("192.168.1.0/24").expect("lan");
        assert!(lan.contains(ip("192.168.1.77")));
        assert!(lan.contains(ip("::ffff:192.168.1.3")));
        assert!(!lan.contains(ip("192.168.2.1")));
        assert!(!lan.contains(ip("fd00::1")));
        let one = Cidr::parse("10.0.0.5").expect("bare");
        assert!(one.contains(ip("10.0.0.5")) && !one.contains(ip("10.0.0.6")));
        let any = Cidr::parse("0.0.0.0/0").expect("any");
        assert!(any.contains(ip("8.8.8.8")));
        let v6 = Cidr::parse("fd00::/8").expect("v6");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
    }

    #[test]
    fn bad_networks_say_why() {
        assert!(Cidr::parse("192.168.1.0/33")
            .unwrap_err()
            .contains("0..=32"));
        assert!(Cidr::parse("lan").unwrap_err().contains("not an address"));
        assert!(Cidr::parse("10.0.0.0/x").is_err());
    }
}
