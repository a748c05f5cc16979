//! Two jobs:
//! - the git commit `warden --version` shows (`WARDEN_GIT_COMMIT`): `git rev-parse` when this
//!   source is a git checkout of its own, else "unknown" (a crates tarball, `cargo package`);
//! - with the `demo` feature only, the example plugin `warden demo` runs
//!   (plugins/mailbox-report), built for wasm32-wasip2 and left in OUT_DIR, so the demo works
//!   from any directory. Without the feature nothing is built for wasm: the product installs on
//!   a machine without that target.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.join("../..");
    println!("cargo:rerun-if-changed=build.rs");
    git_commit(&root);
    if env::var_os("CARGO_FEATURE_DEMO").is_some() {
        demo_plugin(&root);
    }
}

/// Runs git in `dir`; its trimmed stdout, or `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn git_commit(root: &Path) {
    // Only our own checkout counts: a tarball unpacked inside some other repository must not
    // report that repository's commit.
    let own_checkout = git(root, &["rev-parse", "--show-toplevel"])
        .zip(root.canonicalize().ok())
        .is_some_and(|(top, root)| Path::new(&top).canonicalize().ok() == Some(root));
    let commit = own_checkout
        .then(|| git(root, &["rev-parse", "--short=12", "HEAD"]))
        .flatten();
    if own_checkout {
        // A new commit or checkout changes HEAD (a branch name) or the ref it names.
        let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
        watched.extend(git(root, &["symbolic-ref", "-q", "HEAD"]));
        for name in watched {
            if let Some(path) = git(
                root,
                &["rev-parse", "--path-format=absolute", "--git-path", &name],
            ) {
                // Only files that exist: cargo reruns a script whose watched path is missing on
                // every build (the loose ref's deletion when git packs it still triggers one).
                if Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
    }
    println!(
        "cargo:rustc-env=WARDEN_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}

fn demo_plugin(root: &Path) {
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
             Install the target with `rustup target add wasm32-wasip2`, or build warden without \
             the `demo` feature to leave the demo out."
        ),
    }
    let built = target_dir.join("wasm32-wasip2/release/mailbox_report.wasm");
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("mailbox_report.wasm");
    std::fs::copy(&built, &out)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), out.display()));
}
