//! The crate graph as `cargo tree` shows it: the policy and audit crates link no network or
//! async crate, the shared vocabulary is a leaf, and the product binary (`warden` without the
//! `demo` feature) links no emulator. Offline: `cargo tree` reads Cargo.lock and the sources the
//! test build already fetched.

use std::process::Command;

/// Crates that talk to a network, run async I/O or sign with RSA: none may reach a pure crate.
const NETWORK_CRATES: &[&str] = &[
    "reqwest",
    "hyper",
    "hyper-util",
    "h2",
    "rustls",
    "tokio",
    "mio",
    "socket2",
    "rsa",
    "warden-auth",
    "warden-exchange",
];

/// The demo's emulator and what only it needs (axum and axum-server are the product's too:
/// `warden serve` listens with them).
const DEMO_CRATES: &[&str] = &["exosim", "rcgen"];

/// The names of every crate `package` links (normal dependencies, default features).
fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn assert_links_none(package: &str, forbidden: &[&str]) {
    let linked = normal_dependencies(package);
    assert!(
        linked.iter().any(|name| name == package),
        "cargo tree -p {package} listed nothing: {linked:?}"
    );
    let found: Vec<&String> = linked
        .iter()
        .filter(|name| forbidden.contains(&name.as_str()))
        .collect();
    assert!(
        found.is_empty(),
        "{package} links {found:?}; it must stay free of {forbidden:?} \
         (shared words belong in warden-vocab)"
    );
}

#[test]
fn policy_links_no_network_crate() {
    assert_links_none("warden-policy", NETWORK_CRATES);
}

#[test]
fn audit_links_no_network_crate() {
    assert_links_none("warden-audit", NETWORK_CRATES);
}

#[test]
fn vocabulary_is_a_leaf() {
    let mut linked = normal_dependencies("warden-vocab");
    linked.sort();
    linked.dedup();
    let project: Vec<&String> = linked
        .iter()
        .filter(|name| name.starts_with("warden-") && *name != "warden-vocab")
        .collect();
    assert!(project.is_empty(), "warden-vocab depends on {project:?}");
    assert_links_none("warden-vocab", NETWORK_CRATES);
}

#[test]
fn product_binary_links_no_emulator() {
    assert_links_none("warden", DEMO_CRATES);
}
