// The migrations are embedded at build time (`sqlx::migrate!`): a new or
// changed file must rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations-postgres");
}
