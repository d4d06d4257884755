//! Tenant resolution. Order: host map (exact, then the longest `*.suffix`),
//! then path prefixes (the most specific, on the request's canonical path:
//! every reading must agree), then the tenant header only when the profile
//! marks it trusted, else the default tenant.

use crate::path::{PathPattern, PathRules, RequestPath};
use std::borrow::Cow;

/// Index of a tenant in the compiled profile. The last slot is "other":
/// a trusted header naming no configured tenant; it uses the default
/// tenant's settings and keeps metric cardinality bounded.
pub type Slot = usize;

/// Why a tenant was chosen (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Host,
    PathPrefix,
    Header,
    Default,
    /// The path's readings name different tenants: the request is refused.
    AmbiguousPath,
}

#[derive(Debug, Clone)]
pub struct TenantHeader {
    pub name: String,
    pub trusted: bool,
}

/// Names and their slots, sorted by name, found by binary search. Not a
/// hash map: the names are configured and few, and hashing strings linked
/// foldhash's string hashing and a table instance (about 4 KB) into every
/// module (docs/PERFORMANCE.md, "Module sizes").
#[derive(Debug, Clone, Default)]
pub struct Names(Vec<(String, Slot)>);

impl Names {
    /// The table of `pairs`, whose names are distinct (a JSON object's
    /// keys; the tenants' names).
    pub fn new(mut pairs: Vec<(String, Slot)>) -> Names {
        crate::order::sort_by(&mut pairs, |a, b| by_length_then_text(&a.0, &b.0).is_lt());
        Names(pairs)
    }

    pub fn get(&self, name: &str) -> Option<Slot> {
        let at = self
            .0
            .binary_search_by(|(n, _)| by_length_then_text(n, name))
            .ok()?;
        self.0.get(at).map(|(_, slot)| *slot)
    }
}

/// The table's order: shorter names first, so most comparisons on the
/// request path are of two lengths, not of two texts.
fn by_length_then_text(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[derive(Debug, Clone)]
pub struct Tenancy {
    pub(crate) exact_hosts: Names,
    /// `(".globex.example", slot)`, longest suffix first.
    pub(crate) wildcard_hosts: Vec<(String, Slot)>,
    pub(crate) path_prefixes: PathRules<Slot>,
    pub(crate) header: Option<TenantHeader>,
    pub(crate) by_name: Names,
    pub(crate) default_slot: Slot,
    pub(crate) other_slot: Slot,
}

/// `Shop.Acme.Example:8443.` -> `shop.acme.example`; `[::1]:80` -> `[::1]`.
pub fn normalize_host(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    crate::headers::lowercase(host.strip_suffix('.').unwrap_or(host))
}

impl Tenancy {
    pub fn header(&self) -> Option<&TenantHeader> {
        self.header.as_ref()
    }

    pub fn default_slot(&self) -> Slot {
        self.default_slot
    }

    pub fn other_slot(&self) -> Slot {
        self.other_slot
    }

    /// The path prefixes and their tenants (for the CLI's renderings).
    pub fn path_prefixes(&self) -> impl Iterator<Item = &(PathPattern, Slot)> {
        self.path_prefixes.iter()
    }

    /// Resolves the tenant of one request from its `:authority`, `:path` and
    /// the tenant header's value.
    pub fn resolve(
        &self,
        authority: Option<&str>,
        path: &RequestPath,
        header_value: Option<&str>,
    ) -> (Slot, Source) {
        if let Some(authority) = authority {
            let host = normalize_host(authority);
            if let Some(slot) = self.exact_hosts.get(host.as_ref()) {
                return (slot, Source::Host);
            }
            for (suffix, slot) in &self.wildcard_hosts {
                if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                    return (*slot, Source::Host);
                }
            }
        }
        if !self.path_prefixes.is_empty() {
            let mut each = self.path_prefixes.best_each(path);
            let first = each.next().flatten().copied();
            if each.any(|s| s.copied() != first) {
                return (first.unwrap_or(self.default_slot), Source::AmbiguousPath);
            }
            if let Some(slot) = first {
                return (slot, Source::PathPrefix);
            }
        }
        if let (Some(h), Some(value)) = (&self.header, header_value) {
            if h.trusted {
                let value = value.trim();
                let slot = self.by_name.get(value).unwrap_or(self.other_slot);
                return (slot, Source::Header);
            }
        }
        (self.default_slot, Source::Default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_are_found_by_binary_search() {
        let mut rng = 0x2545f4914f6cdd1du64;
        for n in 0..60 {
            let mut model = std::collections::HashMap::new();
            for slot in 0..n {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                model.entry(format!("t{}", rng % 40)).or_insert(slot);
            }
            let names = Names::new(model.iter().map(|(k, v)| (k.clone(), *v)).collect());
            for i in 0..45 {
                let name = format!("t{i}");
                assert_eq!(names.get(&name), model.get(&name).copied(), "{name} of {n}");
            }
            assert_eq!(names.get(""), None);
        }
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(
            normalize_host("Shop.Acme.Example:8443"),
            "shop.acme.example"
        );
        assert_eq!(normalize_host("shop.acme.example."), "shop.acme.example");
        assert_eq!(normalize_host("SHOP.acme.example.:80"), "shop.acme.example");
        assert_eq!(normalize_host("[::1]:10000"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host("localhost"), "localhost");
    }
}
