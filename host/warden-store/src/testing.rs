//! A throwaway PostgreSQL server for tests (feature `testing`; never in the product).
//!
//! [`Postgres::start`] finds `initdb`, `pg_ctl` and `postgres` (on `PATH`, else the newest
//! `/usr/lib/postgresql/*/bin`, where Debian's package puts them), creates a cluster in a temp
//! dir with a password (so URLs carry one, as in production), starts it on a free loopback port
//! with its unix socket in the same dir, and stops it when dropped. PostgreSQL refuses to run as
//! root: as root, the server runs as the `postgres` user (Debian's package creates it), else as
//! `nobody`.
//!
//! [`Postgres::shared`] hands every test of a binary the same server while any of them holds it,
//! and [`Postgres::create_database`] gives each test a database of its own.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tempfile::TempDir;

/// The environment variable that turns "no PostgreSQL binaries: skipped" into a failure (CI
/// sets it).
pub const REQUIRE_ENV: &str = "WARDEN_REQUIRE_POSTGRES";

const SUPERUSER: &str = "warden";
/// Only a throwaway, loopback-only cluster uses it; it shows that URLs carry a password.
const PASSWORD: &str = "throwaway-test-password";

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No PostgreSQL binaries on this machine.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under \
         /usr/lib/postgresql/*/bin: install them (Debian: `apt-get install postgresql`)"
    )]
    NoBinaries,
    /// A step failed.
    #[error("starting a test PostgreSQL: {step}: {detail}")]
    Failed {
        /// What was being done.
        step: &'static str,
        /// What went wrong (the server's log when there is one).
        detail: String,
    },
}

fn failed(step: &'static str) -> impl FnOnce(std::io::Error) -> StartError {
    move |error| StartError::Failed {
        step,
        detail: error.to_string(),
    }
}

/// A running throwaway server; stopped (and its files removed) on drop.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    run_as: Option<(u32, u32)>,
}

impl Postgres {
    /// The directory holding `initdb`, `pg_ctl` and `postgres`, if this machine has them.
    pub fn find_binaries() -> Option<PathBuf> {
        find_binaries_in(std::env::var_os("PATH"), Path::new(DEBIAN_VERSIONS_DIR))
    }

    /// Starts a server, or says why it cannot.
    pub fn start() -> Result<Postgres, StartError> {
        let bin = Postgres::find_binaries().ok_or(StartError::NoBinaries)?;
        let run_as = unprivileged_user()?;
        // /tmp: the server's user can reach it (a root TMPDIR may be private), and the unix
        // socket's path stays under its 107-byte limit.
        let dir = tempfile::Builder::new()
            .prefix("warden-pg")
            .tempdir_in("/tmp")
            .map_err(failed("creating the temp dir"))?;
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, PASSWORD).map_err(failed("writing the password file"))?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), password_file.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(failed("giving the temp dir to the server's user"))?;
            }
        }
        let mut server = Postgres {
            bin,
            dir,
            port: 0,
            run_as,
        };
        let data = server.data_dir();
        server.run(
            "initdb",
            Command::new(server.bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
                .args(["--auth=scram-sha-256", "--pwfile"])
                .arg(&password_file),
        )?;
        // Another process may take the free port between our look and the server's bind.
        let mut last_error = None;
        for _ in 0..5 {
            server.port = free_port()?;
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=100",
                server.port,
                server.dir.path().display()
            );
            let started = server.run(
                "pg_ctl start",
                Command::new(server.bin.join("pg_ctl"))
                    .arg("start")
                    .args(["-w", "-t", "60", "-D"])
                    .arg(&data)
                    .arg("-l")
                    .arg(server.dir.path().join("server.log"))
                    .args(["-o", &options]),
            );
            match started {
                Ok(()) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(StartError::Failed {
            step: "pg_ctl start",
            detail: "no attempt".to_owned(),
        }))
    }

    /// The server every test of this binary shares while one of them holds it (started on
    /// first use, stopped when the last holder drops it); `None` (with the reason printed) when
    /// the machine has no PostgreSQL and [`REQUIRE_ENV`] is unset. Panics when it cannot start.
    pub fn shared() -> Option<Arc<Postgres>> {
        static SHARED: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(server) = shared.upgrade() {
            return Some(server);
        }
        match Postgres::start() {
            Ok(server) => {
                let server = Arc::new(server);
                *shared = Arc::downgrade(&server);
                Some(server)
            }
            Err(StartError::NoBinaries) if std::env::var_os(REQUIRE_ENV).is_none() => {
                eprintln!(
                    "skipped: {} ({REQUIRE_ENV} is unset)",
                    StartError::NoBinaries
                );
                None
            }
            Err(error) => panic!("{error}"),
        }
    }

    /// The URL of the server's `postgres` database (with the password).
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on this server (with the password).
    pub fn database_url(&self, name: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// The password in this server's URLs (tests check it never shows).
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// Creates a new, empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url())
            .await
            .expect("connect to the test server");
        let create = format!("CREATE DATABASE {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        self.database_url(&name)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, step: &'static str, command: &mut Command) -> Result<(), StartError> {
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let output: Output = command
            .current_dir(self.dir.path())
            .output()
            .map_err(failed(step))?;
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        Err(StartError::Failed {
            step,
            detail: format!(
                "{}\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                log
            ),
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let data = self.data_dir();
        let _ = self.run(
            "pg_ctl stop",
            Command::new(self.bin.join("pg_ctl"))
                .arg("stop")
                .args(["-w", "-t", "30", "-m", "fast", "-D"])
                .arg(&data),
        );
    }
}

/// Where Debian's `postgresql-<version>` packages put their binaries (`<version>/bin`).
const DEBIAN_VERSIONS_DIR: &str = "/usr/lib/postgresql";

/// The binaries' directory: the first `PATH` entry with `initdb` (followed to where a link
/// points, as Debian links single binaries into PATH), else the newest `<versions>/*/bin`.
fn find_binaries_in(path: Option<std::ffi::OsString>, versions_dir: &Path) -> Option<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|name| dir.join(name).is_file())
    };
    let on_path = path
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in on_path {
        let initdb = dir.join("initdb");
        if !initdb.is_file() {
            continue;
        }
        let real_dir = std::fs::canonicalize(&initdb)
            .ok()
            .and_then(|real| real.parent().map(Path::to_owned));
        if let Some(real_dir) = real_dir.filter(|real_dir| has_all(real_dir)) {
            return Some(real_dir);
        }
        if has_all(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(versions_dir)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_all(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `None` when not root; as root, the `postgres` user (or `nobody`) to run the server as.
fn unprivileged_user() -> Result<Option<(u32, u32)>, StartError> {
    // /proc/self belongs to the process's effective user.
    let euid = std::fs::metadata("/proc/self")
        .map_err(failed("finding who we are"))?
        .uid();
    if euid != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(failed("reading /etc/passwd"))?;
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3
                && fields[0] == wanted
                && let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse())
            {
                return Ok(Some((uid, gid)));
            }
        }
    }
    Err(StartError::Failed {
        step: "choosing a user",
        detail: "PostgreSQL refuses to run as root and there is no `postgres` or `nobody` user"
            .to_owned(),
    })
}

fn free_port() -> Result<u16, StartError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(failed("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(failed("finding a free port"))?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_install(root: &Path, dir: &str) -> PathBuf {
        let bin = root.join(dir);
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["initdb", "pg_ctl", "postgres"] {
            std::fs::write(bin.join(name), "").unwrap();
        }
        bin
    }

    #[test]
    fn binaries_are_found_on_path_or_where_debian_puts_them() {
        let root = tempfile::tempdir().unwrap();
        let versions = root.path().join("lib/postgresql");
        fake_install(&versions, "13/bin");
        let newest = fake_install(&versions, "15/bin");
        std::fs::create_dir_all(versions.join("16/bin")).unwrap(); // a half-removed version
        // Debian: nothing on PATH, the newest complete version.
        assert_eq!(find_binaries_in(None, &versions), Some(newest.clone()));
        let empty = root.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(
            find_binaries_in(Some(empty.clone().into_os_string()), &versions),
            Some(newest.clone())
        );
        // A single linked initdb on PATH leads to the directory it points into.
        let linked = root.path().join("local/bin");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(newest.join("initdb"), linked.join("initdb")).unwrap();
        let path = std::env::join_paths([empty.as_path(), linked.as_path()]).unwrap();
        assert_eq!(
            find_binaries_in(Some(path), Path::new("/nonexistent")),
            Some(std::fs::canonicalize(&newest).unwrap())
        );
        // A full install on PATH wins over the versions directory.
        let own = fake_install(root.path(), "own/bin");
        assert_eq!(
            find_binaries_in(Some(own.clone().into_os_string()), &versions),
            Some(own)
        );
        assert_eq!(find_binaries_in(None, &root.path().join("none")), None);
    }
}
