//! warden-psrp's decoders on arbitrary input: SOAP answers and requests, fragment streams,
//! PSRP messages and CLIXML. Never panics; whatever is accepted survives a rebuild (an answer
//! or request rebuilt by its builder parses back equal, messages re-encode and re-fragment to
//! themselves, CLIXML reserializes stably and its JSON maps back exactly). The body lives in
//! `warden_psrp::fuzz` so plain `cargo test -p warden-psrp` runs it over `seeds/psrp_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warden_psrp::fuzz::psrp_parse(data));
