//! Test support (feature `testing`): a real PostgreSQL server in a temp dir, on a free
//! loopback port, for this crate's tests and benches and for other crates' tests.
//!
//! The server is the distribution's (`initdb`, `postgres`, `pg_ctl`, `pg_isready` from
//! `/usr/lib/postgresql/<major>/bin`, Debian's `postgresql` package; the newest major found
//! wins, `LIVERESULTS_PG_BIN` names another directory). There is deliberately no way to
//! skip: without the binaries every PostgreSQL test fails saying how to install them
//! (`LIVERESULTS_TEST_SERVICES=1 scripts/setup.sh` does it on Debian).
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then the data directory is
//! chowned to `nobody` and every server command runs with that uid and gid (set in the child
//! before `exec`, which also drops root's supplementary groups — no `runuser`/`sudo` needed).
//!
//! Each server gets a watchdog shell that stops it (`pg_ctl stop -m immediate`) and removes
//! its directory once the test process is gone, so a server held in a `static` (see
//! [`PgServer::shared`]) or left behind by an aborted test never outlives its process.
//!
//! Everything here panics on failure, as test code should: it is not for production use.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{PgStore, PgStoreOptions};

/// How long a fresh server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running PostgreSQL server with its own data directory (deleted on drop).
pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// `Some((uid, gid))` when the server runs as `nobody` because the tests run as root.
    user: Option<(u32, u32)>,
    durable: bool,
    /// Serves TLS with `server.crt`/`server.key` in the data directory, TLS-only clients.
    tls: bool,
    postmaster: Option<Child>,
    watchdog: Option<Child>,
}

impl PgServer {
    /// Starts a server tuned for tests: `fsync=off` (acknowledged commits survive a crash of
    /// the server's processes, which leaves the OS page cache intact, but not a power loss).
    pub fn start() -> PgServer {
        PgServer::start_inner(false, None)
    }

    /// Starts a server with `fsync=on`, for tests whose claim is durability itself.
    pub fn start_durable() -> PgServer {
        PgServer::start_inner(true, None)
    }

