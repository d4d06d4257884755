//! traceparent / tracestate / b3 / uber-trace-id / x-request-id values.
#![no_main]
use trace_context::trace::*;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(tp) = parse_traceparent(&text) {
        // What we render must parse back to the same context.
        let again = parse_traceparent(&tp.render()).expect("rendered traceparent parses");
        assert_eq!(again.trace_id, tp.trace_id);
    }
    let _ = clean_tracestate(text.split('\n'));
    let _ = parse_b3_single(&text);
    let _ = parse_uber(&text);
    let _ = valid_request_id(&text);
    let headers = meshware_common::Headers::new(
        text.split('\n')
            .zip(["x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"])
            .map(|(v, k)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let _ = parse_b3_multi(&headers);
});
