//! What the Python and JavaScript guest tests share: the loud skip (or failure) without their
//! toolchain, copying a template as `warden plugin new` does, pinning a committed policy to a
//! built component, and the benchmark loop guest's run.

use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// A guest test whose toolchain is missing: it fails under `WARDEN_REQUIRE_GUEST_TOOLCHAINS`
/// (CI sets it), else it says so loudly and the caller returns without running.
pub fn toolchain_unavailable(test: &str, problem: &str) {
    if std::env::var_os("WARDEN_REQUIRE_GUEST_TOOLCHAINS").is_some() {
        panic!("{test}: {problem} (WARDEN_REQUIRE_GUEST_TOOLCHAINS is set)");
    }
    eprintln!(
        "\n!!! SKIPPED {test}: {problem}. Set WARDEN_REQUIRE_GUEST_TOOLCHAINS=1 to make this a failure. !!!\n"
    );
}

/// Copies the template directory `template` into `into` for the plugin `name`, as `warden
/// plugin new` does: `{{name}}` and `{{name_snake}}` replaced in file names and contents.
pub fn scaffold(template: &Path, into: &Path, name: &str) {
    let substitute = |text: &str| {
        text.replace("{{name_snake}}", &name.replace('-', "_"))
            .replace("{{name}}", name)
    };
    std::fs::create_dir_all(into).unwrap();
    for entry in std::fs::read_dir(template).unwrap() {
        let entry = entry.unwrap();
        let target = into.join(substitute(&entry.file_name().to_string_lossy()));
        if entry.file_type().unwrap().is_dir() {
            scaffold(&entry.path(), &target, name);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(target, substitute(&text)).unwrap();
        }
    }
}

/// `policy_file` with its unpinned grant (a sha256 of zeros) pinned to `wasm`, written into the
/// emulator's directory as `<name>-policy.toml`.
pub fn pinned_policy(emu: &Emulator, policy_file: &Path, wasm: &Path, name: &str) -> String {
    let zeros = "0".repeat(64);
    let text = std::fs::read_to_string(policy_file).unwrap();
    assert!(
        text.contains(&zeros),
        "{} is unpinned",
        policy_file.display()
    );
    let sha = warden_policy::sha256_hex(&std::fs::read(wasm).unwrap());
    let path = emu.dir.path().join(format!("{name}-policy.toml"));
    std::fs::write(&path, text.replace(&zeros, &sha)).unwrap();
    path.display().to_string()
}

/// `words` as the `&str`s a command takes.
pub fn strs(words: &[String]) -> Vec<&str> {
    words.iter().map(String::as_str).collect()
}

/// `warden run` of the benchmark's loop guest `wasm` asking for `count` calls, as JSON.
pub fn loop_guest_args(wasm: &Path, policy: &str, count: u32) -> Vec<String> {
    let wasm = wasm.display().to_string();
    let count = count.to_string();
    [
        "run", &wasm, "--policy", policy, "--output", "json", "--", "--count", &count,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The loop guest's run made exactly `count` calls, each one a Get-Mailbox exosim served.
pub fn assert_loop_guest_made_its_calls(out: &Output, emu: &Emulator, count: u32) {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["calls"], count, "{value}");
    assert_eq!(emu.requests_for("Get-Mailbox"), count as usize);
}
