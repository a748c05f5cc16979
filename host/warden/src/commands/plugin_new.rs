//! `warden plugin new --lang rust|python|js NAME`: copies the template `templates/LANG/`
//! (embedded in the binary) into `./NAME/`, replacing `{{name}}` (NAME as given) and
//! `{{name_snake}}` (with `-` → `_`) in file contents and file names. Never overwrites: an
//! existing `./NAME` is refused before anything is written.

use crate::output::{Layout, escape};
use anyhow::Context;
use clap::Args;
use include_dir::{Dir, DirEntry, include_dir};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Every template, as the repository's `templates/` holds them.
static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../templates");

/// The languages `plugin new` knows.
const LANGUAGES: &[&str] = &["rust", "python", "js"];

/// Arguments of `warden plugin new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's language: rust, python or js.
    #[arg(long, value_name = "LANG")]
    lang: String,
    /// The plugin's name (a directory of that name is created here): ASCII letters, digits,
    /// '-' and '_', starting with a letter.
    name: String,
    /// Where to create it [default: the current directory].
    #[arg(long, value_name = "DIR", default_value = ".")]
    into: PathBuf,
}

/// Checks NAME: it becomes a directory name, a package name and a grant's plugin name.
fn valid_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    anyhow::ensure!(
        ok,
        "plugin name {}: use 1-64 ASCII letters, digits, '-' and '_', starting with a letter \
         (no path separators, no `..`); it names the directory, the package and the grant",
        escape(name, Layout::Line)
    );
    Ok(())
}

fn fill(text: &str, name: &str) -> String {
    text.replace("{{name_snake}}", &name.replace('-', "_"))
        .replace("{{name}}", name)
}

/// Runs `warden plugin new`.
pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    let lang = args.lang.to_ascii_lowercase();
    anyhow::ensure!(
        LANGUAGES.contains(&lang.as_str()),
        "--lang {}: not a template language; choose one of {}",
        escape(&args.lang, Layout::Line),
        LANGUAGES.join(", ")
    );
    valid_name(&args.name)?;
    let template = TEMPLATES.get_dir(&lang).ok_or_else(|| {
        anyhow::anyhow!(
            "no template for {lang} in this build (templates/{lang}/ is not in the checkout \
             it was built from); use --lang rust, or a warden built with that template"
        )
    })?;
    let target = args.into.join(&args.name);
    // create_dir (not _all) fails on an existing directory: nothing is ever overwritten.
    std::fs::create_dir(&target).with_context(|| {
        format!(
            "{}: cannot create it (an existing directory is never overwritten)\n  fix: choose another name, or move the old one away",
            escape(&target.display().to_string(), Layout::Line)
        )
    })?;
    let mut written = 0usize;
    // Failing part-way leaves nothing behind: the directory is ours (just created), so it goes.
    if let Err(e) = copy(template, template.path(), &target, &args.name, &mut written) {
        let _ = std::fs::remove_dir_all(&target);
        return Err(e);
    }
    println!(
        "created      {} ({lang}, {written} files)",
        escape(&target.display().to_string(), Layout::Line)
    );
    println!(
        "next         cd {} and follow README.md (one build command, one run command)",
        escape(&args.name, Layout::Line)
    );
    Ok(ExitCode::SUCCESS)
}

fn copy(
    dir: &Dir<'_>,
    root: &Path,
    target: &Path,
    name: &str,
    written: &mut usize,
) -> anyhow::Result<()> {
    for entry in dir.entries() {
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let relative = PathBuf::from(fill(&relative.to_string_lossy(), name));
        let path = target.join(&relative);
        match entry {
            DirEntry::Dir(sub) => {
                std::fs::create_dir(&path)
                    .with_context(|| format!("{}: cannot create it", path.display()))?;
                copy(sub, root, target, name, written)?;
            }
            DirEntry::File(file) => {
                let bytes = match file.contents_utf8() {
                    Some(text) => fill(text, name).into_bytes(),
                    None => file.contents().to_vec(),
                };
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
                    .with_context(|| format!("{}: cannot write it", path.display()))?;
                *written += 1;
            }
        }
    }
    Ok(())
}
