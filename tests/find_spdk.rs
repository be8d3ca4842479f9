//! Where the tests look for SPDK's apps: `SPDK_DIR` (a built source tree, then an install
//! prefix), then the pkg-config prefix's `bin`, then `PATH`. Fake trees of empty executable
//! files in a temporary directory; no SPDK needed. The search roots are passed in, never set in
//! the environment, so these tests can run beside any other.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::{prefix_from_pc, spdk_dir_from, SpdkRoots, TestDir};

/// An empty file at `dir/rel`, executable or not.
fn touch(dir: &Path, rel: &str, exec: bool) -> PathBuf {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, b"").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 })).unwrap();
    p
}

/// A source tree, an install prefix, a pkg-config prefix and two PATH directories, all holding
/// `spdk_tgt`; `bdevperf` only in the source tree's build/examples and on PATH.
struct Fake {
    _dir: TestDir,
    tree: PathBuf,
    prefix: PathBuf,
    pkg: PathBuf,
    path1: PathBuf,
    path2: PathBuf,
}

fn fake(name: &str) -> Fake {
    let dir = TestDir::new(name).unwrap();
    let root = dir.path().to_path_buf();
    let f = Fake {
        tree: root.join("spdk-src"),
        prefix: root.join("prefix"),
        pkg: root.join("pkg"),
        path1: root.join("path1"),
        path2: root.join("path2"),
        _dir: dir,
    };
    touch(&f.tree, "build/bin/spdk_tgt", true);
    touch(&f.tree, "build/examples/bdevperf", true);
    touch(&f.tree, "bin/spdk_tgt", true);
    touch(&f.prefix, "bin/spdk_tgt", true);
    touch(&f.pkg, "bin/spdk_tgt", true);
    touch(&f.path1, "spdk_tgt", true);
    touch(&f.path2, "spdk_tgt", true);
    touch(&f.path2, "bdevperf", true);
    f
}

fn roots(spdk_dir: Option<&Path>, pkg: Option<&Path>, path: &[&Path]) -> SpdkRoots {
    SpdkRoots {
        spdk_dir: spdk_dir.map(Path::to_path_buf),
        pkg_prefix: pkg.map(Path::to_path_buf),
        path: path.iter().map(|p| p.to_path_buf()).collect(),
    }
}

#[test]
fn a_built_source_tree_in_spdk_dir_comes_first() {
    let f = fake("find_tree_first");
    let r = roots(Some(&f.tree), Some(&f.pkg), &[&f.path1, &f.path2]);
    assert_eq!(r.find("spdk_tgt").unwrap(), f.tree.join("build/bin/spdk_tgt"));
    assert_eq!(r.find("bdevperf").unwrap(), f.tree.join("build/examples/bdevperf"));
}

#[test]
fn an_install_prefix_in_spdk_dir_comes_before_the_pkg_config_prefix() {
    let f = fake("find_prefix");
    let r = roots(Some(&f.prefix), Some(&f.pkg), &[&f.path1]);
    assert_eq!(r.find("spdk_tgt").unwrap(), f.prefix.join("bin/spdk_tgt"));
}

#[test]
fn the_pkg_config_prefix_comes_before_path() {
    let f = fake("find_pkg");
    let r = roots(None, Some(&f.pkg), &[&f.path1, &f.path2]);
    assert_eq!(r.find("spdk_tgt").unwrap(), f.pkg.join("bin/spdk_tgt"));
    // An SPDK_DIR without the app falls through to the next place.
    let empty = f.tree.join("nothing-here");
    let r = roots(Some(&empty), Some(&f.pkg), &[&f.path1]);
    assert_eq!(r.find("spdk_tgt").unwrap(), f.pkg.join("bin/spdk_tgt"));
}

#[test]
fn path_is_last_and_searched_in_order() {
    let f = fake("find_path");
    let r = roots(None, None, &[&f.path1, &f.path2]);
    assert_eq!(r.find("spdk_tgt").unwrap(), f.path1.join("spdk_tgt"));
    let r = roots(Some(&f.prefix), Some(&f.pkg), &[&f.path1, &f.path2]);
    assert_eq!(r.find("bdevperf").unwrap(), f.path2.join("bdevperf"));
}

#[test]
fn only_executable_files_count() {
    let f = fake("find_exec");
    touch(&f.path1, "spdk_dd", false);
    fs::create_dir_all(f.pkg.join("bin/spdk_dd")).unwrap();
    let dd = touch(&f.path2, "spdk_dd", true);
    let r = roots(None, Some(&f.pkg), &[&f.path1, &f.path2]);
    assert_eq!(r.find("spdk_dd").unwrap(), dd);
}

