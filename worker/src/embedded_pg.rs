//! A throwaway PostgreSQL server for `ledgerflow demo --embedded`: the
//! machine's own PostgreSQL binaries (`initdb`, `pg_ctl`) run a fresh
//! cluster in a temporary directory, on a free port of 127.0.0.1 with trust
//! authentication and no Unix socket, and [`EmbeddedPostgres::stop`] (or,
//! failing that, `Drop`) stops it and deletes the directory.
//!
//! Where the binaries come from, first found wins: `LEDGERFLOW_PG_BINDIR`;
//! `pg_config --bindir`; the newest `/usr/lib/postgresql/*/bin` (Debian and
//! Ubuntu keep them off `PATH`); `initdb` on `PATH`.
//!
//! `initdb` refuses to run as root. Run as root, the cluster is made and
//! run by the `postgres` OS user (`LEDGERFLOW_PG_OS_USER` names another),
//! which owns the temporary directory; the child processes switch to it
//! with setuid/setgid, so no `su`/`runuser` is needed. The server runs in a
//! process group of its own, so a Ctrl-C on the terminal reaches only
//! ledgerflow, which then shuts the server down in order.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

/// Overrides where `initdb` and `pg_ctl` are looked for.
pub const BINDIR_ENV: &str = "LEDGERFLOW_PG_BINDIR";
/// The OS user that runs the server when ledgerflow runs as root.
pub const OS_USER_ENV: &str = "LEDGERFLOW_PG_OS_USER";

/// Why the embedded server could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) on this machine: install PostgreSQL's server package (Debian/Ubuntu: `apt install postgresql`; Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql`), or set {BINDIR_ENV} to the directory holding initdb and pg_ctl"
    )]
    NoBinaries,
    #[error("{BINDIR_ENV}={0} holds no initdb and pg_ctl")]
    BadBindir(String),
    #[error(
        "initdb refuses to run as root, and there is no OS user \"{0}\" to run PostgreSQL as; create one (`useradd --system {0}`), set {OS_USER_ENV} to another user, or run ledgerflow as a user other than root"
    )]
    NoOsUser(String),
    #[error("cannot prepare the temporary directory for PostgreSQL: {0}")]
    TempDir(std::io::Error),
    #[error("{program} failed: {detail}")]
    Command { program: String, detail: String },
}

/// A running throwaway server.
pub struct EmbeddedPostgres {
    /// `None` once stopped and deleted.
    dir: Option<tempfile::TempDir>,
    bindir: PathBuf,
    run_as: Option<(u32, u32)>,
    port: u16,
    running: bool,
}

impl EmbeddedPostgres {
    /// Makes a cluster in a new temporary directory and starts it on a free port.
    pub async fn start() -> Result<EmbeddedPostgres, EmbeddedError> {
        let bindir = find_bindir()?;
        let run_as = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("ledgerflow-pg-")
            .tempdir()
            .map_err(EmbeddedError::TempDir)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(EmbeddedError::TempDir)?;
        }
        let mut server = EmbeddedPostgres {
            dir: Some(dir),
            bindir,
            run_as,
            port: 0,
            running: false,
        };
        server.init().await?;
        // From here on a failure may leave a server up (pg_ctl timed out
        // waiting for it): `Drop` stops it, which is harmless if it is not.
        server.running = true;
        // A port found free may be taken before the server binds it: try another.
        let mut attempt = 1;
        loop {
            server.port = free_port().map_err(EmbeddedError::TempDir)?;
            match server.pg_ctl_start().await {
                Ok(()) => return Ok(server),
                Err(_) if attempt < 3 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The URL of its `postgres` database (user `postgres`, trust auth).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the cluster (deleted at the end).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// The PostgreSQL version of the binaries, e.g. "initdb (PostgreSQL) 15.8".
    pub async fn version(&self) -> String {
        let out = Command::new(self.bindir.join("initdb"))
            .arg("--version")
            .output()
            .await;
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Err(_) => String::new(),
        }
    }

    /// Stops the server and deletes its directory.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        if self.running {
            let fast = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "20"]).await;
            if fast.is_err() {
                self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "20"])
                    .await?;
            }
            self.running = false;
        }
        if let Some(dir) = self.dir.take() {
            dir.close().map_err(EmbeddedError::TempDir)?;
        }
        Ok(())
    }

    fn data(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        // The server's user may not be allowed into our working directory,
        // and initdb and pg_ctl fail when they cannot resolve it.
        cmd.current_dir(self.dir())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C is ours to handle.
            .process_group(0);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    async fn run(&self, program: &str, mut cmd: Command) -> Result<(), EmbeddedError> {
        let out = cmd.output().await.map_err(|e| EmbeddedError::Command {
            program: program.into(),
            detail: e.to_string(),
        })?;
        if out.status.success() {
            return Ok(());
        }
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = format!("exit status {}", out.status);
        }
        Err(EmbeddedError::Command {
            program: program.into(),
            detail,
        })
    }

    async fn init(&self) -> Result<(), EmbeddedError> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync"]);
        self.run("initdb", cmd).await?;
        // A throwaway cluster: TCP on loopback only, no socket file to
        // collide with the machine's server, durability traded for speed.
        let conf = "\n# ledgerflow demo --embedded\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n";
        let path = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).map_err(EmbeddedError::TempDir)?;
        text.push_str(conf);
        std::fs::write(&path, text).map_err(EmbeddedError::TempDir)
    }

    async fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        let port = format!("-p {}", self.port);
        let log = self.dir().join("postgres.log");
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-o", &port, "-w", "-t", "30", "-s", "start"]);
        self.run("pg_ctl start", cmd).await.map_err(|e| {
            // The server's own log says why it did not come up.
            let tail = std::fs::read_to_string(&log)
                .map(|l| l.lines().rev().take(5).collect::<Vec<_>>().join(" / "))
                .unwrap_or_default();
            match e {
                EmbeddedError::Command { program, detail } if !tail.is_empty() => {
                    EmbeddedError::Command {
                        program,
                        detail: format!("{detail} (server log: {tail})"),
                    }
                }
                other => other,
            }
        })
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<(), EmbeddedError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(self.data()).arg("-s").args(args);
        self.run("pg_ctl", cmd).await
    }
}

