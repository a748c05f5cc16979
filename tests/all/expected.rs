//! Expected outputs kept as files under `tests/expected/` (as wasmtime keeps its disassembly
//! expectations): a test compares what it got with `tests/expected/<group>/<case>.txt` and fails
//! with a line diff; `WARDEN_TEST_BLESS=1` rewrites the file instead. Review a blessed change
//! like code: the file is the message a user reads.

use std::path::PathBuf;

/// Set to `1` to rewrite expected files from what the tests got.
pub const BLESS_VAR: &str = "WARDEN_TEST_BLESS";

/// The file holding the expected text of `case` in `group`.
pub fn expected_file(group: &str, case: &str) -> PathBuf {
    crate::support::repo_root()
        .join("tests/expected")
        .join(group)
        .join(format!("{case}.txt"))
}

/// Compares `got` with the expected file of `group`/`case`, or rewrites it when blessing.
pub fn assert_expected(group: &str, case: &str, got: &str) {
    let file = expected_file(group, case);
    if std::env::var(BLESS_VAR).as_deref() == Ok("1") {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, got).unwrap();
        return;
    }
    let Ok(want) = std::fs::read_to_string(&file) else {
        panic!(
            "{group}/{case}: no expected file {}; run with {BLESS_VAR}=1 to write it, then review it.\ngot:\n{got}",
            file.display()
        );
    };
    if want != got {
        panic!(
            "{group}/{case}: the output differs from {} (- expected, + got); if the change is \
             intended, rerun with {BLESS_VAR}=1 and review the diff:\n{}",
            file.display(),
            line_diff(&want, got)
        );
    }
}

/// A line diff by longest common subsequence (outputs here are a few lines long).
fn line_diff(want: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("- {}\n", a[i]);
            i += 1;
        } else {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        }
    }
    if want.ends_with('\n') != got.ends_with('\n') {
        out += "(the files differ in their final newline)\n";
    }
    out
}

#[test]
fn the_diff_marks_removed_and_added_lines() {
    assert_eq!(line_diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
}
