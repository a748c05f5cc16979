//! A throwaway PostgreSQL server for tests (feature `testing`; never in the product).
//!
//! [`Postgres::start`] finds `initdb` and `postgres` (on `PATH`, else the newest
//! `/usr/lib/postgresql/*/bin`, where Debian's package puts them), creates a cluster in a temp
//! dir with a password (so URLs carry one, as in production), and runs `postgres` as a
//! foreground child on a free loopback port with its unix socket in the same dir. Dropping it
//! stops the server (and waits for it) before the dir is removed. PostgreSQL refuses to run as
//! root: as root, the server runs as the `postgres` user (Debian's package creates it), else as
//! `nobody`.
//!
//! A test binary may die without dropping anything (killed, or a static never dropped): a small
//! watchdog shell started with each server stops it and removes its dir once the test process
//! is gone, and each start first removes the `warden-pg*` dirs of dead test processes (stopping
//! their servers if still alive). `unsafe` (a parent-death signal) stays forbidden.
//!
//! [`Postgres::shared`] starts one server for the whole test process, and
//! [`Postgres::create_database`] gives each test a database of its own.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The environment variable that turns "no PostgreSQL binaries: skipped" into a failure (CI
/// sets it).
pub const REQUIRE_ENV: &str = "WARDEN_REQUIRE_POSTGRES";

