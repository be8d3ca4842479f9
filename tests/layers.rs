//! How the source is layered, checked from the source itself (no SPDK needed):
//! - the crate's top-level modules (`engine`, `placement`, `spdk`, ...) use each other without
//!   a cycle;
//! - within a directory module (`src/engine/`, `src/spdk/`, `src/spdk/channel/`, ...) no two
//!   modules use each other, directly or around a loop (a directory module in it counts as one,
//!   with all its files);
//! - in `src/spdk/` each module uses only modules of its own layer or the ones before it, the
//!   layers being the `// layer N` groups of `mod` lines in `src/spdk/mod.rs`, and every module
//!   there belongs to one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The source without `//` comments (doc comments name modules in prose).
fn code_of(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal ("http://") is rare enough here to ignore.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segments that follow `prefix` in `code`: `prefix::name` and each name of
/// `prefix::{a, b::c, self}`.
fn used_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // a longer path that merely ends in the prefix's first word
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// A cycle in `graph`, if there is one (as the list of nodes around it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).expect("on the stack");
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// The modules of directory module `dir` other than its `mod.rs`, by name: each `name.rs`, and
/// each `name/` directory module (with every file under it, its `mod.rs` first).
fn units_of(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for p in fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
    {
        let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
        if p.is_dir() && p.join("mod.rs").exists() {
            out.insert(name, rs_files_under(&p));
        } else if p.extension().is_some_and(|x| x == "rs") && name != "mod" {
            out.insert(name, vec![p]);
        }
    }
    out
}

/// Every `.rs` file under `dir`, at any depth, `dir/mod.rs` first.
fn rs_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![dir.join("mod.rs")];
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files.extend(rs_files_under(&p));
        } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "mod.rs") {
            files.push(p);
        }
    }
    files.retain(|f| f.exists());
    files
}

/// Module -> sibling modules it uses, in directory module `dir` (the crate's module
/// `module`, as `spdk` or `spdk::channel`): through `crate::<module>::`, or `super::` from a
/// file beside them (`super::super::` from a file one directory down, and so on).
fn sibling_graph(module: &str, dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let units = units_of(dir);
    let mut graph = BTreeMap::new();
    for (name, files) in &units {
        let mut used = BTreeSet::new();
        for f in files {
            let code = code_of(f);
            // How far below `dir` the file's module is: `x.rs` and `x/mod.rs` are siblings
            // (`super::`), `x/y.rs` one further down (`super::super::`).
            let rel = f.strip_prefix(dir).expect("under dir");
            let mut depth = rel.components().count();
            if rel.file_name().is_some_and(|n| n == "mod.rs") {
                depth -= 1;
            }
            used.extend(used_after(&code, &"super::".repeat(depth.max(1))));
            used.extend(used_after(&code, &format!("crate::{module}::")));
        }
        used.retain(|u| u != name && units.contains_key(u));
        graph.insert(name.clone(), used);
    }
    graph
}

/// Every directory module below `dir` (the crate's module `module`; "" for `src/`), at any
/// depth, with its path as a crate module.
fn directory_modules(dir: &Path, module: &str, out: &mut Vec<(String, PathBuf)>) {
    for name in units_of(dir).into_keys() {
        let sub = dir.join(&name);
        // A unit that is a directory is a directory module (`units_of` keeps only those).
        if sub.is_dir() {
            let path = if module.is_empty() {
                name
            } else {
                format!("{module}::{name}")
            };
            out.push((path.clone(), sub.clone()));
            directory_modules(&sub, &path, out);
        }
    }
}

/// The `// layer N` groups of `src/spdk/mod.rs`: module name -> layer.
fn spdk_layers() -> BTreeMap<String, u32> {
    let text = fs::read_to_string(src().join("spdk/mod.rs")).expect("src/spdk/mod.rs");
    let mut layer = None;
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("// layer ") {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            layer = Some(n.parse::<u32>().expect("a layer number after `// layer `"));
        } else if let Some(m) = line
            .strip_prefix("mod ")
            .or_else(|| line.strip_prefix("pub mod "))
            .and_then(|m| m.strip_suffix(';'))
        {
            let l = layer.unwrap_or_else(|| panic!("src/spdk/mod.rs: `mod {m};` before any `// layer N` line"));
            out.insert(m.to_string(), l);
        }
    }
    out
}

