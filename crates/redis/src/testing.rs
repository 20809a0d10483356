//! Test support (feature `testing`): a `redis-server` child process per test, on a free
//! loopback port, killed on drop. Shared by this crate's tests and benches and by the other
//! crates whose tests need a real server (the Redis Streams source, the root package), so
//! there is one way to start one.
//!
//! There is deliberately no way to skip: without a `redis-server` binary every Redis test
//! fails with a message saying how to install one (`scripts/setup.sh` does it on Debian).
//! `LIVERESULTS_REDIS_SERVER` names another binary (a Valkey build, say).
//!
//! Everything here panics on failure, as test code should: it is not for production use.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{RedisStore, RedisStoreOptions};

/// How long a fresh server may take to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running `redis-server` (without persistence unless asked for).
pub struct RedisServer {
    child: Child,
    port: u16,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server without persistence; panics (never skips) when none can be started.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with `extra` arguments (`--appendonly yes`, say) after the defaults.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut last_error = String::new();
        // A port found free can be taken before the server binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temp dir for redis-server");
            match spawn(port, dir.path(), &extra) {
                Ok(child) => {
                    return RedisServer {
                        child,
                        port,
                        extra,
                        dir,
                    }
                }
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not come up: {last_error}");
    }

    /// Starts the server again on the same port and directory (after [`RedisServer::kill`]),
    /// so a persistent server reloads its data and clients reconnect to the same address.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.port, self.dir.path(), &self.extra)
            .unwrap_or_else(|e| panic!("redis-server did not come back: {e}"));
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Connects a store with `options`.
    pub async fn connect(&self, options: RedisStoreOptions) -> RedisStore {
        RedisStore::connect(&self.url(), options)
            .await
            .expect("connect to the test redis-server")
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `redis-server` on `port` with its files in `dir` and waits until it answers.
fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Result<Child, String> {
    let binary =
        std::env::var("LIVERESULTS_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let spawned = Command::new(&binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "no", "--loglevel", "warning"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot start {binary:?} ({e}): the Redis tests need a redis-server binary \
             (`apt-get install -y redis-server`, or LIVERESULTS_TEST_SERVICES=1 scripts/setup.sh); \
             they never skip"
        ),
    };
    match wait_ready(&mut child, port) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls the port with a raw PING until the server answers PONG or exits.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            return Err(format!("redis-server exited with {status}: {stderr}"));
        }
        if ping(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("no PONG on port {port} within {READY_WITHIN:?}"))
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
