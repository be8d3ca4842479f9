//! Finds an installed SPDK and generates bindings for it.
//!
//! Search order: `SPDK_DIR` (a source tree built in place, or an install prefix), then pkg-config's
//! `spdk_bdev`. When neither is there the crate builds empty, says so in a cargo warning, and tells
//! dependants `found=0` (they read it as `DEP_SPDK_FOUND`).
use std::env;
use std::path::{Path, PathBuf};

/// pkg-config modules the mirror module links against. `spdk_bdev` pulls in thread, log, util, json…
const MODULES: &[&str] = &[
    "spdk_bdev",
    "spdk_env_dpdk",
    "spdk_rpc",
    "spdk_jsonrpc",
    "spdk_json",
    "spdk_thread",
    "spdk_log",
    "spdk_util",
    // SPDK's shared libraries do not all record what they need (libspdk_accel uses ISA-L
    // without saying so), so executables link the system libraries themselves.
    "spdk_syslibs",
];

struct Found {
    include_dirs: Vec<PathBuf>,
    prefix: String,
}

fn main() {
    println!("cargo:rerun-if-env-changed=SPDK_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim/shim.c");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    match find_spdk() {
        Some(found) => {
            generate(&found, &out);
            println!("cargo:found=1");
            println!("cargo:prefix={}", found.prefix);
            println!("cargo:rustc-cfg=spdk");
        }
        None => {
            println!(
                "cargo:warning=SPDK not found (no SPDK_DIR, no pkg-config module spdk_bdev): \
                 building spdk-sys empty; the SPDK bdev module and its tests are left out"
            );
            std::fs::write(out.join("bindings.rs"), "// SPDK not found: no bindings.\n").unwrap();
            println!("cargo:found=0");
        }
    }
    println!("cargo::rustc-check-cfg=cfg(spdk)");
}

fn find_spdk() -> Option<Found> {
    if let Some(dir) = env::var_os("SPDK_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        // A source tree built in place keeps its .pc files in build/lib/pkgconfig; a prefix in lib/pkgconfig.
        for pc in ["build/lib/pkgconfig", "lib/pkgconfig", "lib64/pkgconfig"] {
            let pc = dir.join(pc);
            if pc.join("spdk_bdev.pc").exists() {
                let old = env::var("PKG_CONFIG_PATH").unwrap_or_default();
                env::set_var("PKG_CONFIG_PATH", format!("{}:{old}", pc.display()));
                break;
            }
        }
        let found = probe();
        if found.is_none() {
            println!(
                "cargo:warning=SPDK_DIR={} has no usable spdk_bdev.pc; trying the default search",
                dir.display()
            );
        }
        return found.or_else(|| {
            env::remove_var("PKG_CONFIG_PATH");
            probe()
        });
    }
    probe()
}

fn probe() -> Option<Found> {
    let mut include_dirs = Vec::new();
    let mut cfg = pkg_config::Config::new();
    cfg.cargo_metadata(false);
    let bdev = cfg.probe("spdk_bdev").ok()?;
    let prefix = pkg_config::get_variable("spdk_bdev", "prefix").unwrap_or_default();
    include_dirs.extend(bdev.include_paths.iter().cloned());
    // Link (shared libraries) only once we know SPDK is really there. Every library is linked
    // without --as-needed: SPDK's libraries rely on their users to bring in what they use.
    let mut link = pkg_config::Config::new();
    link.statik(false).cargo_metadata(false);
    let mut libs: Vec<String> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in MODULES {
        if let Ok(lib) = link.probe(m) {
            include_dirs.extend(lib.include_paths);
            for l in lib.libs {
                if !libs.contains(&l) {
                    libs.push(l);
                }
            }
            for d in lib.link_paths {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
    }
    // Stable Rust cannot turn --as-needed off per library, so the dependant links them itself
    // (see the root build.rs), reading DEP_SPDK_LINK_DIRS and DEP_SPDK_LIBS.
    let join = |v: Vec<String>| v.join(" ");
    println!(
        "cargo:link_dirs={}",
        join(dirs.iter().map(|d| d.display().to_string()).collect())
    );
    println!("cargo:libs={}", join(libs));
    if include_dirs.is_empty() && !prefix.is_empty() {
        include_dirs.push(Path::new(&prefix).join("include"));
    }
    Some(Found { include_dirs, prefix })
}

fn generate(found: &Found, out: &Path) {
    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("spdk_.*")
        .allowlist_type("spdk_.*")
        .allowlist_var("SPDK_.*")
        .allowlist_function("spdk_mirror_shim_.*")
        .blocklist_function(".*long_double.*")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        // Packed and holding an aligned union: Rust cannot lay it out; built in the C shim instead.
        .opaque_type("spdk_bdev_ext_io_opts")
        .opaque_type("spdk_nvme.*")
        .opaque_type("spdk_nvmf.*")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for dir in &found.include_dirs {
        builder = builder.clang_arg(format!("-I{}", dir.display()));
    }
    let bindings = builder.generate().expect("bindgen failed on the SPDK headers");
    bindings.write_to_file(out.join("bindings.rs")).unwrap();

    let mut cc = cc::Build::new();
    cc.file("shim/shim.c").warnings(true);
    for dir in &found.include_dirs {
        cc.include(dir);
    }
    cc.compile("spdk_mirror_shim");
}
