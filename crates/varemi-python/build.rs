//! Bakes a hash of the native encoder's sources into the build (`varemi._native.source_hash`),
//! so the token cache never serves ids computed by a different native build.
//!
//! The hash covers every `.rs` file of both crates (`crates/varemi-core`, the kernels, and
//! `crates/varemi-python`, these bindings, this file included), their `Cargo.toml`, the
//! workspace's `Cargo.toml` and `Cargo.lock`: each file's path relative to the workspace
//! root (with `/`), then its bytes, in sorted path order.

use std::fs;
use std::path::{Path, PathBuf};

/// FNV-1a, 64 bits: enough to tell two source trees apart (not a security hash).
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// The `.rs` files under `dir` (relative to `root`), recursively.
fn rust_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("{} is readable: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry is readable");
        let rel = dir.join(entry.file_name());
        let kind = entry.file_type().expect("file type is readable");
        if kind.is_dir() {
            if entry.file_name() != "target" {
                rust_files(root, &rel, out);
            }
        } else if rel.extension().is_some_and(|x| x == "rs") {
            out.push(rel);
        }
    }
}

/// `path` with `/` between its components, whatever the platform.
fn slash_path(path: &Path) -> String {
    let parts: Vec<_> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // This crate is crates/varemi-python in the workspace.
    let root = manifest_dir.join("../..");
    let crates = [
        Path::new("crates/varemi-core"),
        Path::new("crates/varemi-python"),
    ];
    let mut files = vec![PathBuf::from("Cargo.toml"), PathBuf::from("Cargo.lock")];
    for krate in crates {
        files.push(krate.join("Cargo.toml"));
        rust_files(&root, krate, &mut files);
        // A directory: cargo reruns when anything under it changes (a new file included).
        println!("cargo:rerun-if-changed={}", root.join(krate).display());
    }
    let mut files: Vec<(String, PathBuf)> =
        files.into_iter().map(|p| (slash_path(&p), p)).collect();
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, path) in &files {
        let path = root.join(path);
        println!("cargo:rerun-if-changed={}", path.display());
        fnv1a(&mut hash, name.as_bytes());
        fnv1a(&mut hash, &[0]);
        fnv1a(
            &mut hash,
            &fs::read(&path).unwrap_or_else(|e| panic!("{name} is readable: {e}")),
        );
        fnv1a(&mut hash, &[0]);
    }
    println!("cargo:rustc-env=VAREMI_SOURCE_HASH={hash:016x}");
}
