//! Entries of `auth.trusted_proxies`: an address (`10.0.0.5`, `::1`) or a CIDR range
//! (`10.0.0.0/8`, `fd00::/8`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A range of IP addresses in CIDR form; a bare address is the range of that one address.
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`, what a dual-stack socket reports for an
/// IPv4 peer) are matched as the IPv4 addresses they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// The range of `prefix` leading bits of `network`, whose other bits must be zero (a
    /// range written `10.0.0.5/8` is more likely a mistake than a way to say `10.0.0.0/8`).
    pub fn new(network: IpAddr, prefix: u8) -> Result<IpRange, String> {
        // An IPv4-mapped range (`::ffff:10.0.0.0/104`) is the IPv4 range it maps.
        let (network, prefix) = match (network, network.to_canonical()) {
            (IpAddr::V6(_), v4 @ IpAddr::V4(_)) if prefix >= 96 => (v4, prefix - 96),
            _ => (network, prefix),
        };
        let bits = Self::width(network);
        if prefix > bits {
            return Err(format!("prefix /{prefix} is longer than {bits} bits"));
        }
        let range = IpRange { network, prefix };
        if range.masked(network) != network {
            return Err(format!(
                "{network}/{prefix} has bits set past the prefix; the range is {}/{prefix}",
                range.masked(network)
            ));
        }
        Ok(range)
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }

    fn width(ip: IpAddr) -> u8 {
        if ip.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// `ip` with the bits past the prefix cleared (`ip` of the range's family).
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

impl From<IpAddr> for IpRange {
    fn from(ip: IpAddr) -> IpRange {
        let ip = ip.to_canonical();
        IpRange {
            network: ip,
            prefix: Self::width(ip),
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<IpRange, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or a CIDR range (10.0.0.0/8)"))?;
        match prefix {
            None => Ok(IpRange::from(addr)),
            Some(prefix) => {
                let prefix: u8 = prefix
                    .parse()
                    .map_err(|_| format!("`{text}`: the prefix length is not a number"))?;
                IpRange::new(addr, prefix).map_err(|e| format!("`{text}`: {e}"))
            }
        }
    }
}

/// `10.0.0.0/8`, or the bare address for a single one, as it is written in the settings.
impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == Self::width(self.network) {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

impl Serialize for IpRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IpRange, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = IpRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address or a CIDR range, e.g. \"10.0.0.0/8\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<IpRange, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn range(text: &str) -> IpRange {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_contain_their_addresses_only() {
        let private = range("10.0.0.0/8");
        assert!(private.contains(ip("10.0.0.0")));
        assert!(private.contains(ip("10.233.64.17")));
        assert!(private.contains(ip("10.255.255.255")));
        assert!(!private.contains(ip("11.0.0.0")));
        assert!(!private.contains(ip("9.255.255.255")));

        let net = range("172.16.0.0/12");
        assert!(net.contains(ip("172.31.255.1")));
        assert!(!net.contains(ip("172.32.0.1")));

        let v6 = range("fd00::/8");
        assert!(v6.contains(ip("fd12:3456::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")), "no match across families");
        assert!(
            !private.contains(ip("fd00::a00:1")),
            "no match across families"
        );
    }

    #[test]
    fn a_bare_address_is_a_range_of_one() {
        let one = range("10.0.0.5");
        assert!(one.contains(ip("10.0.0.5")));
        assert!(!one.contains(ip("10.0.0.6")));
        assert_eq!(one, range("10.0.0.5/32"));
        assert!(range("::1").contains(ip("::1")));
        assert!(!range("::1").contains(ip("::2")));
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_match_as_ipv4() {
        assert!(range("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(range("::ffff:10.0.0.5").contains(ip("10.0.0.5")));
        assert!(range("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
    }

    #[test]
    fn zero_and_full_prefixes() {
        assert!(range("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(range("::/0").contains(ip("2001:db8::1")));
        assert!(!range("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(range("2001:db8::1/128").contains(ip("2001:db8::1")));
    }

    #[test]
    fn malformed_entries_are_refused_with_a_reason() {
        for (text, reason) in [
            ("10.0.0.5/8", "the range is 10.0.0.0/8"),
            ("10.0.0.0/33", "longer than 32 bits"),
            ("fd00::/129", "longer than 128 bits"),
            ("10.0.0.0/x", "not a number"),
            ("10.0.0.0/", "not a number"),
            ("proxy.example.com", "not an IP address"),
            ("10.0.0", "not an IP address"),
            ("", "not an IP address"),
        ] {
            let err = text.parse::<IpRange>().expect_err(text);
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn written_back_as_read() {
        for text in [
            "10.0.0.0/8",
            "10.0.0.5",
            "fd00::/8",
            "::1",
            "192.168.0.0/16",
        ] {
            assert_eq!(range(text).to_string(), text);
        }
        assert_eq!(range("::ffff:10.0.0.5").to_string(), "10.0.0.5");
        let json = serde_json::to_string(&vec![range("10.0.0.0/8"), range("::1")]).unwrap();
        assert_eq!(json, r#"["10.0.0.0/8","::1"]"#);
        let back: Vec<IpRange> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![range("10.0.0.0/8"), range("::1")]);
        assert!(serde_json::from_str::<IpRange>("8").is_err());
    }
}
