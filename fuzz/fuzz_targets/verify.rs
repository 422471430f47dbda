//! See `checks::check_verify` for the properties; docs/FUZZING.md for how to run.
#![no_main]

mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::check_verify(data);
});
