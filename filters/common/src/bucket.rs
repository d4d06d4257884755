//! The sticky-percentage hash. Fixed forever: changing it would move users
//! between versions. Defined as
//!
//! ```text
//! bucket(salt, key) = splitmix64_finalize(fnv1a_64(salt ++ 0x00 ++ key)) mod 10000
//! ```
//!
//! FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) is simple
//! to reimplement in any language; the splitmix64 finalizer spreads its weak
//! low bits so `mod 10000` is uniform. A user is in a `p` basis-point slice
//! when `bucket < p`, so raising `p` keeps everyone who was already inside.

/// Buckets per 100%: one basis point each.
pub const BUCKETS: u32 = 10_000;

pub fn fnv1a_64(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The splitmix64 output function (Steele, Lea, Flood 2014).
pub fn splitmix64_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key's bucket in `0..BUCKETS` for one salt (a rule's experiment name).
pub fn bucket(salt: &str, key: &[u8]) -> u32 {
    let hash = splitmix64_finalize(fnv1a_64(&[salt.as_bytes(), &[0], key]));
    (hash % u64::from(BUCKETS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a_64(&[b""]), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(&[b"a"]), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_64(&[b"foobar"]), 0x85944171f73967e8);
        assert_eq!(fnv1a_64(&[b"foo", b"bar"]), 0x85944171f73967e8);
    }

    #[test]
    fn buckets_match_an_independent_implementation() {
        // Computed with a separate Python implementation of the definition
        // above (docs/CONFIG.md, `canary`), not with this code.
        for (salt, key, expected) in [
            ("v2", "alice", 7086),
            ("v2", "bob", 9939),
            ("v2", "user-42", 8523),
            ("", "alice", 806),
            ("v3", "alice", 5739),
            ("v2", "", 1730),
        ] {
            assert_eq!(bucket(salt, key.as_bytes()), expected, "{salt}/{key}");
        }
    }

    #[test]
    fn five_percent_of_many_users_is_five_percent() {
        let n = 100_000;
        let inside = (0..n)
            .filter(|i| bucket("v2", format!("user-{i}").as_bytes()) < 500)
            .count();
        let share = inside as f64 / n as f64;
        assert!((share - 0.05).abs() <= 0.003, "{share}");
    }
}
