//! Integration tests of the whole: warden's crates and its binary against exosim over real
//! HTTPS. One test binary (fast linking), one module per area.

mod adhoc;
mod author_loop;
mod author_tools;
mod bad_input;
mod broker;
mod cache;
mod canaries;
mod cli;
mod cli_conventions;
mod cli_guests;
mod crate_graph;
mod credentials;
mod entra_errors;
mod exchange;
mod expected;
mod faults;
mod guests;
mod hostile;
mod hostile_policy;
mod hostile_resolve;
mod hostile_rhai;
mod hostile_terminal;
mod hostile_wasm;
mod peers;
mod pipeline;
mod plugins;
mod python_guests;
mod supervisor;
mod support;
mod transports;
