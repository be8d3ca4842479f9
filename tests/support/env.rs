//! Where SPDK's applications and the module library are: [`spdk_env`], [`require_spdk`],
//! [`SpdkRoots`] (the search order) and the module library search (`find_module_lib`).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// Name of the module library produced by `cargo build` (crate-type cdylib).
pub const MODULE_LIB_NAME: &str = "libspdk_mirror.so";

/// Paths of the SPDK applications and of the mirror module library.
#[derive(Debug, Clone)]
pub struct SpdkEnv {
    pub spdk_tgt: PathBuf,
    pub bdevperf: PathBuf,
    pub spdk_dd: PathBuf,
    pub nvmf_tgt: PathBuf,
    /// `libspdk_mirror.so` to put in `LD_PRELOAD` when a run asks for `preload`.
    pub module_lib: PathBuf,
}

/// Finds `spdk_tgt`, `bdevperf`, `spdk_dd`, `nvmf_tgt` (see [`SpdkRoots`] for where) and the
/// module library (`SPDK_MIRROR_LIB`, else the newest of `release/` and `debug/libspdk_mirror.so`
/// in the cargo target directory). The error names everything that is missing and how to get it.
pub fn spdk_env() -> Result<SpdkEnv, String> {
    let roots = SpdkRoots::from_env();
    let mut missing = Vec::new();
    let mut find = |name: &str| match roots.find(name) {
        Ok(p) => p,
        Err(e) => {
            missing.push(e);
            PathBuf::new()
        }
    };
    let spdk_tgt = find("spdk_tgt");
    let bdevperf = find("bdevperf");
    let spdk_dd = find("spdk_dd");
    let nvmf_tgt = find("nvmf_tgt");
    let module_lib = match find_module_lib() {
        Ok(p) => p,
        Err(e) => {
            missing.push(e);
            PathBuf::new()
        }
    };
    if missing.is_empty() {
        Ok(SpdkEnv {
            spdk_tgt,
            bdevperf,
            spdk_dd,
            nvmf_tgt,
            module_lib,
        })
    } else {
        Err(format!(
            "SPDK test environment incomplete, missing: {}",
            missing.join("; ")
        ))
    }
}

/// Like [`spdk_env`] but panics with a clear message. Use it in tests that are compiled only
/// when `cfg(spdk)` says SPDK is installed.
pub fn require_spdk() -> SpdkEnv {
    match spdk_env() {
        Ok(env) => env,
        Err(e) => panic!(
            "{e}\n(cfg(spdk) is set: the build found SPDK's libraries, so these tests expect its \
             apps and {MODULE_LIB_NAME}; README.md, \"Finding SPDK\", says how to get them)"
        ),
    }
}

/// Finds SPDK's app `name` where [`SpdkRoots::from_env`] says (`spdk_nvme_perf`, …).
pub fn find_executable(name: &str) -> Option<PathBuf> {
    SpdkRoots::from_env().find(name).ok()
}

/// Where SPDK's applications are looked for, in this order:
///
/// 1. `spdk_dir` (`SPDK_DIR`): a source tree built in place (`build/bin`, `build/examples`), or
///    an install prefix (`bin`);
/// 2. `bin` under `pkg_prefix`, the prefix of pkg-config's `spdk_bdev`;
/// 3. the directories of `PATH`.
///
/// Only regular executable files count.
#[derive(Debug, Clone, Default)]
pub struct SpdkRoots {
    pub spdk_dir: Option<PathBuf>,
    pub pkg_prefix: Option<PathBuf>,
    pub path: Vec<PathBuf>,
}

impl SpdkRoots {
    /// `SPDK_DIR` as the tests run, else as cargo built them; the pkg-config prefix spdk-sys
    /// found at build time (`SPDK_MIRROR_SPDK_PREFIX`, set by build.rs) when it is not empty,
    /// else [`pkg_config_prefix`] asked now; `PATH` as the tests run.
    pub fn from_env() -> SpdkRoots {
        let spdk_dir = spdk_dir_from(std::env::var_os("SPDK_DIR"), option_env!("SPDK_DIR"));
        let pkg_prefix = option_env!("SPDK_MIRROR_SPDK_PREFIX")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| pkg_config_prefix(spdk_dir.as_deref()));
        SpdkRoots {
            spdk_dir,
            pkg_prefix,
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }

    /// Every place `name` is looked for, in search order.
    pub fn candidates(&self, name: &str) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(d) = &self.spdk_dir {
            dirs.extend([d.join("build/bin"), d.join("build/examples"), d.join("bin")]);
        }
        if let Some(p) = &self.pkg_prefix {
            dirs.push(p.join("bin"));
        }
        dirs.extend(self.path.iter().filter(|d| !d.as_os_str().is_empty()).cloned());
        dirs.into_iter().map(|d| d.join(name)).collect()
    }

    /// The first candidate that is an executable file; else an error naming `name`, where it was
    /// looked for and how to get it.
    pub fn find(&self, name: &str) -> Result<PathBuf, String> {
        if let Some(p) = self.candidates(name).into_iter().find(|p| is_executable(p)) {
            return Ok(p);
        }
        let mut searched = Vec::new();
        match &self.spdk_dir {
            Some(d) => searched.push(format!("SPDK_DIR={} (build/bin, build/examples, bin)", d.display())),
            None => searched.push("no SPDK_DIR".to_string()),
        }
        match &self.pkg_prefix {
            Some(p) => searched.push(format!("pkg-config prefix {}/bin", p.display())),
            None => searched.push("no pkg-config prefix".to_string()),
        }
        searched.push("PATH".to_string());
        Err(format!(
            "`{name}` not found (searched {}): {}",
            searched.join(", "),
            how_to_get(name)
        ))
    }
}

