//! Policy::parse on arbitrary input: never panics. The body lives in `warden_policy::fuzz` so
//! plain `cargo test -p warden-policy` runs it over `seeds/policy_parse` too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warden_policy::fuzz::policy_parse(data));
