//! `sqlx::migrate!` embeds the migrations when this crate compiles, but cargo does not know it
//! reads that directory: without this, a migration added or edited after the last build would
//! be missing from the binaries until some Rust source of the crate changed too.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
