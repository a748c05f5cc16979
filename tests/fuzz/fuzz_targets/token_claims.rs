//! What warden-auth decodes from Entra on arbitrary input: the access token's claims (decode,
//! diagnose, a pre-acquired token's lifetime) and the token endpoint's success and error
//! bodies. Never panics; a diagnosis is consistent, names a fix for each failure and never
//! carries the token's signature; an error never carries the token. The body lives in
//! `warden_auth::fuzz` so plain `cargo test -p warden-auth` runs it over `seeds/token_claims`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warden_auth::fuzz::token_claims(data));
