//! Link settings. On Linux the functions of the per-event lifecycle path
//! are placed in `.text.hot.*` sections (see `docs/performance.md`); this
//! keeps those sections together in one output section, so an event that
//! arrives with cold caches touches a few pages of code instead of pages
//! spread over the whole library.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,keep-text-section-prefix");
    }
}
