//! `warden-sdk`: write exo-warden plugins in Rust.
//!
//! A plugin is a WebAssembly component (`wasm32-wasip2`) that the warden host runs in a sandbox.
//! It holds no credential and no network access: it asks the host to run Exchange cmdlets, and
//! the host runs only what the operator's policy grants it, audits every call and hands back
//! JSON. This crate is the guest side of that contract (the WIT package
//! `warden:plugin@0.1.0` in `wit/`): the raw [`bindings`], typed helpers over them, and two
//! macros that turn a crate into a plugin.
//!
//! - [`exchange`]: [`exchange::invoke`] (all results at once), [`exchange::stream`] (one page in
//!   memory at a time), [`exchange::grants`], [`exchange::require`], [`exchange::usage`];
//!   failures are a [`CallError`].
//! - [`log`]: [`log::info`] and friends, [`log::progress`].
//! - [`Mailbox`], [`MailboxStatistics`], [`MailboxPermission`], [`RecipientPermission`]:
//!   serde types for common results.
//! - [`args::Args`]: the plugin's command line (the words after `--`).
//! - [`plugin!`]: exports your [`Plugin`] as the component's `run`.
//! - [`manifest!`]: embeds the plugin's name and the cmdlets and parameters it will call, in a
//!   `warden:manifest` custom section. The host reads it before running anything; a run gets
//!   only what the manifest declares *and* the policy grants.
//!
//! What it refuses: parameters that are not a JSON object (before a call is spent), unknown
//! command-line options (see [`args`]), and manifest strings that would not stay valid TOML
//! (a compile error).
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "shared-count"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! warden-sdk = { path = "../sdk" }
//! serde_json = "1"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```ignore
//! use warden_sdk::{exchange, log, Mailbox, Plugin};
//! use serde_json::json;
//!
//! warden_sdk::manifest! {
//!     name = "shared-count",
//!     description = "Counts shared mailboxes",
//!     cmdlets = {
//!         "Get-Mailbox" = ["RecipientTypeDetails", "ResultSize"],
//!     },
//! }
//!
//! struct SharedCount;
//!
//! impl Plugin for SharedCount {
//!     fn run(_args: Vec<String>) -> Result<String, String> {
//!         let params = json!({"RecipientTypeDetails": "SharedMailbox", "ResultSize": 500});
//!         let mut count = 0u64;
//!         for mailbox in exchange::stream::<Mailbox>("Get-Mailbox", &params).map_err(|e| e.to_string())? {
//!             mailbox.map_err(|e| e.to_string())?;
//!             count += 1;
//!         }
//!         log::info(format!("{count} shared mailboxes"));
//!         Ok(json!({"shared": count}).to_string())
//!     }
//! }
//!
//! warden_sdk::plugin!(SharedCount);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the component is
//! `target/wasm32-wasip2/release/shared_count.wasm`. Run it with
//! `warden run target/wasm32-wasip2/release/shared_count.wasm --policy policy.toml`.
// The generated code and the error type are the crate's whole public surface; keep it
// documented.
#![deny(missing_docs)]

pub mod args;
mod error;
pub mod exchange;
pub mod log;
pub mod reads;
mod types;

pub use error::CallError;
pub use exchange::{Grant, Usage};
pub use serde_json;
pub use types::{
    Mailbox, MailboxPermission, MailboxStatistics, RecipientPermission, is_system_trustee,
    parse_byte_size,
};

/// The bindings `wit_bindgen` generates from `wit/` (world `warden:plugin/plugin`). Prefer the
/// typed helpers; these are here for what they do not cover.
#[allow(missing_docs, clippy::all, reason = "generated code")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        // `plugin!` expands in the plugin's crate, so the export macro must be reachable
        // from there.
        pub_export_macro: true,
        default_bindings_module: "warden_sdk::bindings",
    });
}

/// A plugin's entry point. Export it with [`plugin!`].
pub trait Plugin {
    /// Runs the plugin. `args` are the words after `--` on the warden command line. `Ok` is the
    /// plugin's output (often JSON); `Err` is a message for the operator. Either way the run's
    /// exit status follows it.
    fn run(args: Vec<String>) -> Result<String, String>;
}

/// Exports a [`Plugin`] as the component's `run` function.
///
/// ```ignore
/// struct Report;
/// impl warden_sdk::Plugin for Report {
///     fn run(args: Vec<String>) -> Result<String, String> { Ok(args.join(" ")) }
/// }
/// warden_sdk::plugin!(Report);
/// ```
///
/// Use it once, in a `cdylib` crate. It also routes panic messages to the operator's log
/// before the component traps.
#[macro_export]
macro_rules! plugin {
    ($plugin:ty $(,)?) => {
        const _: () = {
            struct WardenExport;
            impl $crate::bindings::Guest for WardenExport {
                fn run(
                    args: ::std::vec::Vec<::std::string::String>,
                ) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                    $crate::__private::before_run();
                    <$plugin as $crate::Plugin>::run(args)
                }
            }
    $crate::bindings::export!(WardenExport with_types_in $crate::bindings);
        };
    };
}

