//! A `liveresults serve` child process for the root package's tests: started, its address read
//! from the "listening on ADDR" line it prints first, killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running server; killed (and reaped) on drop, so a failing test leaves no process behind.
pub struct Serve {
    pub child: Child,
    pub url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` (a `liveresults serve …` invocation; its stderr setting is kept) with
/// stdout piped, and waits for the address line.
pub fn spawn(command: &mut Command) -> Serve {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn liveresults serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the address line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port = addr.rsplit_once(':').map_or(addr, |(_, port)| port);
    Serve {
        url: format!("http://127.0.0.1:{port}"),
        child,
    }
}