/// `SPDK_DIR` from the environment the tests run in, else the one cargo built them with; empty
/// means unset.
pub fn spdk_dir_from(run_time: Option<OsString>, build_time: Option<&str>) -> Option<PathBuf> {
    run_time
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| build_time.filter(|d| !d.is_empty()).map(PathBuf::from))
}

/// The prefix of pkg-config's `spdk_bdev`, searched as spdk-sys's build does (`SPDK_DIR`'s
/// `build/lib/pkgconfig`, `lib/pkgconfig` or `lib64/pkgconfig` first); see [`prefix_from_pc`].
pub fn pkg_config_prefix(spdk_dir: Option<&Path>) -> Option<PathBuf> {
    let mut pc_path: Vec<PathBuf> = spdk_dir
        .into_iter()
        .flat_map(|d| ["build/lib/pkgconfig", "lib/pkgconfig", "lib64/pkgconfig"].map(|p| d.join(p)))
        .filter(|p| p.join("spdk_bdev.pc").is_file())
        .take(1)
        .collect();
    if let Some(old) = std::env::var_os("PKG_CONFIG_PATH") {
        pc_path.extend(std::env::split_paths(&old));
    }
    let ask = |arg: &str| -> String {
        let mut cmd = Command::new("pkg-config");
        cmd.args([arg, "spdk_bdev"]).stdin(Stdio::null()).stderr(Stdio::null());
        if let Ok(p) = std::env::join_paths(&pc_path) {
            cmd.env("PKG_CONFIG_PATH", p);
        }
        match cmd.output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => String::new(),
        }
    };
    let var = ask("--variable=prefix");
    let libs = if var.trim().is_empty() {
        ask("--libs-only-L")
    } else {
        String::new()
    };
    prefix_from_pc(&var, &libs)
}

/// A prefix from pkg-config's answers: its `prefix` variable, else the parent of the first `-L`
/// directory. SPDK's .pc files define no `prefix`: an install says `-L<prefix>/lib`, a source
/// tree built in place `-L<tree>/build/lib` (whose `bin` is then `build/bin`).
pub fn prefix_from_pc(prefix_var: &str, libs_only_l: &str) -> Option<PathBuf> {
    let var = prefix_var.trim();
    if !var.is_empty() {
        return Some(PathBuf::from(var));
    }
    libs_only_l
        .split_whitespace()
        .find_map(|a| a.strip_prefix("-L"))
        .and_then(|lib| Path::new(lib).parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

/// How to get SPDK's app `name` when it is not found.
pub fn how_to_get(name: &str) -> String {
    match name {
        "bdevperf" => "not installed by SPDK's make install: set SPDK_DIR to the built SPDK source \
                       tree (build/examples/bdevperf) or copy it onto PATH"
            .to_string(),
        _ => format!(
            "SPDK builds it into build/bin/{name} and make install copies it to <prefix>/bin: set \
             SPDK_DIR to the built SPDK source tree or to the install prefix, or put it on PATH"
        ),
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The cargo target directories worth searching for the module library, most explicit first.
fn target_dirs() -> Vec<PathBuf> {
    // Cargo sets CARGO_MANIFEST_DIR when running tests; the compile-time value is the fallback.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let mut dirs = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        dirs.push(if t.is_absolute() { t } else { manifest.join(t) });
    } else {
        dirs.push(manifest.join("target"));
    }
    // The running test binary lives in <target>/<profile>/deps/; that catches target dirs set
    // through .cargo/config.toml, which neither variable above reveals.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(t) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            if !dirs.iter().any(|d| d == t) {
                dirs.push(t.to_path_buf());
            }
        }
    }
    dirs
}

/// `SPDK_MIRROR_LIB`, else the library built with the same profile as this test binary
/// (`<target>/<profile>/libspdk_mirror.so`), else the newest of release/debug. A library older
/// than the crate's last build is refused: the test would run yesterday's module.
fn find_module_lib() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SPDK_MIRROR_LIB") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("module library {} (named by SPDK_MIRROR_LIB)", p.display()))
        };
    }
    // The running test binary lives in <target>/<profile>/deps/.
    let own = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf));
    if let Some(profile_dir) = own {
        // Cargo builds the cdylib into deps/ with the test's own build of the crate (it only
        // copies it up one level on `cargo build`), so deps/ always holds the current module.
        let fresh = profile_dir.join("deps").join(MODULE_LIB_NAME);
        if fresh.is_file() {
            return Ok(fresh);
        }
        let lib = profile_dir.join(MODULE_LIB_NAME);
        if let Ok(lib_mtime) = fs::metadata(&lib).and_then(|m| m.modified()) {
            let newest_rlib = fs::read_dir(profile_dir.join("deps"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("libspdk_mirror") && n.ends_with(".rlib")
                })
                .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
                .max();
            if newest_rlib.is_some_and(|r| r > lib_mtime + Duration::from_secs(2)) {
                return Err(format!(
                    "an up-to-date {} (it is older than the code: run `cargo build{}` first)",
                    lib.display(),
                    if profile_dir.ends_with("release") {
                        " --release"
                    } else {
                        ""
                    }
                ));
            }
            return Ok(lib);
        }
    }
    let mut tried = Vec::new();
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for dir in target_dirs() {
        for profile in ["release", "debug"] {
            let p = dir.join(profile).join(MODULE_LIB_NAME);
            match fs::metadata(&p).and_then(|m| m.modified()) {
                Ok(mtime) if best.as_ref().is_none_or(|(t, _)| mtime > *t) => best = Some((mtime, p)),
                Ok(_) => {}
                Err(_) => tried.push(p.display().to_string()),
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        format!(
            "module library {MODULE_LIB_NAME} (run `cargo build`; tried {})",
            tried.join(", ")
        )
    })
}
