//! Turns on `cfg(spdk)` when the `spdk-sys` crate found an installed SPDK, so that the FFI glue
//! (and the tests that need a live SPDK) compile only then.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(spdk)");
    // spdk-sys declares `links = "spdk"`, so its `cargo:found=…` reaches us as DEP_SPDK_FOUND.
    if std::env::var("DEP_SPDK_FOUND").as_deref() == Ok("1") {
        println!("cargo:rustc-cfg=spdk");
        // SPDK's shared libraries do not all record their own dependencies (libspdk_util uses
        // libcrypto, libspdk_accel ISA-L, without DT_NEEDED entries), so every one is linked
        // with --as-needed off; link args come after rustc's own libraries, in this order.
        for dir in std::env::var("DEP_SPDK_LINK_DIRS")
            .unwrap_or_default()
            .split_whitespace()
        {
            println!("cargo:rustc-link-search=native={dir}");
        }
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        for lib in std::env::var("DEP_SPDK_LIBS").unwrap_or_default().split_whitespace() {
            println!("cargo:rustc-link-arg=-l{lib}");
        }
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    if let Ok(prefix) = std::env::var("DEP_SPDK_PREFIX") {
        println!("cargo:rustc-env=SPDK_MIRROR_SPDK_PREFIX={prefix}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
