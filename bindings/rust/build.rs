//! Tells rustc where libmasq.so is. No crates needed.
//!
//! Search order:
//!   1. `MASQ_LIB_DIR` (a directory holding libmasq.so, e.g. the output of
//!      `swift build --show-bin-path`);
//!   2. `pkg-config --variable=libdir masq` (an installed tree, see .ci/install);
//!   3. the repository's own `.build/debug` when this crate is built in place;
//!   4. otherwise the system linker path (libmasq.so installed system-wide).
//!
//! For 1-3 the directory is also recorded as a RUNPATH of this crate's own
//! test and example binaries, so `cargo test` runs without LD_LIBRARY_PATH.
//! Programs depending on the crate get the link search path; how they find
//! the library at run time (RUNPATH, LD_LIBRARY_PATH, an installed copy) is
//! theirs to choose.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn has_library(dir: &Path) -> bool {
    dir.join("libmasq.so").is_file()
}

fn from_pkg_config() -> Option<PathBuf> {
    let output = Command::new("pkg-config").args(["--variable=libdir", "masq"]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let dir = PathBuf::from(text.trim());
    if text.trim().is_empty() || !has_library(&dir) {
        return None;
    }
    Some(dir)
}

/// Whether the library at `dir` exports `symbol` (`nm -D`); `None` when
/// nm cannot tell.
fn exports(dir: &Path, symbol: &str) -> Option<bool> {
    let output = Command::new("nm").args(["-D", "--defined-only"]).arg(dir.join("libmasq.so")).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.lines().any(|l| l.split_whitespace().last() == Some(symbol)))
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MASQ_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let in_tree = manifest.join("../../.build/debug");

    let found = match env::var_os("MASQ_LIB_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if !has_library(&dir) {
                println!("cargo:warning=MASQ_LIB_DIR={} holds no libmasq.so (run `swift build` first)", dir.display());
            }
            Some(dir)
        }
        _ => from_pkg_config().or_else(|| if has_library(&in_tree) { Some(in_tree) } else { None }),
    };

    match found {
        Some(dir) => {
            let dir = dir.canonicalize().unwrap_or(dir);
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rerun-if-changed={}", dir.join("libmasq.so").display());
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            // Tests find masq-cli and the plugins beside the library they linked.
            println!("cargo:rustc-env=MASQ_LINKED_LIB_DIR={}", dir.display());
            // For dependents' build scripts: DEP_MASQ_LIB_DIR.
            println!("cargo:lib_dir={}", dir.display());
            // Sections of the header may be newer than the library built
            // here (it is developed alongside): the tests of such a section
            // are compiled only when the library has it (tests/header.rs
            // names every declared function the library lacks).
            for (cfg, symbol) in
                [("masq_lib_lacks_backup", "masq_backup"), ("masq_lib_lacks_blobs", "masq_blob_put_file")]
            {
                println!("cargo:rustc-check-cfg=cfg({})", cfg);
                if exports(&dir, symbol) == Some(false) {
                    println!("cargo:rustc-cfg={}", cfg);
                    println!(
                        "cargo:warning=libmasq.so in {} has no {} yet: its tests are skipped",
                        dir.display(),
                        symbol
                    );
                }
            }
        }
        None => {
            println!("cargo:rustc-env=MASQ_LINKED_LIB_DIR=");
        }
    }
}