#[test]
fn a_missing_app_names_itself_and_how_to_get_it() {
    let f = fake("find_missing");
    // Only an install prefix: make install does not install bdevperf.
    let r = roots(Some(&f.prefix), Some(&f.pkg), &[&f.path1]);
    let e = r.find("bdevperf").unwrap_err();
    assert!(e.contains("`bdevperf` not found"), "{e}");
    assert!(e.contains(&format!("SPDK_DIR={}", f.prefix.display())), "{e}");
    assert!(e.contains(&format!("pkg-config prefix {}/bin", f.pkg.display())), "{e}");
    assert!(
        e.contains(
            "not installed by SPDK's make install: set SPDK_DIR to the built SPDK source tree \
             (build/examples/bdevperf) or copy it onto PATH"
        ),
        "{e}"
    );
    let e = roots(None, None, &[]).find("nvmf_tgt").unwrap_err();
    assert!(
        e.contains("`nvmf_tgt` not found (searched no SPDK_DIR, no pkg-config prefix, PATH)"),
        "{e}"
    );
    assert!(e.contains("build/bin/nvmf_tgt") && e.contains("<prefix>/bin"), "{e}");
}

#[test]
fn spdk_dir_is_read_at_run_time_and_falls_back_to_build_time() {
    assert_eq!(
        spdk_dir_from(Some("/run".into()), Some("/build")),
        Some(PathBuf::from("/run"))
    );
    assert_eq!(spdk_dir_from(None, Some("/build")), Some(PathBuf::from("/build")));
    assert_eq!(
        spdk_dir_from(Some("".into()), Some("/build")),
        Some(PathBuf::from("/build"))
    );
    assert_eq!(spdk_dir_from(None, Some("")), None);
    assert_eq!(spdk_dir_from(None, None), None);
}

#[test]
fn the_pkg_config_prefix_is_its_variable_else_the_parent_of_its_libdir() {
    // SPDK's .pc files have no `prefix` variable.
    assert_eq!(
        prefix_from_pc("", "-L/usr/local/lib  \n"),
        Some(PathBuf::from("/usr/local"))
    );
    assert_eq!(
        prefix_from_pc("\n", "-L/opt/spdk/build/lib -L/usr/lib"),
        Some(PathBuf::from("/opt/spdk/build"))
    );
    assert_eq!(
        prefix_from_pc("/opt/x\n", "-L/usr/local/lib"),
        Some(PathBuf::from("/opt/x"))
    );
    assert_eq!(prefix_from_pc("", ""), None);
    assert_eq!(prefix_from_pc("", "-L/"), None);
}

/// What this build searches, for whoever reads the test log (`--nocapture`).
#[test]
fn the_search_roots_of_this_build() {
    let r = SpdkRoots::from_env();
    eprintln!(
        "SPDK_DIR: {:?}; SPDK_MIRROR_SPDK_PREFIX at build time: {:?}; pkg-config prefix used: {:?}",
        r.spdk_dir,
        option_env!("SPDK_MIRROR_SPDK_PREFIX"),
        r.pkg_prefix
    );
    for app in ["spdk_tgt", "bdevperf", "spdk_dd", "nvmf_tgt", "spdk_nvme_perf"] {
        match r.find(app) {
            Ok(p) => eprintln!("{app}: {}", p.display()),
            Err(e) => eprintln!("{e}"),
        }
    }
    #[cfg(spdk)]
    assert!(
        r.spdk_dir.is_some() || r.pkg_prefix.is_some(),
        "cfg(spdk) is set, so SPDK_DIR or pkg-config's spdk_bdev found SPDK"
    );
}

/// Every SPDK test is skipped alike when the build found no SPDK: after each `#[test]` of
/// `tests/spdk_*.rs` comes `#[cfg_attr(not(spdk), ignore = <support::SKIP_NO_SPDK>)]`. The
/// attribute takes only a literal, so each test spells the reason out and this keeps the copies
/// equal.
#[test]
fn every_spdk_test_is_skipped_alike() {
    let want: String = format!("#[cfg_attr(not(spdk), ignore = {:?})]", support::SKIP_NO_SPDK)
        .split_whitespace()
        .collect();
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for entry in fs::read_dir(&tests_dir).expect("tests/ is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if !(name.starts_with("spdk_") && name.ends_with(".rs")) {
            continue;
        }
        let text = fs::read_to_string(&path).expect("a test file is readable");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.trim() == "#[test]") {
            // The attributes between `#[test]` and the `fn`, whitespace dropped (rustfmt may
            // spread the attribute over several lines).
            let attrs: String = lines[i + 1..]
                .iter()
                .take_while(|l| !l.trim_start().starts_with("fn ") && !l.trim_start().starts_with("async fn "))
                .flat_map(|l| l.split_whitespace())
                .collect();
            checked += 1;
            if attrs != want {
                wrong.push(format!("{name}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(checked > 0, "no #[test] found in {}/spdk_*.rs", tests_dir.display());
    assert!(
        wrong.is_empty(),
        "these SPDK tests are not followed by exactly `#[cfg_attr(not(spdk), ignore = \"{}\")]`:\n{}",
        support::SKIP_NO_SPDK,
        wrong.join("\n")
    );
}
