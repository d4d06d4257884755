//! The canonical request path (common `path`) and rule patterns.
#![no_main]
use meshware_common::path::{PathPattern, RequestPath};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(mut p) = RequestPath::read(&text) {
        // The canonical reading has no dot segment left, and a path
        // without forms reads one way only.
        let canonical = p.canonical().path.clone();
        assert!(!canonical.split('/').any(|s| s == ".." || s == "."), "{canonical}");
        if p.forms().is_empty() {
            assert_eq!(p.readings().len(), 1);
        }
        if p.allow(&text, meshware_common::path::Forms::ALL).is_ok() {
            assert_eq!(p.readings().first().map(|r| r.path.as_str()), Some(canonical.as_str()));
        }
    }
    if let Ok(p) = PathPattern::compile(&text, false, true) {
        if let Ok(path) = RequestPath::read("/debug/pprof") {
            let _ = p.matches(path.canonical());
        }
    }
});
