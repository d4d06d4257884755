//! endpoint-guard path normalization and rule patterns.
#![no_main]
use endpoint_guard::normalize::{normalize, PathPattern};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(n) = normalize(&text, true) {
        // A normalized path has no dot segments or repeated slashes left.
        assert!(!n.contains("//"), "{n}");
        assert!(!n.split('/').any(|s| s == ".." || s == "."), "{n}");
    }
    if let Ok(p) = PathPattern::compile(&text, true) {
        let _ = p.matches("/debug/pprof");
    }
});