#[test]
fn top_level_modules_use_each_other_without_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let entries: Vec<PathBuf> = fs::read_dir(src())
        .expect("src")
        .map(|e| e.expect("entry").path())
        .collect();
    let modules: BTreeSet<String> = entries
        .iter()
        .filter_map(|p| {
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            let is_mod = p.is_dir() || p.extension().is_some_and(|x| x == "rs");
            (is_mod && stem != "lib" && stem != "main").then_some(stem)
        })
        .collect();
    for m in &modules {
        let mut files = Vec::new();
        let (file, dir) = (src().join(format!("{m}.rs")), src().join(m));
        if file.exists() {
            files.push(file);
        }
        if dir.is_dir() {
            files.extend(rs_files_under(&dir));
        }
        let mut used = BTreeSet::new();
        for f in files.iter().filter(|f| f.exists()) {
            used.extend(used_after(&code_of(f), "crate::"));
        }
        used.retain(|u| u != m && modules.contains(u));
        graph.insert(m.clone(), used);
    }
    assert!(graph.contains_key("engine") && graph.contains_key("spdk"), "{graph:?}");
    if let Some(c) = find_cycle(&graph) {
        panic!("the crate's modules use each other in a cycle: {}", c.join(" -> "));
    }
}

#[test]
fn no_two_files_of_a_module_use_each_other() {
    let mut dirs = Vec::new();
    directory_modules(&src(), "", &mut dirs);
    assert!(dirs.iter().any(|(m, _)| m == "spdk::channel"), "{dirs:?}");
    for (module, dir) in dirs {
        let graph = sibling_graph(&module, &dir);
        if let Some(c) = find_cycle(&graph) {
            panic!(
                "src/{}/: files use each other in a cycle: {}",
                module.replace("::", "/"),
                c.join(" -> ")
            );
        }
    }
}

#[test]
fn spdk_glue_files_use_only_their_layer_and_the_ones_below() {
    let layers = spdk_layers();
    let dir = src().join("spdk");
    let units = units_of(&dir);
    let unlisted: Vec<&String> = units.keys().filter(|f| !layers.contains_key(*f)).collect();
    assert!(
        unlisted.is_empty(),
        "src/spdk/ files in no `// layer N` group of mod.rs: {unlisted:?}"
    );
    assert!(layers.len() > 20, "the layer table lists {} files", layers.len());
    let mut upward = Vec::new();
    for (name, uses) in sibling_graph("spdk", &dir) {
        let own = layers[&name];
        for u in uses {
            if layers[&u] > own {
                upward.push(format!("{name} (layer {own}) uses {u} (layer {})", layers[&u]));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "src/spdk/: uses above a file's layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // The parser behind the tests above, on the shapes the source uses.
    let code = "use super::ffi::{errlog, guard};\nuse super::{join, legs::x};\nlet a = super::persist::kick(m);\nfoo_super::bar";
    let used = used_after(code, "super::");
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["ffi", "join", "legs", "persist"].map(String::from)
    );
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::new());
    assert_eq!(find_cycle(&g), None);
    g.get_mut("c").expect("c").insert("a".to_string());
    assert_eq!(find_cycle(&g).map(|c| c.len()), Some(4));
    // A comment naming a module is not a use of it.
    let dir = std::env::temp_dir().join(format!("layers-check-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let f = dir.join("x.rs");
    fs::write(&f, "// super::hidden\nuse super::shown;\n").expect("write");
    assert_eq!(
        used_after(&code_of(&f), "super::").into_iter().collect::<Vec<_>>(),
        ["shown"]
    );
    // A directory module counts as one, with all its files: `crate::m::a` from any of them,
    // `super::a` from its `mod.rs`, `super::super::a` from a file inside it (where `super::d`
    // is its own child, not the sibling `d`).
    let m = dir.join("m");
    fs::create_dir_all(m.join("b")).expect("temp dir");
    for (file, text) in [
        ("a.rs", ""),
        ("d.rs", ""),
        ("b/mod.rs", "mod c;\nmod d;\n"),
        ("b/c.rs", "use super::super::a::x;\nuse super::d::y;\n"),
        ("b/d.rs", ""),
    ] {
        fs::write(m.join(file), text).expect("write");
    }
    let graph = sibling_graph("m", &m);
    assert_eq!(graph["b"], BTreeSet::from(["a".to_string()]));
    fs::write(m.join("b/c.rs"), "use crate::m::d::z;\n").expect("write");
    assert_eq!(sibling_graph("m", &m)["b"], BTreeSet::from(["d".to_string()]));
    let mut dirs = Vec::new();
    directory_modules(&m, "m", &mut dirs);
    assert_eq!(dirs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["m::b"]);
    let _ = fs::remove_dir_all(&dir);
    // The real layer table.
    let layers = spdk_layers();
    assert_eq!(layers.get("ffi"), Some(&0));
    assert!(layers["rpc"] > layers["mirror"] && layers["channel"] > layers["mirror"]);
}
