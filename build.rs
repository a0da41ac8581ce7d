//! Link options for the `cm` binary that keep an idle worker's resident memory small.
//!
//! - `--symbol-ordering-file=link/hot-functions.txt`: the ~2 MB of code a worker runs, packed at
//!   the front of .text. The kernel maps file pages 64 KB around each fault, so scattered hot
//!   code kept most of the 7 MB .text resident in every worker (9.2 → about 6 MiB RSS).
//! - `-z pack-relative-relocs` (RELR, glibc ≥ 2.36): 230 KB of relocations become 3 KB that the
//!   loader reads at every start.
//!
//! Both are lld options; Rust ≥ 1.90 links x86_64 Linux with its bundled lld. Linking with
//! another linker (GNU ld has no symbol ordering): set `CM_PLAIN_LINK=1`. A stale list
//! costs memory, never correctness: lld skips names it does not find (`scripts/hot-functions.sh`
//! regenerates it, `--check` says how much of it still matches).

use std::path::Path;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let order = Path::new(&dir).join("link/hot-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CM_PLAIN_LINK");
    if std::env::var_os("CM_PLAIN_LINK").is_some_and(|v| v == "1") {
        return;
    }
    let mut args = vec!["-z".to_string(), "pack-relative-relocs".to_string()];
    if order.exists() {
        args.push(format!("--symbol-ordering-file={}", order.display()));
        args.push("--no-warn-symbol-ordering".into());
    }
    println!("cargo:rustc-link-arg-bins=-Wl,{}", args.join(","));
}
