//! Tenant resolution. Order: host map (exact, then the longest `*.suffix`),
//! then path prefixes (the most specific, on the request's canonical path:
//! every reading must agree), then the tenant header only when the profile
//! marks it trusted, else the default tenant.

use crate::path::{PathPattern, PathRules, RequestPath};
use hashbrown::HashMap;
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

#[derive(Debug, Clone)]
pub struct Tenancy {
    pub(crate) exact_hosts: HashMap<String, Slot>,
    /// `(".globex.example", slot)`, longest suffix first.
    pub(crate) wildcard_hosts: Vec<(String, Slot)>,
    pub(crate) path_prefixes: PathRules<Slot>,
    pub(crate) header: Option<TenantHeader>,
    pub(crate) by_name: HashMap<String, Slot>,
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
                return (*slot, Source::Host);
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
                let slot = self.by_name.get(value).copied().unwrap_or(self.other_slot);
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