impl Drop for EmbeddedPostgres {
    /// The path taken when [`EmbeddedPostgres::stop`] was not (an error
    /// unwound past it): stop at once, blocking, then the directory goes
    /// with the `TempDir`.
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let mut cmd = std::process::Command::new(self.bindir.join("pg_ctl"));
        cmd.current_dir(self.dir())
            .arg("-D")
            .arg(self.data())
            .args(["-s", "stop", "-m", "immediate", "-w", "-t", "20"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// Where `initdb` and `pg_ctl` are (see the module's documentation).
pub fn find_bindir() -> Result<PathBuf, EmbeddedError> {
    let from_pg_config = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    find_bindir_in(&Search {
        bindir_env: std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()),
        pg_config_bindir: from_pg_config,
        versioned_root: PathBuf::from("/usr/lib/postgresql"),
        path: std::env::var_os("PATH"),
    })
}

/// What [`find_bindir`] looks at, in its order.
pub struct Search {
    pub bindir_env: Option<std::ffi::OsString>,
    pub pg_config_bindir: Option<PathBuf>,
    /// Holds one `VERSION/bin` per installed major version (Debian, Ubuntu).
    pub versioned_root: PathBuf,
    pub path: Option<std::ffi::OsString>,
}

pub fn find_bindir_in(search: &Search) -> Result<PathBuf, EmbeddedError> {
    if let Some(dir) = &search.bindir_env {
        let dir = PathBuf::from(dir);
        return if has_server_binaries(&dir) {
            Ok(dir)
        } else {
            Err(EmbeddedError::BadBindir(dir.display().to_string()))
        };
    }
    if let Some(dir) = search
        .pg_config_bindir
        .as_ref()
        .filter(|d| has_server_binaries(d))
    {
        return Ok(dir.clone());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(&search.versioned_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_server_binaries(bin))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    search
        .path
        .as_ref()
        .map(|path| std::env::split_paths(path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| has_server_binaries(d))
        .ok_or(EmbeddedError::NoBinaries)
}

/// The (uid, gid) the server runs as: `None` (ourselves) unless we are root.
fn run_as() -> Result<Option<(u32, u32)>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = std::env::var(OS_USER_ENV)
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "postgres".into());
    match nix::unistd::User::from_name(&name) {
        Ok(Some(user)) if !user.uid.is_root() => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        _ => Err(EmbeddedError::NoOsUser(name)),
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bindir(root: &Path) -> PathBuf {
        std::fs::create_dir_all(root).expect("mkdir");
        for program in ["initdb", "pg_ctl"] {
            std::fs::write(root.join(program), "").expect("touch");
        }
        root.to_path_buf()
    }

    #[test]
    fn no_binaries_anywhere_says_what_to_install() {
        let empty = tempfile::tempdir().expect("tempdir");
        let err = find_bindir_in(&Search {
            bindir_env: None,
            pg_config_bindir: None,
            versioned_root: empty.path().join("postgresql"),
            path: Some(empty.path().as_os_str().to_owned()),
        })
        .expect_err("nothing to find");
        let text = err.to_string();
        assert!(text.contains("apt install postgresql"), "{text}");
        assert!(text.contains(BINDIR_ENV), "{text}");
    }

    #[test]
    fn the_newest_versioned_bindir_wins_and_the_override_is_checked() {
        let root = tempfile::tempdir().expect("tempdir");
        let versions = root.path().join("postgresql");
        fake_bindir(&versions.join("9").join("bin"));
        let newest = fake_bindir(&versions.join("16").join("bin"));
        std::fs::create_dir_all(versions.join("17").join("bin")).expect("mkdir");
        let search = |bindir_env: Option<&Path>| Search {
            bindir_env: bindir_env.map(|p| p.as_os_str().to_owned()),
            pg_config_bindir: None,
            versioned_root: versions.clone(),
            path: None,
        };
        assert_eq!(find_bindir_in(&search(None)).expect("found"), newest);
        let err = find_bindir_in(&search(Some(&versions.join("17").join("bin"))))
            .expect_err("17 has no binaries");
        assert!(matches!(err, EmbeddedError::BadBindir(_)), "{err}");
    }
}
