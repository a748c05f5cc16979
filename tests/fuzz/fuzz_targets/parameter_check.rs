//! Grant::check on arbitrary input (first line: cmdlet, rest: parameter JSON) against a fixed
//! sample policy: never panics, and an allowed call stays within the policy. The body lives in
//! `warden_policy::fuzz` so plain `cargo test -p warden-policy` runs it over
//! `seeds/parameter_check` too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warden_policy::fuzz::parameter_check(data));
