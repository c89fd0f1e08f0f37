//! `sqlx::migrate!` embeds the migration files at compile time; a new file in `migrations/`
//! (e.g. a teammate's `0002_*.sql`) must rebuild this crate, which Cargo does not know by itself.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
