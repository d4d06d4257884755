//! Client addresses: Envoy's `source.address` property and CIDR ranges.

use std::net::{IpAddr, SocketAddr};

/// Parses Envoy's `source.address` (`1.2.3.4:5678`, `[::1]:80`, or a bare
/// address). IPv4-mapped IPv6 addresses become IPv4 so v4 ranges match them.
pub fn parse_source_address(text: &str) -> Option<IpAddr> {
    let ip = match text.parse::<SocketAddr>() {
        Ok(sa) => sa.ip(),
        Err(_) => text.parse::<IpAddr>().ok()?,
    };
    Some(canonical(ip))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The address as key material (`4:0a000001`, `6:` + 32 hex digits): one
/// text per address, cheaper than the RFC 5952 text, and without linking
/// `Display for Ipv6Addr` into modules that never print an address.
pub fn key_text(ip: IpAddr) -> String {
    // The octets in order are the address as one big-endian number.
    let (family, value, digits) = match ip {
        IpAddr::V4(a) => ('4', u128::from(u32::from(a)), 8),
        IpAddr::V6(a) => ('6', u128::from(a), 32),
    };
    let mut out = String::with_capacity(2 + digits);
    out.push(family);
    out.push(':');
    crate::digits::push_hex(&mut out, value, digits);
    out
}

/// An address range such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    V4 { network: u32, mask: u32 },
    V6 { network: u128, mask: u128 },
}

impl Cidr {
    /// Parses `addr/len`, or a bare address as a single-host range. Host bits
    /// set below the prefix are rejected: `10.0.0.1/8` is almost always a typo.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("\"{text}\" is not an IP address or CIDR range"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u32 = match len {
            None => max,
            Some(l) => match l.parse::<u32>() {
                Ok(n) if n <= max && !l.starts_with('+') => n,
                _ => return Err(format!("\"{text}\": prefix length must be 0..={max}")),
            },
        };
        let cidr = match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                let bits = u32::from(v4);
                if bits & !mask != 0 {
                    return Err(format!("\"{text}\" has host bits set below /{len}"));
                }
                Cidr::V4 {
                    network: bits,
                    mask,
                }
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                let bits = u128::from(v6);
                if bits & !mask != 0 {
                    return Err(format!("\"{text}\" has host bits set below /{len}"));
                }
                Cidr::V6 {
                    network: bits,
                    mask,
                }
            }
        };
        Ok(cidr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, canonical(ip)) {
            (Cidr::V4 { network, mask }, IpAddr::V4(v4)) => u32::from(v4) & mask == *network,
            (Cidr::V6 { network, mask }, IpAddr::V6(v6)) => u128::from(v6) & mask == *network,
            _ => false,
        }
    }
}

/// The downstream address, fetched from the host only if a core asks for it
/// (a property read is a hostcall most requests do not need).
pub struct SourceAddress {
    cached: Option<Option<IpAddr>>,
    fetch: fn() -> Option<IpAddr>,
}

impl SourceAddress {
    pub fn lazy(fetch: fn() -> Option<IpAddr>) -> Self {
        SourceAddress {
            cached: None,
            fetch,
        }
    }

    /// A known address (native tests) or a known absence.
    pub fn known(ip: Option<IpAddr>) -> Self {
        SourceAddress {
            cached: Some(ip),
            fetch: || None,
        }
    }

    pub fn get(&mut self) -> Option<IpAddr> {
        *self.cached.get_or_insert_with(self.fetch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn key_texts_are_one_per_address_and_family() {
        assert_eq!(key_text(ip("10.0.0.1")), "4:0a000001");
        assert_eq!(
            key_text(ip("2001:db8::ff")),
            "6:20010db80000000000000000000000ff"
        );
        // The same bits in the two families stay distinct.
        assert_ne!(key_text(ip("0.0.0.1")), key_text(ip("::1")));
        assert_eq!(
            key_text(parse_source_address("[::ffff:10.0.0.1]:80").unwrap()),
            "4:0a000001"
        );
    }

    #[test]
    fn source_addresses_parse_with_or_without_port() {
        assert_eq!(
            parse_source_address("127.0.0.1:5678"),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(parse_source_address("[::1]:80"), Some(ip("::1")));
        assert_eq!(parse_source_address("10.1.2.3"), Some(ip("10.1.2.3")));
        assert_eq!(
            parse_source_address("[::ffff:10.0.0.1]:1"),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(parse_source_address("pipe:/x"), None);
        assert_eq!(parse_source_address(""), None);
    }

    #[test]
    fn ranges_match_by_prefix() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.7")));
        assert!(!c.contains(ip("::1")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
    }

    #[test]
    fn bad_ranges_are_explained() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/8",
            "banana",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "::/129",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
