//! The command-line conventions, through the real `warden` binary: `--version` names the git
//! commit, `warden completions SHELL` prints a script the shell accepts, colour only on a
//! terminal and never under `NO_COLOR`, and a product build's `warden demo` names the feature.

use crate::support::{text, warden};
use std::path::Path;
use std::process::Command;

/// The commit build.rs should have found: `git rev-parse` of this checkout, else "unknown".
fn expected_commit() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let own_checkout = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| Path::new(&top).canonicalize().ok() == root.canonicalize().ok());
    own_checkout
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten()
        .unwrap_or_else(|| "unknown".to_owned())
}

#[tokio::test]
async fn version_names_the_git_commit() {
    let expected = format!(
        "warden {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        expected_commit()
    );
    for flag in ["--version", "-V"] {
        let output = warden(&[flag], &[]).await;
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{flag}: {stderr}");
        assert_eq!(stdout, expected, "{flag}");
    }
}

#[tokio::test]
async fn completions_are_printed_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let output = warden(&["completions", shell], &[]).await;
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{shell}: {stderr}");
        for word in ["warden", "invoke", "policy", "completions", "verbose"] {
            assert!(
                stdout.contains(word),
                "{shell}'s script lacks {word}:\n{stdout}"
            );
        }
    }
}

#[tokio::test]
async fn bash_completes_subcommands_and_their_flags() {
    let script = warden(&["completions", "bash"], &[]).await;
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warden.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    // What bash does on TAB: set the words and the cursor, call the registered function.
    let complete = |words: &str, cword: usize| {
        let program = format!(
            "source {file:?} && words=({words}) && COMP_WORDS=(\"${{words[@]}}\") && \
             COMP_CWORD={cword} && COMP_LINE=\"${{words[*]}}\" && COMP_POINT=${{#COMP_LINE}} && \
             _warden warden \"${{words[$COMP_CWORD]}}\" \"${{words[$COMP_CWORD-1]}}\" && \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let output = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &program])
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let subcommands = complete("warden inv", 1);
    assert_eq!(subcommands.trim(), "invoke", "warden inv<TAB>");
    let flags = complete("warden completions ''", 2);
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(
            flags.lines().any(|l| l == shell),
            "warden completions <TAB> lacks {shell}: {flags}"
        );
    }
}

#[tokio::test]
async fn completions_for_an_unknown_shell_name_the_choices() {
    let output = warden(&["completions", "tcsh"], &[]).await;
    let (_, stderr) = text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("tcsh") && stderr.contains("bash") && stderr.contains("powershell"),
        "{stderr}"
    );
}

#[tokio::test]
async fn no_colour_when_stdout_is_not_a_terminal() {
    // Unconfigured, doctor prints a table with a FAIL row: the one coloured cell.
    let output = warden(&["doctor", "--no-exchange"], &[]).await;
    let (stdout, stderr) = text(&output);
    assert!(stdout.contains("FAIL"), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains('\x1b'),
        "colour codes in piped output: {stdout:?}"
    );
}

/// `warden ARGS` with stdout on a pseudo-terminal; what it wrote there.
#[cfg(unix)]
fn on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> String {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use std::io::Read;
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("COLUMNS", "200")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(terminal)
        .stderr(std::process::Stdio::null());
    // The child holds the only handle of the terminal's other end (moved into the command and
    // dropped with it), so reading ends when the child exits.
    let mut child = command.spawn().expect("warden runs");
    drop(command);
    let mut master = std::fs::File::from(master);
    let mut shown = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match master.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => shown.extend_from_slice(&buffer[..n]),
            // Linux answers EIO once the last handle of the other end is closed.
            Err(_) => break,
        }
    }
    child.wait().unwrap();
    String::from_utf8_lossy(&shown).into_owned()
}

#[cfg(unix)]
#[test]
fn colour_on_a_terminal_unless_no_color_is_set() {
    let coloured = on_a_terminal(&["doctor", "--no-exchange"], &[]);
    assert!(coloured.contains("FAIL"), "{coloured:?}");
    assert!(
        coloured.contains('\x1b'),
        "no colour on a terminal (the test would prove nothing): {coloured:?}"
    );
    for value in ["1", "true", "0"] {
        let plain = on_a_terminal(&["doctor", "--no-exchange"], &[("NO_COLOR", value)]);
        assert!(plain.contains("FAIL"), "{plain:?}");
        assert!(
            !plain.contains('\x1b'),
            "NO_COLOR={value} still coloured: {plain:?}"
        );
    }
    // Empty means unset (no-color.org).
    let empty = on_a_terminal(&["doctor", "--no-exchange"], &[("NO_COLOR", "")]);
    assert!(empty.contains('\x1b'), "{empty:?}");
    // clap's help follows the same rule.
    let help = on_a_terminal(&["--help"], &[("NO_COLOR", "1")]);
    assert!(help.contains("Usage") && !help.contains('\x1b'), "{help:?}");
}

/// The product build (no `demo` feature) answers `warden demo` with the build that has it.
#[cfg(not(feature = "demo"))]
#[tokio::test]
async fn product_demo_names_the_feature() {
    let output = warden(&["demo"], &[]).await;
    let (_, stderr) = text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cargo run -p warden --features demo -- demo"),
        "{stderr}"
    );
}
