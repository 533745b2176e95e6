//! Bakes a hash of the native encoder's sources into the build (`varemi._native.source_hash`),
//! so the token cache never serves ids computed by a different native build.

use std::fs;
use std::path::Path;

/// FNV-1a, 64 bits: enough to tell two source trees apart (not a security hash).
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

fn main() {
    let mut files: Vec<_> = fs::read_dir("rust")
        .expect("rust/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    files.push(Path::new("Cargo.toml").to_path_buf());
    files.push(Path::new("Cargo.lock").to_path_buf());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        fnv1a(&mut hash, path.to_string_lossy().as_bytes());
        fnv1a(&mut hash, &[0]);
        fnv1a(&mut hash, &fs::read(path).expect("source is readable"));
        fnv1a(&mut hash, &[0]);
    }
    println!("cargo:rerun-if-changed=rust");
    println!("cargo:rustc-env=VAREMI_SOURCE_HASH={hash:016x}");
}
