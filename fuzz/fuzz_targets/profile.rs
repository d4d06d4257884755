//! The profile document: every filter's validation, as `on_configure` runs it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = meshware_cli::validate_profile(data);
});
