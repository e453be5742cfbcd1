//! No import circle inside a crate: between the sibling modules of any
//! parent module (the folders of `workflows/src`, `worker/src`, ...), the
//! `crate::` / `super::` / `self::` paths must point one way only.
//!
//! A circle (`ledger::sync` uses `ledger::payments`, which uses
//! `ledger::sync`) means neither module can be read, moved or tested
//! without the other: the shared part belongs in a third module. rustc
//! accepts circles, so this test is what keeps them out.
//!
//! How: each crate's module tree is read from its `lib.rs` (following
//! `mod x;`, `#[path]`, inline `mod x { }`), every path in `use` trees and
//! in code is resolved (through `pub use` re-exports, so a re-export in a
//! `mod.rs` cannot hide a dependency), and a path from module `a::b::c` to
//! `a::d::e` is an edge `b → d` among the children of `a`. Comments, string
//! literals and doc links do not count. Test-only modules (`#[cfg(test)]
//! mod tests { }`) count like any other code: a test that needs a sibling
//! that needs it back is a circle too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates checked, by their `src` folder relative to the workspace root.
const CRATES: &[&str] = &["workflows/src", "adapters/src", "client/src", "worker/src"];

#[test]
fn no_import_circle_in_any_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = String::new();
    for krate in CRATES {
        let src = root.join(krate);
        let tree = ModuleTree::read(&src.join("lib.rs"));
        assert!(
            tree.modules.len() > 1,
            "{krate}: read no modules beyond the root; the reader is broken"
        );
        for circle in tree.circles() {
            report.push_str(&format!("{krate}: {circle}\n"));
        }
    }
    let report = report.replace(&format!("{}/", root.display()), "");
    assert!(
        report.is_empty(),
        "import circles between sibling modules:\n{report}"
    );
}

// ---------------------------------------------------------------------------
// Tokens: identifiers, `::`, single punctuation, string literals. Comments,
// char literals, lifetimes and numbers are dropped.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // `::`
    Punct(char),
    Str(String),
}

fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let bump_lines =
        |s: &[char], line: &mut usize| *line += s.iter().filter(|c| **c == '\n').count();
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
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
                    if b[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if (c == 'r' || c == 'b') && raw_string_start(&b, i).is_some() {
            let (hashes, body) = raw_string_start(&b, i).unwrap_or((0, i));
            let mut j = body;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    break;
                }
                j += 1;
            }
            let text: String = b[body..j.min(b.len())].iter().collect();
            bump_lines(&b[body..j.min(b.len())], &mut line);
            out.push((Tok::Str(text), line));
            i = j + 1 + hashes;
        } else if c == '"' || (c == 'b' && b.get(i + 1) == Some(&'"')) {
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let mut j = start;
            while j < b.len() && b[j] != '"' {
                if b[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            let end = j.min(b.len());
            bump_lines(&b[start..end], &mut line);
            out.push((Tok::Str(b[start..end].iter().collect()), line));
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            if b.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            // `r#type`: a raw identifier.
            let word = word.strip_prefix("r#").map(str::to_string).unwrap_or(word);
            out.push((Tok::Ident(word), line));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '.') {
                if b[i] == '.' && !b.get(i + 1).is_some_and(char::is_ascii_digit) {
                    break;
                }
                i += 1;
            }
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`: the number of hashes and where the body starts.
fn raw_string_start(b: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if b[j] == 'b' {
        j += 1;
    }
    if b.get(j) != Some(&'r') {
        return None;
    }
    // Not the tail of an identifier (`bar"`): the caller is at a token start.
    j += 1;
    let mut hashes = 0;
    while b.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (b.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

// ---------------------------------------------------------------------------
// The module tree and the paths each module names.

type ModPath = Vec<String>;

#[derive(Debug, Default)]
struct ModuleTree {
    /// Every module, from the crate root (`[]`).
    modules: BTreeSet<ModPath>,
    /// `pub use` re-exports: (module, name) → the path it stands for.
    aliases: BTreeMap<(ModPath, String), ModPath>,
    /// `pub use path::*` re-exports: module → the paths globbed.
    globs: BTreeMap<ModPath, Vec<ModPath>>,
    /// Items defined at a module's top level: (module, name).
    defs: BTreeSet<(ModPath, String)>,
    /// Every path named: (the module naming it, the path as written,
    /// already made absolute, file:line).
    refs: Vec<(ModPath, ModPath, String)>,
}

impl ModuleTree {
    fn read(lib_rs: &Path) -> ModuleTree {
        let mut tree = ModuleTree::default();
        tree.read_file(lib_rs, Vec::new(), true);
        tree
    }

    /// Reads one file holding module `module`; `mod_rs`: it is a `lib.rs`
    /// or `mod.rs` (its children live next to it, not in a folder of its name).
    fn read_file(&mut self, file: &Path, module: ModPath, mod_rs: bool) {
        let src = fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let toks = tokenize(&src);
        let dir = if mod_rs {
            file.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            file.with_extension("")
        };
        self.modules.insert(module.clone());
        let name = file.display().to_string();
        self.read_items(
            &toks,
            &mut 0,
            &module,
            &dir,
            &name,
            file.parent().unwrap_or(Path::new(".")),
        );
    }

    /// Reads tokens from `*i` until the closing brace of the current block
    /// (or the end), in module `module` whose child files live in `dir`.
    fn read_items(
        &mut self,
        toks: &[(Tok, usize)],
        i: &mut usize,
        module: &ModPath,
        dir: &Path,
        file: &str,
        file_dir: &Path,
    ) {
        let mut depth = 0usize;
        let mut path_attr: Option<String> = None;
        while *i < toks.len() {
            let (tok, line) = &toks[*i];
            match tok {
                Tok::Punct('{') => {
                    depth += 1;
                    *i += 1;
                }
                Tok::Punct('}') => {
                    *i += 1;
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                }
                Tok::Punct('#') if toks.get(*i + 1).map(|t| &t.0) == Some(&Tok::Punct('[')) => {
                    // An attribute: remember `#[path = "..."]` for the next `mod`.
                    if let (
                        Some((Tok::Ident(a), _)),
                        Some((Tok::Punct('='), _)),
                        Some((Tok::Str(p), _)),
                    ) = (toks.get(*i + 2), toks.get(*i + 3), toks.get(*i + 4))
                        && a == "path"
                    {
                        path_attr = Some(p.clone());
                    }
                    let mut nest = 0;
                    *i += 1;
                    while *i < toks.len() {
                        match toks[*i].0 {
                            Tok::Punct('[') => nest += 1,
                            Tok::Punct(']') => {
                                nest -= 1;
                                if nest == 0 {
                                    *i += 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                        *i += 1;
                    }
                }
                Tok::Ident(kw) if kw == "mod" && depth == 0 => {
                    let Some((Tok::Ident(name), _)) = toks.get(*i + 1) else {
                        *i += 1;
                        continue;
                    };
                    let mut child = module.clone();
                    child.push(name.clone());
                    match toks.get(*i + 2).map(|t| &t.0) {
                        Some(Tok::Punct(';')) => {
                            *i += 3;
                            let (path, mod_rs) = match path_attr.take() {
                                Some(p) => {
                                    let p = file_dir.join(p);
                                    let mod_rs = p.file_name().is_some_and(|f| f == "mod.rs");
                                    (p, mod_rs)
                                }
                                None => child_file(dir, name),
                            };
                            self.read_file(&path, child, mod_rs);
                        }
                        Some(Tok::Punct('{')) => {
                            *i += 3;
                            path_attr = None;
                            self.modules.insert(child.clone());
                            let child_dir = dir.join(name);
                            self.read_items(toks, i, &child, &child_dir, file, file_dir);
                        }
                        _ => *i += 1,
                    }
                }
                Tok::Ident(kw) if kw == "use" => {
                    let public = *i > 0
                        && (matches!(&toks[*i - 1].0, Tok::Ident(p) if p == "pub")
                            || matches!(&toks[*i - 1].0, Tok::Punct(')')));
                    *i += 1;
                    let mut leaves = Vec::new();
                    use_tree(toks, i, Vec::new(), &mut leaves);
                    for (path, alias) in leaves {
                        let Some(abs) = absolute(module, &path) else {
                            continue;
                        };
                        self.refs
                            .push((module.clone(), abs.clone(), format!("{file}:{line}")));
                        match alias {
                            Some(alias) if public => {
                                self.aliases.insert((module.clone(), alias), abs);
                            }
                            None if public => {
                                self.globs.entry(module.clone()).or_default().push(abs);
                            }
                            _ => {}
                        }
                    }
                    path_attr = None;
                }
                Tok::Ident(kw)
                    if depth == 0
                        && matches!(
                            kw.as_str(),
                            "fn" | "struct"
                                | "enum"
                                | "trait"
                                | "type"
                                | "const"
                                | "static"
                                | "union"
                        ) =>
                {
                    if let Some((Tok::Ident(name), _)) = toks.get(*i + 1) {
                        self.defs.insert((module.clone(), name.clone()));
                    }
                    *i += 1;
                }
                Tok::Ident(kw)
                    if (kw == "crate" || kw == "super" || kw == "self")
                        && toks.get(*i + 1).map(|t| &t.0) == Some(&Tok::Path)
                        && !(*i > 0 && toks[*i - 1].0 == Tok::Path) =>
                {
                    let mut path = vec![kw.clone()];
                    *i += 1;
                    while let (Some((Tok::Path, _)), Some((Tok::Ident(seg), _))) =
                        (toks.get(*i), toks.get(*i + 1))
                    {
                        path.push(seg.clone());
                        *i += 2;
                    }
                    if let Some(abs) = absolute(module, &path) {
                        self.refs
                            .push((module.clone(), abs, format!("{file}:{line}")));
                    }
                }
                _ => *i += 1,
            }
        }
    }

    /// The module a path lands in, following re-exports.
    fn resolve(&self, path: &ModPath) -> ModPath {
        let mut path = path.clone();
        for _ in 0..32 {
            let mut m: ModPath = Vec::new();
            let mut rerouted = false;
            for (k, seg) in path.iter().enumerate() {
                let mut next = m.clone();
                next.push(seg.clone());
                if self.modules.contains(&next) {
                    m = next;
                } else if let Some(target) = self
                    .aliases
                    .get(&(m.clone(), seg.clone()))
                    .cloned()
                    .or_else(|| self.through_glob(&m, seg))
                {
                    let target = &target;
                    if target == &path[..=k] {
                        break;
                    }
                    let mut p = target.clone();
                    p.extend(path[k + 1..].iter().cloned());
                    path = p;
                    rerouted = true;
                    break;
                } else {
                    break;
                }
            }
            if !rerouted {
                return m;
            }
        }
        path
    }

    /// `name` in module `m` when `m` has it only through a `pub use x::*`:
    /// the path in the globbed module that defines (or re-exports) it.
    fn through_glob(&self, m: &ModPath, name: &str) -> Option<ModPath> {
        for glob in self.globs.get(m)? {
            let g = self.resolve(glob);
            if g != *m
                && (self.defs.contains(&(g.clone(), name.to_string()))
                    || self.aliases.contains_key(&(g.clone(), name.to_string())))
            {
                let mut p = g;
                p.push(name.to_string());
                return Some(p);
            }
        }
        None
    }

    /// Sibling edges: parent → (from child, to child) → where.
    fn edges(&self) -> BTreeMap<ModPath, BTreeMap<(String, String), String>> {
        let mut out: BTreeMap<ModPath, BTreeMap<(String, String), String>> = BTreeMap::new();
        for (from, path, at) in &self.refs {
            let to = self.resolve(path);
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common < from.len() && common < to.len() {
                out.entry(from[..common].to_vec())
                    .or_default()
                    .entry((from[common].clone(), to[common].clone()))
                    .or_insert_with(|| at.clone());
            }
        }
        out
    }

    /// Each circle among siblings, as one readable line.
    fn circles(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (parent, edges) in self.edges() {
            let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (a, b) in edges.keys() {
                next.entry(a).or_default().push(b);
            }
            for scc in strongly_connected(&next) {
                if scc.len() < 2 {
                    continue;
                }
                let members: BTreeSet<&str> = scc.iter().copied().collect();
                let links: Vec<String> = edges
                    .iter()
                    .filter(|((a, b), _)| {
                        members.contains(a.as_str()) && members.contains(b.as_str())
                    })
                    .map(|((a, b), at)| format!("{a} → {b} ({at})"))
                    .collect();
                let name = if parent.is_empty() {
                    "crate".to_string()
                } else {
                    format!("crate::{}", parent.join("::"))
                };
                found.push(format!("in {name}: {}", links.join(", ")));
            }
        }
        found
    }
}

/// `mod name;` declared in a module whose children live in `dir`.
fn child_file(dir: &Path, name: &str) -> (PathBuf, bool) {
    let flat = dir.join(format!("{name}.rs"));
    if flat.exists() {
        (flat, false)
    } else {
        (dir.join(name).join("mod.rs"), true)
    }
}

/// Expands a `use` tree from `*i` (after `use`) into its leaves, each with
/// the name it is bound to (`None` for a glob).
fn use_tree(
    toks: &[(Tok, usize)],
    i: &mut usize,
    prefix: ModPath,
    leaves: &mut Vec<(ModPath, Option<String>)>,
) {
    let mut path = prefix;
    while *i < toks.len() {
        match &toks[*i].0 {
            Tok::Ident(seg) if seg == "as" => {
                if let Some((Tok::Ident(alias), _)) = toks.get(*i + 1) {
                    let target = std::mem::take(&mut path);
                    if alias != "_" {
                        leaves.push((target, Some(alias.clone())));
                    } else {
                        leaves.push((target, None));
                    }
                }
                *i += 2;
                return finish(toks, i);
            }
            Tok::Ident(seg) => {
                path.push(seg.clone());
                *i += 1;
            }
            Tok::Path => *i += 1,
            Tok::Punct('*') => {
                *i += 1;
                leaves.push((path, None));
                return finish(toks, i);
            }
            Tok::Punct('{') => {
                *i += 1;
                loop {
                    use_tree(toks, i, path.clone(), leaves);
                    match toks.get(*i).map(|t| &t.0) {
                        Some(Tok::Punct(',')) => *i += 1,
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            break;
                        }
                        _ => break,
                    }
                    if toks.get(*i).map(|t| &t.0) == Some(&Tok::Punct('}')) {
                        *i += 1;
                        break;
                    }
                }
                return finish(toks, i);
            }
            _ => {
                // `,` `}` or `;`: the leaf ends here.
                let name = path.last().cloned();
                if let Some(name) = name {
                    // `use a::b::{self}` binds `b`.
                    if name == "self" {
                        path.pop();
                        let bound = path.last().cloned();
                        leaves.push((path, bound));
                    } else {
                        leaves.push((path, Some(name)));
                    }
                }
                return finish(toks, i);
            }
        }
    }
}

/// Steps past a `;` that ends a whole `use` statement (a `,` or `}` is the
/// enclosing tree's business).
fn finish(toks: &[(Tok, usize)], i: &mut usize) {
    if toks.get(*i).map(|t| &t.0) == Some(&Tok::Punct(';')) {
        *i += 1;
    }
}

/// A path written in `module`, made absolute from the crate root; `None`
/// when it climbs above the root.
fn absolute(module: &ModPath, path: &ModPath) -> Option<ModPath> {
    let mut out;
    let mut rest = path.as_slice();
    match rest.first().map(String::as_str) {
        Some("crate") => {
            out = Vec::new();
            rest = &rest[1..];
        }
        Some("super") | Some("self") => {
            out = module.clone();
            while let Some(seg) = rest.first() {
                match seg.as_str() {
                    "super" => {
                        out.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        // A bare path starts in this module (a child, an item, a
        // re-export); an external crate's path lands back in `module`.
        _ => out = module.clone(),
    }
    out.extend(rest.iter().cloned());
    Some(out)
}

/// Tarjan's strongly connected components.
fn strongly_connected<'a>(next: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, next: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in next.get(v).map(Vec::as_slice).unwrap_or(&[]) {
            if !s.index.contains_key(w) {
                visit(w, next, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(scc);
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in next.keys() {
        if !s.index.contains_key(v) {
            visit(v, next, &mut s);
        }
    }
    s.out
}

// ---------------------------------------------------------------------------
// The checker itself, on small crates written for the purpose.

/// Writes `files` (path, text) under a fresh folder and reads its module tree.
fn tree_of(files: &[(&str, &str)]) -> ModuleTree {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "ledgerflow-import-cycles-{}-{n}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    for (path, text) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        fs::write(&p, text).expect("write");
    }
    let tree = ModuleTree::read(&dir.join("lib.rs"));
    let _ = fs::remove_dir_all(&dir);
    tree
}

#[test]
fn a_circle_between_top_level_modules_is_found() {
    let tree = tree_of(&[
        ("lib.rs", "pub mod job;\npub mod queue;\n"),
        (
            "job.rs",
            "pub fn complete() { crate::queue::complete_batch(); }\n",
        ),
        (
            "queue.rs",
            "use crate::job::JobId;\npub fn complete_batch() {}\n",
        ),
    ]);
    let circles = tree.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(
        circles[0].contains("job → queue (") && circles[0].contains("queue → job ("),
        "{circles:?}"
    );
}

#[test]
fn a_circle_inside_a_folder_through_super_and_braces_is_found() {
    let tree = tree_of(&[
        ("lib.rs", "pub mod ledger;\n"),
        ("ledger/mod.rs", "mod payments;\nmod sync;\n"),
        ("ledger/sync.rs", "use super::{payments::{self, record}};\n"),
        (
            "ledger/payments.rs",
            "fn f() { let _ = super::sync::run(); }\n",
        ),
    ]);
    let circles = tree.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(circles[0].starts_with("in crate::ledger:"), "{circles:?}");
}

#[test]
fn a_re_export_does_not_hide_a_circle() {
    // `a::x` names `crate::b::Thing`, which `b` re-exports from `b::y`, and
    // `b::y` names `crate::a::x`: a circle between `a` and `b`, and none
    // inside `b`.
    let tree = tree_of(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub use b::Thing;\n"),
        ("a/mod.rs", "pub mod x;\n"),
        ("a/x.rs", "use crate::Thing;\npub struct X;\n"),
        ("b/mod.rs", "mod y;\npub use y::Thing;\n"),
        ("b/y.rs", "pub struct Thing(crate::a::x::X);\n"),
    ]);
    let circles = tree.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(circles[0].starts_with("in crate:"), "{circles:?}");
}

#[test]
fn one_way_paths_comments_and_strings_are_not_circles() {
    let tree = tree_of(&[
        ("lib.rs", "pub mod queue;\npub mod ledger;\n"),
        (
            "queue.rs",
            "//! Used by [`crate::ledger::record`].\n\
             /* crate::ledger::x */\n\
             const Q: &str = \"crate::ledger::y\";\n\
             const R: &str = r#\"crate::ledger::z \"quoted\"\"#;\n\
             fn f<'a>(c: char) -> bool { c == '\"' }\n\
             pub fn delay() {}\n",
        ),
        (
            "ledger.rs",
            "use crate::queue;\nmod inner { fn g() { super::super::queue::delay(); } }\n",
        ),
    ]);
    assert!(tree.circles().is_empty(), "{:?}", tree.circles());
    assert_eq!(tree.edges().len(), 1, "{:?}", tree.edges());
}

#[test]
fn a_glob_re_export_does_not_hide_a_circle() {
    // `limiter` reaches `call_budget` by its path; `call_budget` reaches
    // `limiter` through the parent's `pub use limiter::*`.
    let tree = tree_of(&[
        ("lib.rs", "pub mod state;\n"),
        (
            "state/mod.rs",
            "pub mod call_budget;\npub mod limiter;\npub use limiter::*;\n",
        ),
        (
            "state/limiter.rs",
            "pub async fn acquire() { super::call_budget::current(); }\n",
        ),
        (
            "state/call_budget.rs",
            "use crate::state::acquire;\npub fn current() {}\n",
        ),
    ]);
    let circles = tree.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(circles[0].starts_with("in crate::state:"), "{circles:?}");
}
