//! Client addresses: Envoy's `source.address` property and CIDR ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses Envoy's `source.address` (`1.2.3.4:5678`, `[::1]:80`, or a bare
/// address). IPv4-mapped IPv6 addresses become IPv4 so v4 ranges match them.
pub fn parse_source_address(text: &str) -> Option<IpAddr> {
    let ip = match parse_socket_ip(text) {
        Some(ip) => ip,
        None => parse_ip(text)?,
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

// ---- The address texts, read and written here: std's parser and its
// IPv6 display were about 5 KB of every module (docs/PERFORMANCE.md,
// "Module sizes"). They accept exactly what `IpAddr`'s and `SocketAddr`'s
// `FromStr` accept and write what their `Display` writes; std is their
// test oracle (`tests`).

/// An address as `IpAddr::from_str` reads it: dotted IPv4 (no leading
/// zeros) or IPv6 (RFC 4291 text, an IPv4 tail allowed, no zone).
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let s = text.as_bytes();
    let mut at = 0;
    let ip = match ipv4_at(s, &mut at) {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        None => {
            at = 0;
            IpAddr::V6(Ipv6Addr::from(ipv6_at(s, &mut at)?))
        }
    };
    (at == s.len()).then_some(ip)
}

/// The address of a socket address as `SocketAddr::from_str` reads it
/// (`1.2.3.4:80`, `[::1]:80`, `[fe80::1%2]:80`).
fn parse_socket_ip(text: &str) -> Option<IpAddr> {
    let s = text.as_bytes();
    let mut at = 0;
    let ip = match ipv4_at(s, &mut at) {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        None => {
            at = 1;
            if s.first() != Some(&b'[') {
                return None;
            }
            let v6 = ipv6_at(s, &mut at)?;
            if s.get(at) == Some(&b'%') {
                at += 1;
                decimal_at(s, &mut at, u64::from(u32::MAX))?;
            }
            if s.get(at) != Some(&b']') {
                return None;
            }
            at += 1;
            IpAddr::V6(Ipv6Addr::from(v6))
        }
    };
    if s.get(at) != Some(&b':') {
        return None;
    }
    at += 1;
    decimal_at(s, &mut at, u64::from(u16::MAX))?;
    (at == s.len()).then_some(ip)
}

/// Decimal digits (leading zeros allowed) whose value is at most `max`.
fn decimal_at(s: &[u8], at: &mut usize, max: u64) -> Option<u64> {
    let start = *at;
    let mut value: u64 = 0;
    while let Some(d) = s.get(*at).filter(|b| b.is_ascii_digit()) {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        if value > max {
            return None;
        }
        *at += 1;
    }
    (*at > start).then_some(value)
}

/// `a.b.c.d`: four decimal octets, each 1 to 3 digits, no leading zero.
fn ipv4_at(s: &[u8], at: &mut usize) -> Option<u32> {
    let mut value = 0u32;
    for part in 0..4 {
        if part > 0 {
            if s.get(*at) != Some(&b'.') {
                return None;
            }
            *at += 1;
        }
        let start = *at;
        let octet = decimal_at(s, at, 255)?;
        let digits = *at - start;
        if digits > 3 || (digits > 1 && s.get(start) == Some(&b'0')) {
            return None;
        }
        value = value << 8 | octet as u32;
    }
    Some(value)
}

/// 1 to 4 hex digits.
fn hex_group_at(s: &[u8], at: &mut usize) -> Option<u16> {
    let start = *at;
    let mut value = 0u16;
    while let Some(d) = s.get(*at).and_then(|b| (*b as char).to_digit(16)) {
        if *at - start == 4 {
            return None;
        }
        value = value << 4 | d as u16;
        *at += 1;
    }
    (*at > start).then_some(value)
}

/// Colon-separated groups into `out`, as many as fit; an IPv4 tail takes
/// the last two of them and ends the list. Returns how many were read and
/// whether an IPv4 tail was among them; `at` stays after the last one read.
fn groups_at(s: &[u8], at: &mut usize, out: &mut [u16]) -> (usize, bool) {
    let limit = out.len();
    for n in 0..limit {
        let before = *at;
        if n > 0 {
            if s.get(*at) != Some(&b':') {
                return (n, false);
            }
            *at += 1;
        }
        let start = *at;
        if n + 1 < limit {
            if let Some(v4) = ipv4_at(s, at) {
                if let Some([high, low]) = out.get_mut(n..n + 2) {
                    *high = (v4 >> 16) as u16;
                    *low = v4 as u16;
                }
                return (n + 2, true);
            }
            *at = start;
        }
        match (hex_group_at(s, at), out.get_mut(n)) {
            (Some(group), Some(slot)) => *slot = group,
            _ => {
                *at = before;
                return (n, false);
            }
        }
    }
    (limit, false)
}

/// An IPv6 address: eight groups, or fewer around one `::`.
fn ipv6_at(s: &[u8], at: &mut usize) -> Option<u128> {
    let mut head = [0u16; 8];
    let (head_len, head_v4) = groups_at(s, at, &mut head);
    if head_len < 8 {
        // An IPv4 part may only end the address; `::` stands for one group
        // or more.
        if head_v4 || s.get(*at..*at + 2) != Some(b"::") {
            return None;
        }
        *at += 2;
        let mut tail = [0u16; 7];
        let (tail_len, _) = groups_at(s, at, tail.get_mut(..7 - head_len)?);
        for (slot, group) in head
            .iter_mut()
            .rev()
            .zip(tail.get(..tail_len)?.iter().rev())
        {
            *slot = *group;
        }
    }
    Some(head.iter().fold(0u128, |v, g| v << 16 | u128::from(*g)))
}

/// The address as `IpAddr`'s `Display` writes it: dotted IPv4; IPv6 in
/// RFC 5952 form (lower-case, the longest run of two or more zero groups,
/// the first of equals, as `::`), an IPv4-mapped address as
/// `::ffff:a.b.c.d`.
pub fn ip_text(ip: IpAddr) -> String {
    let mut out = String::with_capacity(39);
    match ip {
        IpAddr::V4(v4) => push_ipv4(&mut out, v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                out.push_str("::ffff:");
                push_ipv4(&mut out, v4);
                return out;
            }
            let groups = v6.segments();
            // The longest run of zero groups (the first of equals).
            let (mut best, mut best_len, mut run) = (0, 0, 0);
            for (i, g) in groups.iter().enumerate() {
                run = if *g == 0 { run + 1 } else { 0 };
                if run > best_len {
                    best_len = run;
                    best = i + 1 - run;
                }
            }
            let (zeros, zeros_end) = if best_len > 1 {
                (best, best + best_len)
            } else {
                (8, 8)
            };
            for (i, g) in groups.iter().enumerate() {
                if i == zeros {
                    out.push_str("::");
                }
                if (zeros..zeros_end).contains(&i) {
                    continue;
                }
                if i > 0 && i != zeros_end {
                    out.push(':');
                }
                let digits = (16 - g.leading_zeros()).div_ceil(4).max(1) as usize;
                crate::digits::push_hex(&mut out, u128::from(*g), digits);
            }
        }
    }
    out
}

