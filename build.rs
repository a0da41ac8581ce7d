//! `sqlx::migrate!` embeds the PostgreSQL migrations at compile time, but a proc macro cannot
//! tell Cargo which files it read: without this, a new or edited migration would not rebuild cm.

fn main() {
    println!("cargo:rerun-if-changed=src/store/postgres/migrations");
    println!("cargo:rerun-if-changed=build.rs");
}
