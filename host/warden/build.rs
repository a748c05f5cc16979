//! Builds the example plugin `warden demo` runs (plugins/mailbox-report) for wasm32-wasip2 and
//! leaves it in OUT_DIR, so the demo works from an installed binary and from any directory.
//! Only with the `embedded-emulator` feature (the demo's); production builds skip it.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    if env::var_os("CARGO_FEATURE_EMBEDDED_EMULATOR").is_none() {
        return;
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.join("../..");
    for input in [
        "plugins/mailbox-report",
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "sdk",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    // Guests share one target directory (the tests build theirs there too), apart from the
    // host's so the nested cargo never waits on the lock the outer one holds.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml"))
        .args(["-p", "mailbox-report"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // The outer build's flags and wrappers (clippy's, a host RUSTFLAGS) are for the host.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "building the demo plugin (plugins/mailbox-report) for wasm32-wasip2 failed ({other:?}). \
             Install the target with `rustup target add wasm32-wasip2`, or build warden with \
             --no-default-features to leave the demo out."
        ),
    }
    let built = target_dir.join("wasm32-wasip2/release/mailbox_report.wasm");
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("mailbox_report.wasm");
    std::fs::copy(&built, &out)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), out.display()));
}
