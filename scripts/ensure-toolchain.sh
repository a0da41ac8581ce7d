#!/usr/bin/env bash
# Says in one line, and fails, when cargo is missing or older than Cargo.toml's rust-version;
# silent otherwise. `make up` and `make test` run it first.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
need=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
fix="install it with rustup (https://rustup.rs: curl --proto '=https' -sSf https://sh.rustup.rs | sh), or run rustup update"
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && { echo "cm needs Rust $need or newer: cargo is in ~/.cargo/bin but not on PATH (source ~/.cargo/env)" >&2; exit 69; }
    echo "cm needs Rust $need or newer and cargo is not installed: $fix" >&2
    exit 69
fi
have=$(cargo --version | awk '{print $2}' | cut -d- -f1)
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    echo "cm needs Rust $need or newer; this cargo is $have: $fix" >&2
    exit 69
fi
