//! warden-exchange's InvokeCommand decoders on arbitrary input: the success page and the error
//! body. Never panics; a stripped page has no `@` annotation at any depth and otherwise equals
//! the kept one; an error always has a (bounded, for non-JSON bodies) message. The body lives
//! in `warden_exchange::fuzz` so plain `cargo test -p warden-exchange` runs it over
//! `seeds/exchange_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warden_exchange::fuzz::exchange_response(data));
