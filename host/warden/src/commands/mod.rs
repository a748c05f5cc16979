//! One module per subcommand.

#[cfg(feature = "embedded-emulator")]
pub mod demo;
pub mod doctor;
pub mod invoke;
pub mod token;
