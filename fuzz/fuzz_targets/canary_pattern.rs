//! Canary's `regex` matcher against regex-lite (an independent
//! implementation): whatever pattern ours accepts, regex-lite must accept
//! and answer the same for every value; nothing panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, values) = text.split_once('\n').unwrap_or((&text, "a\u{1}b"));
    let Ok(ours) = canary::pattern::Pattern::new(pattern) else {
        return;
    };
    let oracle = match regex_lite::Regex::new(pattern) {
        Ok(re) => re,
        Err(e) => panic!("accepted {pattern:?}, regex-lite rejects it: {e}"),
    };
    for value in values.split('\u{1}') {
        assert_eq!(
            ours.is_match(value),
            oracle.is_match(value),
            "{pattern:?} on {value:?}"
        );
    }
});
