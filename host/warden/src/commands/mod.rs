//! One module per subcommand.

pub mod audit;
#[cfg(feature = "embedded-emulator")]
pub mod demo;
pub mod doctor;
pub mod invoke;
pub mod plugin;
pub mod policy;
pub mod repl;
pub mod run;
pub mod script;
pub mod token;
