//! A small parser for the words after `--` on the warden command line.
//!
//! Plugins take `--name value` options (repeatable where it makes sense) and `--flag` switches.
//! It refuses what it does not know: a misspelt option is an error naming it, never silently
//! ignored, because a provisioning plugin that drops `--send-as` does the wrong thing quietly.
//!
//! ```
//! # use warden_sdk::args::Args;
//! let mut args = Args::new(vec!["--format".into(), "csv".into(), "--limit=10".into()]);
//! let format = args.value("format")?.unwrap_or_else(|| "json".into());
//! let limit: Option<u64> = args.parsed("limit")?;
//! args.finish()?;
//! assert_eq!((format.as_str(), limit), ("csv", Some(10)));
//! # Ok::<(), String>(())
//! ```

use std::str::FromStr;

/// The remaining arguments; options are taken out as they are read.
#[derive(Debug, Clone)]
pub struct Args {
    words: Vec<String>,
}

impl Args {
    /// Wraps the arguments `run` received.
    pub fn new(words: Vec<String>) -> Self {
        Args { words }
    }

    /// Takes every `--name value` / `--name=value`, in order.
    pub fn values(&mut self, name: &str) -> Result<Vec<String>, String> {
        let flag = format!("--{name}");
        let with_eq = format!("--{name}=");
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.words.len() {
            if self.words[i] == flag {
                if i + 1 >= self.words.len() {
                    return Err(format!("{flag} needs a value"));
                }
                out.push(self.words.remove(i + 1));
                self.words.remove(i);
            } else if let Some(value) = self.words[i].strip_prefix(&with_eq) {
                out.push(value.to_owned());
                self.words.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(out)
    }

    /// Takes `--name value` given at most once.
    pub fn value(&mut self, name: &str) -> Result<Option<String>, String> {
        let mut all = self.values(name)?;
        match all.len() {
            0 => Ok(None),
            1 => Ok(all.pop()),
            _ => Err(format!(
                "--{name} was given {} times; give it once",
                all.len()
            )),
        }
    }

    /// Takes `--name value` given at most once and parses it.
    pub fn parsed<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.value(name)?
            .map(|v| {
                v.parse()
                    .map_err(|e| format!("--{name} {v:?} is not valid: {e}"))
            })
            .transpose()
    }

    /// Takes a `--name` switch; true when it was given.
    pub fn flag(&mut self, name: &str) -> bool {
        let flag = format!("--{name}");
        let before = self.words.len();
        self.words.retain(|w| *w != flag);
        self.words.len() != before
    }

    /// Fails when anything was not taken, naming it.
    pub fn finish(self) -> Result<(), String> {
        if self.words.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected argument(s): {}", self.words.join(" ")))
        }
    }
}