fn push_ipv4(out: &mut String, v4: Ipv4Addr) {
    for (i, octet) in v4.octets().iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        crate::digits::push_decimal(out, u64::from(*octet));
    }
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
        let ip = parse_ip(addr)
            .ok_or_else(|| format!("\"{text}\" is not an IP address or CIDR range"))?;
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
    use std::net::SocketAddr;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A small deterministic generator for the oracle tests.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n
        }
    }

    /// Addresses with runs of zero groups, IPv4 tails and mapped forms, as
    /// std writes them, then cut, doubled and mutated character by character.
    fn corpus() -> Vec<String> {
        let mut rng = Lcg(7);
        let mut out: Vec<String> = [
            "",
            ":",
            "::",
            ":::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1::2::3",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::1.2.3.4",
            "1.2.3.4::",
            "1.2.3.4",
            "01.2.3.4",
            "1.2.3.04",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "0300.1.1.1",
            "12345::",
            "0000:0000::",
            "fFfF::",
            "g::",
            "[::1]:80",
            "[::1]",
            "[::1%3]:80",
            "[::1%]:80",
            "[::1%4294967296]:1",
            "[::1%4294967295]:1",
            "1.2.3.4:65535",
            "1.2.3.4:65536",
            "1.2.3.4:0000080",
            "1.2.3.4:",
            "1.2.3.4:+1",
            "[1.2.3.4]:1",
            "[::ffff:1.2.3.4]:1",
            "::1:",
            " ::1",
            "::1 ",
            "1:2:3:4:5:6:7:8%1",
            "::é",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..3000 {
            let mut groups = [0u16; 8];
            for g in groups.iter_mut() {
                *g = match rng.next(4) {
                    0 | 1 => 0,
                    2 => rng.next(0x10000) as u16,
                    _ => rng.next(16) as u16,
                };
            }
            let v6 = Ipv6Addr::from(groups);
            let v4 = Ipv4Addr::from((rng.next(1 << 16) as u32) << 16 | rng.next(1 << 16) as u32);
            let base = match rng.next(4) {
                0 => v4.to_string(),
                1 => v4.to_ipv6_mapped().to_string(),
                _ => v6.to_string(),
            };
            let base = match rng.next(3) {
                0 if base.contains(':') => format!("[{base}]:{}", rng.next(70_000)),
                1 if !base.contains(':') => format!("{base}:{}", rng.next(70_000)),
                _ => base,
            };
            out.push(base.clone());
            let mut bytes: Vec<u8> = base.into_bytes();
            for _ in 0..rng.next(3) + 1 {
                let at = rng.next(bytes.len() + 1);
                let pick = b"0123456789abcdefABCDEFG:.[]%0:";
                let c = pick[rng.next(pick.len())];
                match rng.next(3) {
                    0 => bytes.insert(at, c),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ if at < bytes.len() => bytes[at] = c,
                    _ => {}
                }
            }
            out.push(String::from_utf8(bytes).unwrap());
        }
        out
    }

    #[test]
    fn addresses_read_as_std_reads_them() {
        let mut accepted = (0, 0);
        for text in corpus() {
            let std_ip = text.parse::<IpAddr>().ok();
            assert_eq!(parse_ip(&text), std_ip, "IpAddr {text:?}");
            let std_socket = text.parse::<SocketAddr>().ok().map(|s| s.ip());
            assert_eq!(parse_socket_ip(&text), std_socket, "SocketAddr {text:?}");
            accepted.0 += usize::from(std_ip.is_some());
            accepted.1 += usize::from(std_socket.is_some());
        }
        // The corpus holds both sides of each reading.
        assert!(accepted.0 > 1000 && accepted.1 > 500, "{accepted:?}");
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        let mut rng = Lcg(11);
        for _ in 0..20_000 {
            let mut groups = [0u16; 8];
            for g in groups.iter_mut() {
                *g = if rng.next(2) == 0 {
                    0
                } else {
                    rng.next(0x10000) as u16
                };
            }
            let v6 = Ipv6Addr::from(groups);
            assert_eq!(ip_text(IpAddr::V6(v6)), v6.to_string());
            let v4 = Ipv4Addr::from(u128::from(v6) as u32);
            assert_eq!(ip_text(IpAddr::V4(v4)), v4.to_string());
            let mapped = v4.to_ipv6_mapped();
            assert_eq!(ip_text(IpAddr::V6(mapped)), mapped.to_string());
        }
        // RFC 5952's own examples (4.2.2: one zero group stays; 4.2.3: the
        // longest run, the first of equals; 4.3: lower case; 5: mapped).
        for (text, written) in [
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:DB8::AbCd", "2001:db8::abcd"),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
            ("0:0:0:0:0:0:0:0", "::"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("1:0:0:0:0:0:0:0", "1::"),
        ] {
            assert_eq!(ip_text(parse_ip(text).unwrap()), written, "{text}");
        }
    }

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
