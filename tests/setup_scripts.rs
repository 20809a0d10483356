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
