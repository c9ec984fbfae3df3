//! The source tree's shape, checked (issue 30): no two files import each
//! other. A file's imports are read from its paths (`use` lines and paths in
//! code, comments and test modules left out): `crate::a::b`, `super::x`
//! (`super::*` is an import of the parent file) and `kernel::a::b` /
//! `appliance::a::b` inside their own crate, each resolved to the file of
//! the longest module path that is one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates checked, with their source roots (relative to the workspace).
pub const CRATES: [(&str, &str); 3] = [("kernel", "kernel/src"), ("appliance", "appliance/src"), ("xtask", "xtask/src")];

/// A module path of a file under `root`: `a/b.rs` and `a/b/mod.rs` are `a::b`.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).expect("under the root").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text that imports: without line comments and without a trailing
/// `#[cfg(test)] mod tests { ... }`.
fn code_of(src: &str) -> String {
    let src = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    let code = src.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    // String literals name paths without importing them.
    let mut out = String::with_capacity(code.len());
    let (mut in_str, mut escaped) = (false, false);
    for c in code.chars() {
        match (in_str, c) {
            (false, '"') => in_str = true,
            (false, _) => out.push(c),
            (true, _) if escaped => escaped = false,
            (true, '\\') => escaped = true,
            (true, '"') => in_str = false,
            (true, _) => {}
        }
    }
    out
}

/// Paths in `code` that start with `crate`, `super` or `own` (the crate's
/// own name), as segments, with `{a, b}` groups expanded one level.
fn paths(code: &str, own: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !word(bytes[i]) || (i > 0 && (word(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && word(bytes[i]) {
            i += 1;
        }
        let head = &code[start..i];
        if head != "crate" && head != "super" && head != own {
            continue;
        }
        let mut segs = Vec::new();
        let mut groups: Vec<String> = Vec::new();
        while code[i..].starts_with("::") {
            i += 2;
            if code[i..].starts_with('{') {
                let end = code[i..].find('}').map_or(code.len(), |e| i + e);
                groups = code[i + 1..end].split(',').map(|g| g.trim().split("::").next().unwrap_or("").split(' ').next().unwrap_or("").to_string()).collect();
                i = end;
                break;
            }
            let s = i;
            while i < bytes.len() && (word(bytes[i]) || bytes[i] == b'*') {
                i += 1;
            }
            segs.push(code[s..i].to_string());
        }
        if groups.is_empty() {
            // `extern crate alloc`, a bare `super`: no path.
            if !segs.is_empty() {
                out.push((head.to_string(), segs));
            }
        } else {
            for g in groups {
                let mut p = segs.clone();
                if !g.is_empty() && g != "self" {
                    p.push(g);
                }
                out.push((head.to_string(), p));
            }
        }
    }
    out
}

/// Every file's imports of other files of its crate.
pub fn imports(workspace: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut edges = BTreeMap::new();
    for (name, root) in CRATES {
        let root = workspace.join(root);
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        let by_module: BTreeMap<Vec<String>, PathBuf> = files.iter().map(|f| (module_of(&root, f), f.clone())).collect();
        let resolve = |path: &[String]| (1..=path.len()).rev().find_map(|k| by_module.get(&path[..k]).cloned());
        for f in &files {
            let me = module_of(&root, f);
            let mut deps = BTreeSet::new();
            for (head, segs) in paths(&code_of(&std::fs::read_to_string(f).unwrap_or_default()), name) {
                let full: Vec<String> = match head.as_str() {
                    "super" => me[..me.len().saturating_sub(1)].iter().cloned().chain(segs.into_iter().filter(|s| s != "*")).collect(),
                    _ => segs.into_iter().filter(|s| s != "*").collect(),
                };
                let target = if full.is_empty() { by_module.get(&Vec::new()).cloned() } else { resolve(&full) };
                if let Some(t) = target.filter(|t| t != f) {
                    deps.insert(t);
                }
            }
            edges.insert(f.clone(), deps);
        }
    }
    edges
}

/// Pairs of files that import each other.
pub fn circles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for (a, ds) in edges {
        for b in ds {
            if a < b && edges.get(b).is_some_and(|d| d.contains(a)) {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_with_groups_and_globs() {
        let p = paths("extern crate alloc;\nuse crate::a::{b, c::d};\nuse super::*;\nlet x = kernel::nmi::watchdog::hz();", "kernel");
        let got: Vec<String> = p.iter().map(|(h, s)| format!("{h}::{}", s.join("::"))).collect();
        assert_eq!(got, ["crate::a::b", "crate::a::c", "super::*", "kernel::nmi::watchdog::hz"]);
    }

    #[test]
    fn a_circle_is_found_and_comments_are_not_imports() {
        let dir = std::env::temp_dir().join(format!("layout-test-{}", std::process::id()));
        let src = dir.join("kernel/src");
        std::fs::create_dir_all(src.join("a")).unwrap();
        std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod c;\n").unwrap();
        std::fs::write(src.join("a/mod.rs"), "mod b;\nuse crate::a::b::thing;\n").unwrap();
        std::fs::write(src.join("a/b.rs"), "use super::*;\n").unwrap();
        std::fs::write(src.join("c.rs"), "// crate::a::b is only named in a comment\nlet s = \"crate::a::b in a string\";\n").unwrap();
        let edges = imports(&dir);
        let found = circles(&edges);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found, [(src.join("a/b.rs"), src.join("a/mod.rs"))]);
        assert!(edges[&src.join("c.rs")].is_empty());
    }

    #[test]
    fn no_two_files_import_each_other() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let found = circles(&imports(&root));
        assert!(found.is_empty(), "files that import each other: {found:#?}");
    }
}
