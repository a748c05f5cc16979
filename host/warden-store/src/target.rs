//! Where the store lives: `sqlite:PATH` or `postgres://…`, parsed once, and shown only without
//! its password.

use crate::StoreError;
use std::fmt;
use std::path::PathBuf;
use url::Url;

/// A parsed database URL.
pub(crate) enum Target {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL server; the URL may hold a password, so it is never displayed as given.
    Postgres(Url),
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            // `sqlite://PATH` (sqlx's spelling) and `sqlite:PATH` name the same file.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
                return Err(StoreError::BadUrl {
                    shown: url.to_owned(),
                    reason: "the store needs a file".to_owned(),
                });
            }
            return Ok(Target::Sqlite(PathBuf::from(path)));
        }
        let parsed = Url::parse(url).map_err(|error| StoreError::BadUrl {
            // url's errors never echo their input; neither do we (it may hold a password).
            shown: "(not shown: it may hold a password)".to_owned(),
            reason: error.to_string(),
        })?;
        match parsed.scheme() {
            "postgres" | "postgresql" => Ok(Target::Postgres(parsed)),
            other => Err(StoreError::BadUrl {
                shown: redact(&parsed),
                reason: format!("`{other}` is not a database the store speaks"),
            }),
        }
    }
}

/// The URL without password or query (a query may carry `password=` or key file paths).
pub(crate) fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have none to hide.
        let _ = shown.set_password(None);
    }
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Target::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_url_is_shown_without_password_or_query() {
        let target =
            Target::parse("postgres://warden:CANARY-pw@db.example:5433/warden?password=CANARY2")
                .unwrap();
        let shown = target.to_string();
        assert_eq!(shown, "postgres://warden@db.example:5433/warden");
    }

    #[test]
    fn bad_urls_name_the_fix_and_hide_the_password() {
        for url in [
            "mysql://root:CANARY-pw@localhost/db",
            "postgres://root:CANARY-pw@[::1/db",
            "sqlite:",
            "sqlite::memory:",
            "not a url CANARY-pw",
        ] {
            let error = Target::parse(url).err().expect("refused");
            let text = format!("{error} {error:?}");
            assert!(!text.contains("CANARY-pw"), "{url}: {text}");
            assert!(text.contains("use `sqlite:PATH` or `postgres://"), "{text}");
        }
    }
}
