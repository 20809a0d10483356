//! The set-up scripts' libclang detection, run on fake file trees: a machine whose only clang
//! library is LLVM's `libclang-cpp.so.N` once passed the old check and then failed its first
//! build inside bindgen ("Unable to find libclang").

use std::path::Path;
use std::process::Command;

/// Runs `libclang_loadable ROOT` from `scripts/lib/libclang.sh`; true when it decides "found".
fn loadable(root: &Path, libclang_path: Option<&str>) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/libclang.sh");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"source "$1" && libclang_loadable "$2""#)
        .arg("bash")
        .arg(&script)
        .arg(root)
        .env_remove("LIBCLANG_PATH");
    if let Some(path) = libclang_path {
        cmd.env("LIBCLANG_PATH", path);
    }
    let status = cmd.status().expect("run bash");
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("libclang_loadable exited with {other:?}"),
    }
}

/// A fresh tree holding `files` (paths relative to its root).
fn tree(files: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    for file in files {
        let path = root.path().join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, b"").expect("write");
    }
    root
}

#[test]
fn only_libclang_cpp_is_missing() {
    let root = tree(&[
        "usr/lib/llvm-14/lib/libclang-cpp.so.14",
        "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
        "usr/lib/llvm-14/lib/libclang-cpp.so",
    ]);
    assert!(!loadable(root.path(), None));
}

#[test]
fn empty_tree_is_missing() {
    let root = tree(&["usr/lib/libc.so.6"]);
    assert!(!loadable(root.path(), None));
}

#[test]
fn each_name_bindgen_loads_is_found() {
    for file in [
        "usr/lib/llvm-14/lib/libclang.so",
        "usr/lib/llvm-16/lib/libclang.so.1",
        "usr/lib/x86_64-linux-gnu/libclang-14.so.1",
        "usr/lib64/libclang-17.so",
        "usr/local/lib/libclang.so.18.1",
    ] {
        let root = tree(&["usr/lib/llvm-14/lib/libclang-cpp.so.14", file]);
        assert!(loadable(root.path(), None), "{file} not found");
    }
}

#[test]
fn libclang_path_is_searched() {
    let root = tree(&["opt/llvm/lib/libclang.so"]);
    assert!(!loadable(root.path(), None));
    assert!(loadable(root.path(), Some("/opt/llvm/lib")));
}

/// Runs `libclang_missing` with a fake `dpkg-query` on PATH that prints `dpkg_lines`; true
/// when it decides "missing".
fn missing_per_dpkg(dpkg_lines: &str) -> bool {
    let bin = tempfile::tempdir().expect("tempdir");
    let fake = bin.path().join("dpkg-query");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ncat <<'EOF'\n{dpkg_lines}EOF\nexit 1\n"),
    )
    .expect("write fake dpkg-query");
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/libclang.sh");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new("bash")
        .arg("-c")
        .arg(r#"set -euo pipefail; source "$1" && libclang_missing"#)
        .arg("bash")
        .arg(&script)
        .env("PATH", path)
        .env_remove("LIBCLANG_PATH")
        .status()
        .expect("run bash");
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("libclang_missing exited with {other:?}"),
    }
}

#[test]
fn dpkg_decides_on_debian() {
    // Only LLVM's C++ library and the common headers: bindgen cannot run.
    assert!(missing_per_dpkg(
        "libclang-cpp14 install ok installed\nlibclang-common-14-dev install ok installed\n"
    ));
    assert!(missing_per_dpkg(""));
    assert!(missing_per_dpkg("libclang-dev deinstall ok config-files\n"));
    // The package, or a versioned one, even when dpkg-query exits 1 for an unknown name.
    assert!(!missing_per_dpkg("libclang-dev install ok installed\n"));
    assert!(!missing_per_dpkg("libclang-16-dev install ok installed\n"));
}

#[test]
fn libclang_path_may_name_the_library_itself() {
    let root = tree(&[
        "opt/llvm/lib/libclang.so.18",
        "opt/llvm/lib/libclang-cpp.so.18",
    ]);
    assert!(loadable(root.path(), Some("/opt/llvm/lib/libclang.so.18")));
    assert!(!loadable(
        root.path(),
        Some("/opt/llvm/lib/libclang-cpp.so.18")
    ));
}
