//! Turns on `cfg(spdk)` when the `spdk-sys` crate found an installed SPDK, so that the FFI glue
//! (and the tests that need a live SPDK) compile only then.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(spdk)");
    // spdk-sys declares `links = "spdk"`, so its `cargo:found=…` reaches us as DEP_SPDK_FOUND.
    if std::env::var("DEP_SPDK_FOUND").as_deref() == Ok("1") {
        println!("cargo:rustc-cfg=spdk");
    }
    if let Ok(prefix) = std::env::var("DEP_SPDK_PREFIX") {
        println!("cargo:rustc-env=SPDK_MIRROR_SPDK_PREFIX={prefix}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
