//! The browser console (`/ui`) in a real browser: `liveresults serve` with tokens, and
//! tests/console/console_test.mjs driving Debian's headless Chromium through puppeteer-core.
//! The script enters the admin token at the console's prompt, ingests events over HTTP,
//! checks the queries page and the live rows table show them within a second, clears a query
//! through the confirmation dialog and checks the table empties (see the script for every
//! check); any failed check fails this test.
//!
//! `scripts/setup.sh` with `LIVERESULTS_TEST_SERVICES=1` (as scripts/test.sh and CI run it)
//! installs chromium and the pinned npm packages; without them this test fails saying so,
//! never skips. `LIVERESULTS_CONSOLE_SCREENSHOTS=DIR` makes the script save
//! console-queries.png and console-query.png there (a relative DIR is taken from the checkout:
//! `LIVERESULTS_CONSOLE_SCREENSHOTS=docs` refreshes the README's).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

const READ_TOKEN: &str = "read-token-for-the-console-test";
const WRITE_TOKEN: &str = "write-token-for-the-console-test";
const ADMIN_TOKEN: &str = "admin-token-for-the-console-test";

/// Where the browser is: `CHROMIUM`, else Debian's.
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

#[test]
fn console_in_headless_chromium() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let driver = dir.join("node_modules/puppeteer-core/package.json");
    assert!(
        driver.exists(),
        "{} is missing: run `LIVERESULTS_TEST_SERVICES=1 source scripts/setup.sh` (scripts/test.sh \
         does) to install puppeteer-core and chromium",
        driver.display()
    );
    assert!(
        Path::new(&chromium()).exists(),
        "{} is missing: install Debian's chromium (scripts/setup.sh does with \
         LIVERESULTS_TEST_SERVICES=1) or set CHROMIUM",
        chromium()
    );
    let server = support::serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_liveresults"))
            .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
            .env(
                "LIVERESULTS_TOKENS",
                format!("read:{READ_TOKEN},write:{WRITE_TOKEN},admin:{ADMIN_TOKEN}"),
            )
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    );
    let mut node = Command::new("node");
    node.arg(dir.join("console_test.mjs"))
        .current_dir(&dir)
        .env("LIVERESULTS_URL", &server.url)
        .env("LIVERESULTS_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("LIVERESULTS_WRITE_TOKEN", WRITE_TOKEN)
        .env("CHROMIUM", chromium());
    if let Ok(shots) = std::env::var("LIVERESULTS_CONSOLE_SCREENSHOTS") {
        // Relative to the checkout (`docs`), not to the script's directory.
        node.env(
            "LIVERESULTS_SCREENSHOTS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join(shots),
        );
    }
    let output = node
        .output()
        .expect("run node (install Node.js 20 or later)");
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The script's check lines, indented so nobody mistakes them for this test's result.
    for line in stdout.lines() {
        eprintln!("    {line}");
    }
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser test failed ({})",
        output.status
    );
    assert!(
        stdout.contains("browser test: all ") && !stdout.contains("not ok"),
        "the browser test did not finish its checks"
    );
}
