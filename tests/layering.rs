//! The layering of `src/`: the stages (`src/stages/<stage>`) import no other
//! stage, no module outside the stages imports one (except the pipeline,
//! which runs them, and the binary's commands, which call them), and no two modules of `src/` import each other through
//! any chain. Read from the source text: every `crate::`, `super::` and
//! `self::` path, `use` groups included, resolved to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules allowed to import the stages: the runner of a date, and the
/// commands of the binary (`nightrec report`, `nightrec eval`).
const ABOVE_STAGES: &[&str] = &["commands", "pipeline"];

/// The module path of a source file under `src/` (`stages/candidates/users.rs`
/// → `["stages", "candidates", "users"]`; `lib.rs` → `[]`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// Source text without comments, string and char literals.
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '/' if b.get(i + 1) == Some(&'/') => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '/' if b.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            'r' if matches!(b.get(i + 1), Some('"') | Some('#')) && (i == 0 || !is_ident(b[i - 1])) => {
                // Raw string: r"...", r#"..."#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == '"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            '"' => {
                i += 1;
                while i < b.len() && b[i] != '"' {
                    if b[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' if b.get(i + 2) == Some(&'\'') || (b.get(i + 1) == Some(&'\\')) => {
                // A char literal ('x', '\n'); lifetimes ('a) are kept.
                let mut j = i + 1;
                if b.get(j) == Some(&'\\') {
                    j += 1;
                }
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path a `crate::`, `super::` or `self::` prefix starts in `code`,
/// brace groups expanded, as segments (the prefix kept as the first).
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if is_ident(c[i]) && (i == 0 || !(is_ident(c[i - 1]) || c[i - 1] == ':')) {
            let start = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            if matches!(word.as_str(), "crate" | "super" | "self") && c.get(i) == Some(&':') {
                let (paths, end) = path_tree(&c, start);
                out.extend(paths);
                i = end;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The paths of the `a::b::{c, d::e}` tree starting at `i`, and where it ends.
fn path_tree(c: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        while i < c.len() && c[i].is_whitespace() {
            i += 1;
        }
        if c.get(i) == Some(&'{') {
            let mut all = Vec::new();
            i += 1;
            loop {
                while i < c.len() && (c[i].is_whitespace() || c[i] == ',') {
                    i += 1;
                }
                if i >= c.len() || c[i] == '}' {
                    i += 1;
                    break;
                }
                let (sub, end) = path_tree(c, i);
                for s in sub {
                    let mut p = prefix.clone();
                    p.extend(s);
                    all.push(p);
                }
                i = end;
                // Skip `as alias` and anything else up to the next item.
                while i < c.len() && c[i] != ',' && c[i] != '}' {
                    i += 1;
                }
            }
            return (all, i);
        }
        let start = i;
        while i < c.len() && is_ident(c[i]) {
            i += 1;
        }
        if start == i {
            return (vec![prefix], i);
        }
        prefix.push(c[start..i].iter().collect());
        if c.get(i) == Some(&':') && c.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// A path resolved against the module it is written in: the absolute
/// module segments it names (items included; only the front matters).
fn resolve(module: &[String], path: &[String]) -> Vec<String> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {}
    }
    while rest.first().map(String::as_str) == Some("super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    base
}

/// The room a module belongs to: a stage (`stages::<stage>`) or a
/// top-level module of `src/`. None for the crate root and `stages` itself.
fn room(path: &[String]) -> Option<String> {
    match path {
        [s, stage, ..] if s == "stages" => Some(format!("stages::{stage}")),
        [s] if s == "stages" => None,
        [m, ..] => Some(m.clone()),
        [] => None,
    }
}

/// Which rooms each room imports, from (file under `src/`, its text).
fn imports(files: &[(PathBuf, String)], rooms: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let module = module_of(rel);
        let Some(from) = room(&module) else { continue };
        let entry = graph.entry(from.clone()).or_default();
        for p in paths_in(&code_only(text)) {
            if let Some(to) = room(&resolve(&module, &p))
                && to != from
                && rooms.contains(&to)
            {
                entry.insert(to);
            }
        }
    }
    graph
}

/// What breaks the layering: a stage importing another, a module outside
/// the stages (but the pipeline) importing one, an import cycle.
fn violations(files: &[(PathBuf, String)]) -> Vec<String> {
    let rooms: BTreeSet<String> = files.iter().filter_map(|(rel, _)| room(&module_of(rel))).collect();
    let graph = imports(files, &rooms);
    let is_stage = |r: &str| r.starts_with("stages::");
    let mut bad = Vec::new();
    for (from, tos) in &graph {
        for to in tos.iter().filter(|t| is_stage(t)) {
            if is_stage(from) {
                bad.push(format!("stage {from} imports stage {to}"));
            } else if !ABOVE_STAGES.contains(&from.as_str()) {
                bad.push(format!("{from} (below the stages) imports stage {to}"));
            }
        }
    }
    // Cycles: a depth-first search that reports each back edge's cycle.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        bad: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(n.to_string());
            bad.push(format!("import cycle: {}", cycle.join(" -> ")));
            return;
        }
        if done.contains(n) {
            return;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            visit(m, g, stack, done, bad);
        }
        stack.pop();
        done.insert(n.to_string());
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, &graph, &mut Vec::new(), &mut done, &mut bad);
    }
    bad
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            out.push((p.strip_prefix(root).unwrap().to_path_buf(), text));
        }
    }
}

