//! A throwaway PostgreSQL cluster for tests and benchmarks of fleet mode:
//! `initdb` in a temporary folder, the server on 127.0.0.1 and a free
//! port, stopped (`pg_ctl stop`) and removed on drop.
//!
//! `initdb` refuses to run as root, so as root the cluster runs as the
//! `postgres` user (`runuser`); otherwise as the current user. Host
//! connections need a password (scram-sha-256) except the administrator's,
//! so the fleet's own role is tested the way it runs: with a password from a
//! file. Where the server binaries are missing, [`Cluster::start`] fails
//! under `CI=true` and elsewhere says loudly that the test is skipped.
//!
//! A crate of its own, a dev-dependency of `modelferry` only: none of this
//! is compiled into the product.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Test support: it says on stderr why a test was skipped, and reads `CI`.
#![allow(clippy::print_stderr, clippy::disallowed_methods)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The role the fleet connects as.
pub const ROLE: &str = "modelferry";
/// The password of [`ROLE`] (a test value; tests check it never leaks).
pub const PASSWORD: &str = "pg-Secret-7d41c9e2-never-shown";

/// A running cluster; stopped and removed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The newest installed server's binaries.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl Cluster {
    /// Starts a cluster; `None` (after saying so) when PostgreSQL's server
    /// binaries are missing outside CI. `test` names the caller.
    pub fn start(test: &str) -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: PostgreSQL server binaries are missing (/usr/lib/postgresql/*/bin); CI installs postgresql-15");
            }
            eprintln!("\n*** SKIPPED {test}: PostgreSQL server binaries not found (apt-get install postgresql-15) ***\n");
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("modelferry-pg-")
            .tempdir()
            .expect("temporary folder");
        if as_postgres {
            let uid = id_of("-u");
            let gid = id_of("-g");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown to postgres");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let c = Cluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = c.data();
        c.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        std::fs::write(
            c.dir.path().join("data/pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} -c max_connections=200",
            dir = c.dir.path().display()
        );
        let log = c.dir.path().join("server.log");
        c.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                &data,
                "-l",
                &log.display().to_string(),
                "-o",
                &opts,
            ],
        );
        c.sql(&format!(
            "CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}' CREATEDB"
        ));
        Some(c)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let out = self
            .command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL as the administrator; its output, unaligned.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_on("postgres", sql)
    }

    /// Runs SQL as the administrator in the database of `url`.
    pub fn sql_in(&self, url: &url::Url, sql: &str) -> String {
        self.sql_on(url.path().trim_start_matches('/'), sql)
    }

    fn sql_on(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
        )
    }

    /// A new, empty database owned by the fleet's role; its URL (no password).
    pub fn database(&self) -> url::Url {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("fleet_{}", N.fetch_add(1, Ordering::Relaxed));
        self.sql(&format!("CREATE DATABASE {name} OWNER {ROLE}"));
        url::Url::parse(&format!(
            "postgresql://{ROLE}@127.0.0.1:{}/{name}",
            self.port
        ))
        .expect("a URL")
    }

    /// Writes the password into a 0600 file in `dir`; its path.
    pub fn password_file(&self, dir: &Path) -> PathBuf {
        let p = dir.join("db-password");
        std::fs::write(&p, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the postgres user exists")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-D", &data, "-m", "immediate", "-w"])
            .output();
    }
}
