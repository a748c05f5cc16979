//! exosim's integration tests: one binary (fast linking), one module per area. Every test talks
//! to a real emulator over real HTTPS, trusting only its generated CA.

mod assertions;
mod binary;
mod config;
mod discovery;
mod errors;
mod exchange;
mod faults;
mod federation;
mod managed;
mod rps;
mod support;
mod tokens;