const SUPERUSER: &str = "warden";
/// Only a throwaway, loopback-only cluster uses it; it shows that URLs carry a password.
const PASSWORD: &str = "throwaway-test-password";
/// Where the servers' dirs go, and their names' start (the stale-dir sweep looks for these).
const TEMP_ROOT: &str = "/tmp";
const DIR_PREFIX: &str = "warden-pg";
/// The file in a server's dir naming the test process that owns it.
const OWNER_FILE: &str = "owner.pid";
/// How long a server may take to start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

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
    port: u16,
    run_as: Option<(u32, u32)>,
    /// The `postgres` process: killed and waited for on drop, before `dir` goes.
    server: Mutex<Option<Child>>,
    dir: TempDir,
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
        remove_stale_dirs(Path::new(TEMP_ROOT));
        // /tmp: the server's user can reach it (a root TMPDIR may be private), and the unix
        // socket's path stays under its 107-byte limit.
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(TEMP_ROOT)
            .map_err(failed("creating the temp dir"))?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
            .map_err(failed("writing the owner file"))?;
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
            port: 0,
            run_as,
            server: Mutex::new(None),
            dir,
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
            match server.spawn_server() {
                Ok(child) => {
                    *server.server.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(child);
                    return Ok(server);
                }
                Err(error) => last_error = Some(error),
            }
        }
        server.port = 0;
        Err(last_error.unwrap_or(StartError::Failed {
            step: "postgres",
            detail: "no attempt".to_owned(),
        }))
    }

    /// Runs `postgres` in the foreground (with its watchdog) and waits until it is ready.
    fn spawn_server(&self) -> Result<Child, StartError> {
        let log_path = self.dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).map_err(failed("creating the server log"))?;
        let log_err = log.try_clone().map_err(failed("creating the server log"))?;
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=100"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().map_err(failed("running postgres"))?;
        spawn_watchdog(child.id(), self.dir.path()).map_err(failed("starting the watchdog"))?;
        let pid_file = self.data_dir().join("postmaster.pid");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().map_err(failed("waiting for postgres"))? {
                let mut log = String::new();
                let _ = std::fs::File::open(&log_path).map(|mut f| f.read_to_string(&mut log));
                return Err(StartError::Failed {
                    step: "postgres",
                    detail: format!("{status}\n{log}"),
                });
            }
            // postgres writes `ready` on the 8th line of postmaster.pid once it takes
            // connections (what `pg_ctl -w` waits for).
            let ready = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.lines().nth(7).map(|line| line.trim() == "ready"))
                .unwrap_or(false);
            if ready {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::Failed {
                    step: "postgres",
                    detail: format!("not ready after {READY_TIMEOUT:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The one server of this test process (started on first use, stopped by its watchdog
    /// when the process ends); `None` (with the reason printed) when the machine has no
    /// PostgreSQL and [`REQUIRE_ENV`] is unset. Panics when it cannot start.
    pub fn shared() -> Option<&'static Postgres> {
        static SHARED: OnceLock<Option<Postgres>> = OnceLock::new();
        SHARED
            .get_or_init(|| match Postgres::start() {
                Ok(server) => Some(server),
                Err(StartError::NoBinaries) if std::env::var_os(REQUIRE_ENV).is_none() => {
                    eprintln!(
                        "skipped: {} ({REQUIRE_ENV} is unset)",
                        StartError::NoBinaries
                    );
                    None
                }
                Err(error) => panic!("{error}"),
            })
            .as_ref()
    }

    /// The directory the server's files are in (removed when it stops).
    pub fn dir(&self) -> &Path {
        self.dir.path()
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
        Err(StartError::Failed {
            step,
            detail: format!(
                "{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
            ),
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let server = self
            .server
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(mut child) = server.take() {
            // Fast shutdown first (SIGINT: no shared memory left behind), then the hard way.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // `dir` is removed after this, with the server gone.
    }
}

/// A shell that waits for this test process to end, then stops the server `pid` (unless it
/// already stopped: its dir is gone) and removes `dir`: a test process killed outright, or one
/// whose static server is never dropped, leaves nothing running.
fn spawn_watchdog(pid: u32, dir: &Path) -> std::io::Result<()> {
    const SCRIPT: &str = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        if [ -f "$3/data/postmaster.pid" ]; then
            kill -INT "$2" 2>/dev/null
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                kill -0 "$2" 2>/dev/null || break
                sleep 1
            done
            [ -f "$3/data/postmaster.pid" ] && kill -KILL "$2" 2>/dev/null
        fi
        rm -rf "$3"
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("warden-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(())
}

/// Removes the server dirs of test processes that are gone. A dir whose owner lives is left
/// alone; a live server whose owner is gone is stopped first. Dirs from before owner files
/// (no `owner.pid`) are removed only when their server is dead.
fn remove_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let alive = |pid: u32| Path::new("/proc").join(pid.to_string()).exists();
    let read_pid = |path: PathBuf| -> Option<u32> {
        std::fs::read_to_string(path)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(DIR_PREFIX));
        if !is_ours || !entry.path().is_dir() {
            continue;
        }
        let dir = entry.path();
        let owner = read_pid(dir.join(OWNER_FILE));
        if owner.is_some_and(alive) {
            continue;
        }
        let postmaster = read_pid(dir.join("data/postmaster.pid"));
        match (owner, postmaster) {
            (Some(_), Some(server)) if alive(server) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &server.to_string()])
                    .status();
            }
            // Another process's dir being set up, or a server of unknown owner: not ours to judge.
            (None, None) => continue,
            (None, Some(server)) if alive(server) => continue,
            _ => {}
        }
        let _ = std::fs::remove_dir_all(&dir);
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

    /// A pid that is surely dead: a child that ran and was reaped.
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn server_dir(root: &Path, name: &str, owner: Option<u32>, postmaster: Option<u32>) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        if let Some(owner) = owner {
            std::fs::write(dir.join(OWNER_FILE), owner.to_string()).unwrap();
        }
        if let Some(postmaster) = postmaster {
            std::fs::write(
                dir.join("data/postmaster.pid"),
                format!("{postmaster}\n/x\n"),
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn stale_dirs_of_dead_tests_are_removed_and_their_servers_stopped() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        // A "server" left running by a test process that died.
        let mut orphan = Command::new("sleep").arg("600").spawn().unwrap();
        let orphaned = server_dir(
            root,
            "warden-pg-orphan",
            Some(dead_pid()),
            Some(orphan.id()),
        );
        let crashed = server_dir(
            root,
            "warden-pg-crashed",
            Some(dead_pid()),
            Some(dead_pid()),
        );
        let old_dead = server_dir(root, "warden-pg-old", None, Some(dead_pid()));
        // Left alone: a live owner's dir, an ownerless live server, another program's dir.
        let mine = server_dir(
            root,
            "warden-pg-mine",
            Some(std::process::id()),
            Some(orphan.id()),
        );
        let unknown = server_dir(root, "warden-pg-unknown", None, Some(std::process::id()));
        let other = server_dir(root, "other-pg", Some(dead_pid()), None);
        remove_stale_dirs(root);
        for gone in [&orphaned, &crashed, &old_dead] {
            assert!(!gone.exists(), "{}", gone.display());
        }
        for kept in [&mine, &unknown, &other] {
            assert!(kept.exists(), "{}", kept.display());
        }
        let status = orphan.wait().unwrap();
        assert!(!status.success(), "the orphan was stopped: {status}");
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