/// Embeds the plugin's manifest (TOML) in a `warden:manifest` custom section of the component.
///
/// The host reads it to learn the plugin's name, version and the cmdlets (with parameter
/// names) it will call; a run is granted only what the manifest declares and the policy allows.
/// Declare exactly what the plugin calls, so an operator can read its needs before granting them.
///
/// The usual form builds the TOML from literals; `version` is the crate's version:
///
/// ```ignore
/// warden_sdk::manifest! {
///     name = "mailbox-report",
///     description = "Mailbox sizes as CSV or JSON",
///     cmdlets = {
///         "Get-Mailbox" = ["ResultSize"],
///         "Get-MailboxStatistics" = ["Identity"],
///     },
/// }
/// ```
///
/// which embeds
///
/// ```toml
/// name = "mailbox-report"
/// version = "0.1.0"
/// description = "Mailbox sizes as CSV or JSON"
///
/// [cmdlets]
/// "Get-Mailbox" = ["ResultSize", ]
/// "Get-MailboxStatistics" = ["Identity", ]
/// ```
///
/// An optional `reads = { "Get-Mailbox" = ["DisplayName"] }` after `cmdlets` declares the result
/// properties the plugin reads: `warden plugin inspect` flags those the grant's output shaping
/// removes, and the macro defines `WARDEN_READS` for [`reads::require`].
///
/// Strings holding `"`, `\` or a line break are a compile error (they would break the TOML).
/// To write the TOML yourself: `warden_sdk::manifest!(toml = include_str!("../manifest.toml"));`.
#[macro_export]
macro_rules! manifest {
    (
        name = $name:literal,
        description = $description:literal,
        cmdlets = { $( $cmdlet:literal = [ $( $parameter:literal ),* $(,)? ] ),* $(,)? }
        $(, reads = { $( $rcmdlet:literal = [ $( $property:literal ),* $(,)? ] ),* $(,)? } )? $(,)?
    ) => {
        const _: () = {
            $crate::__private::assert_plain($name);
            $crate::__private::assert_plain($description);
            $( $crate::__private::assert_plain($cmdlet); $( $crate::__private::assert_plain($parameter); )* )*
            $( $( $crate::__private::assert_plain($rcmdlet); $( $crate::__private::assert_plain($property); )* )* )?
        };
        $(
            /// The properties this plugin reads, per cmdlet (its manifest's `reads`), for
            /// [`warden_sdk::reads::require`].
            #[allow(dead_code, reason = "for reads::require")]
            const WARDEN_READS: &[(&str, &[&str])] = &[ $( ($rcmdlet, &[ $( $property ),* ]), )* ];
        )?
        $crate::manifest!(toml = ::core::concat!(
            "name = \"", $name, "\"\n",
            "version = \"", ::core::env!("CARGO_PKG_VERSION"), "\"\n",
            "description = \"", $description, "\"\n",
            "\n[cmdlets]\n",
            $( "\"", $cmdlet, "\" = [", $( "\"", $parameter, "\", ", )* "]\n", )*
            $( "\n[reads]\n", $( "\"", $rcmdlet, "\" = [", $( "\"", $property, "\", ", )* "]\n", )* )?
        ));
    };
    (toml = $text:expr $(,)?) => {
        const _: () = {
            const TEXT: &str = $text;
            // Emitted into the core module's custom sections; wasm-component-ld keeps it inside
            // the component's nested module, which is where the host looks.
            #[unsafe(link_section = "warden:manifest")]
            #[used]
            static MANIFEST: [u8; TEXT.len()] = $crate::__private::bytes::<{ TEXT.len() }>(TEXT);
        };
    };
}

/// Support for the macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::sync::Once;

    /// Copies `text` into an array, at compile time.
    pub const fn bytes<const N: usize>(text: &str) -> [u8; N] {
        let src = text.as_bytes();
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            out[i] = src[i];
            i += 1;
        }
        out
    }

    /// Fails compilation when a manifest string would need TOML escaping.
    pub const fn assert_plain(text: &str) {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            assert!(
                !matches!(b[i], b'"' | b'\\' | b'\n' | b'\r'),
                "warden_sdk::manifest!: strings may not contain '\"', '\\' or line breaks"
            );
            i += 1;
        }
    }

    /// Runs once before the plugin: sends panic messages to the operator's log, once (the
    /// default hook would print them again on the captured stderr).
    pub fn before_run() {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::error(format!("plugin panicked: {info}"));
            }));
        });
    }
}