    /// Starts a server (as [`PgServer::start`]) with `ssl = on`, the given certificate chain
    /// and key (PEM), and a `pg_hba.conf` that admits TCP clients only over TLS
    /// (`hostssl`): a plain-text connection is refused by the server.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> PgServer {
        PgServer::start_inner(false, Some((cert_pem, key_pem)))
    }

    /// One server for the whole test process, started on first use; tests sharing it keep
    /// apart by giving each store its own schema ([`unique_schema`]). The watchdog stops it
    /// when the process exits (statics are never dropped).
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(PgServer::start)
    }

    fn start_inner(durable: bool, tls: Option<(&str, &str)>) -> PgServer {
        let bin = find_bin();
        let user = server_user();
        // As root the server runs as nobody, who must reach the directory: /tmp, not a
        // TMPDIR under root's home.
        let parent = match user {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix("liveresults-pg-")
            .tempdir_in(parent)
            .expect("temp dir for PostgreSQL");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the PostgreSQL temp dir to nobody");
        }
        let mut server = PgServer {
            bin,
            dir,
            port: 0,
            user,
            durable,
            tls: tls.is_some(),
            postmaster: None,
            watchdog: None,
        };
        server.initdb();
        if let Some((cert, key)) = tls {
            server.write_tls_files(cert, key);
        }
        let mut last_error = String::new();
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => {
                    server.watchdog = Some(server.spawn_watchdog());
                    return server;
                }
                Err(e) => last_error = e,
            }
        }
        panic!("PostgreSQL did not come up: {last_error}");
    }

    /// The connection URL (user `postgres`, trust authentication, database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connects a store with `options`.
    pub async fn connect(&self, options: PgStoreOptions) -> PgStore {
        PgStore::connect(&self.url(), options)
            .await
            .expect("connect to the test PostgreSQL")
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once without a checkpoint,
    /// as in a crash; the next start replays the WAL.
    pub fn stop_immediate(&mut self) {
        if self.postmaster.is_none() {
            return;
        }
        let data = self.data_dir();
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        if let Some(mut child) = self.postmaster.take() {
            // pg_ctl waited for the postmaster; a kill is only the fallback if it could not.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory (after
    /// [`PgServer::stop_immediate`]), so it recovers from its WAL and clients reconnect to the
    /// same address.
    pub fn restart(&mut self) {
        self.stop_immediate();
        self.spawn()
            .unwrap_or_else(|e| panic!("PostgreSQL did not come back: {e}"));
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for one of the server's binaries, as the server's user.
    fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(self.bin.join(binary));
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command.env("LC_ALL", "C");
        command
    }

    fn initdb(&self) {
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        let output = initdb
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.join("initdb").display()));
        assert!(
            output.status.success(),
            "initdb failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The certificate and key next to the data, and TCP clients admitted only over TLS.
    fn write_tls_files(&self, cert: &str, key: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        let files = [
            ("server.crt", cert),
            ("server.key", key),
            (
                "pg_hba.conf",
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            ),
        ];
        for (name, text) in files {
            let path = data.join(name);
            fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            // The server refuses a key readable by others.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
            if let Some((uid, gid)) = self.user {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
            }
        }
    }

    /// Starts the postmaster as a child and waits until it accepts connections.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("server.log");
        let log_file = fs::File::create(&log).map_err(|e| format!("server log: {e}"))?;
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid))
                .map_err(|e| format!("chown server log: {e}"))?;
        }
        let stderr = log_file
            .try_clone()
            .map_err(|e| format!("server log: {e}"))?;
        let fsync = if self.durable { "on" } else { "off" };
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", &format!("fsync={fsync}")])
            .args(["-c", &format!("full_page_writes={fsync}")])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"])
            .args(["-c", "log_min_messages=warning"])
            .args(if self.tls {
                &[
                    "-c",
                    "ssl=on",
                    "-c",
                    "ssl_cert_file=server.crt",
                    "-c",
                    "ssl_key_file=server.key",
                ][..]
            } else {
                &[]
            })
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr);
        let mut child = postgres
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("postgres exited with {status}: {log}"));
            }
            if self.ready() {
                self.postmaster = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "not ready on port {} within {READY_WITHIN:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn ready(&self) -> bool {
        let mut check = self.command("pg_isready");
        check
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        check.status().is_ok_and(|s| s.success())
    }

    /// A shell that waits for this process to exit, then stops the server and removes its
    /// directory: the cleanup for servers that are never dropped.
    fn spawn_watchdog(&self) -> Child {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; \
             {pg_ctl} -D '{data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data_dir().display(),
            dir = self.dir.path().display(),
        );
        let mut watchdog = Command::new("sh");
        watchdog.arg("-c").arg(script);
        if let Some((uid, gid)) = self.user {
            watchdog.uid(uid).gid(gid);
        }
        watchdog
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the PostgreSQL watchdog shell")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop_immediate();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// A schema name no other store of this process (or of another test process) uses, so
/// stores on [`PgServer::shared`] never see each other's data.
pub fn unique_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t{}_{n}", std::process::id())
}

/// The directory holding `initdb`, `postgres`, `pg_ctl` and `pg_isready`.
fn find_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("LIVERESULTS_PG_BIN") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut majors: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    match majors.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries under {}: the PostgreSQL tests need them \
             (`apt-get install -y postgresql`, or LIVERESULTS_TEST_SERVICES=1 scripts/setup.sh; \
             LIVERESULTS_PG_BIN names another bin directory); they never skip",
            root.display()
        ),
    }
}

/// `Some((uid, gid))` of `nobody` when this process runs as root, which PostgreSQL refuses.
fn server_user() -> Option<(u32, u32)> {
    // The owner of /proc/self is this process's effective uid.
    let euid = fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    if euid != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let ids = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["nobody", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    });
    Some(ids.unwrap_or((65534, 65534)))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