#[test]
fn no_stage_imports_another_and_no_module_imports_itself_through_others() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    // main.rs is the binary: it reaches the library through `nightrec::`.
    files.retain(|(rel, _)| rel != Path::new("main.rs"));
    let stages: Vec<_> = files.iter().filter(|(rel, _)| rel.starts_with("stages")).collect();
    assert!(stages.len() >= 8, "the stages moved: {} files under src/stages", stages.len());
    let bad = violations(&files);
    assert!(bad.is_empty(), "the layering of src/ is broken:\n{}", bad.join("\n"));
}

#[test]
fn the_layering_check_sees_every_way_of_writing_an_import() {
    let f = |path: &str, text: &str| (PathBuf::from(path), text.to_string());
    let floor = f("job.rs", "pub struct Job;");
    let base = vec![
        f("stages/mod.rs", "pub mod clean; pub mod train; pub mod candidates;"),
        f("stages/clean.rs", "use crate::job::Job;"),
        f("stages/train.rs", "fn f() { let s = \"crate::stages::clean\"; } // crate::stages::clean"),
        f("stages/candidates/mod.rs", "mod users; use super::super::job::Job;"),
        f("stages/candidates/users.rs", "use super::Target; use crate::job;"),
        f("pipeline.rs", "use crate::stages::{clean, train};"),
        floor.clone(),
    ];
    assert_eq!(violations(&base), Vec::<String>::new(), "strings, comments, a stage's own modules and the pipeline");
    let with = |extra: (PathBuf, String)| {
        let mut v = base.clone();
        v.retain(|x| x.0 != extra.0);
        v.push(extra);
        violations(&v)
    };
    for (file, text) in [
        ("stages/clean.rs", "use crate::stages::train;"),
        ("stages/clean.rs", "use crate::{job::Job, stages::{self, train::Model}};"),
        ("stages/clean.rs", "fn f() { super::train::run(); }"),
        ("stages/candidates/users.rs", "use super::super::train::X;"),
        ("stages/candidates/users.rs", "fn f() -> crate::stages::clean::T { todo!() }"),
    ] {
        let bad = with(f(file, text));
        assert!(bad.iter().any(|b| b.contains("imports stage")), "{file}: {text} not caught: {bad:?}");
    }
    let bad = with(f("job.rs", "use crate::stages::clean::run;"));
    assert!(bad.iter().any(|b| b.contains("job (below the stages) imports stage stages::clean")), "{bad:?}");
    let mut cyclic = base.clone();
    cyclic.retain(|x| x.0 != floor.0);
    cyclic.push(f("job.rs", "use crate::layout;"));
    cyclic.push(f("layout.rs", "use crate::{config, job::Job};"));
    cyclic.push(f("config.rs", ""));
    let bad = violations(&cyclic);
    assert!(bad.iter().any(|b| b.starts_with("import cycle: job -> layout -> job")), "{bad:?}");
}
