//! The documentation: README.md stays a front door, every page of `docs/` is reachable from it,
//! relative links resolve, and `docs/pipeline-reference.md` is what `src/spec/reference.rs`
//! generates from the pipeline types.
//!
//! After changing the pipeline types' docs, rewrite the reference with
//! `STREAMGATE_UPDATE_DOCS=1 cargo test --test integration docs::` and commit the result.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// README.md's budget: a front door, not the manual.
const README_MAX_BYTES: usize = 20_480;

const UPDATE_COMMAND: &str = "STREAMGATE_UPDATE_DOCS=1 cargo test --test integration docs::";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of `relative` (to the crate root), or a failed assertion naming it.
fn read(relative: &str) -> String {
    let path = root().join(relative);
    let text = fs::read_to_string(&path);
    assert!(text.is_ok(), "cannot read {relative}: {:?}", text.err());
    text.unwrap_or_default()
}

/// Every file under `docs/`, as paths relative to the crate root, sorted.
fn docs_files() -> Vec<String> {
    fn walk(dir: &Path, into: &mut Vec<String>) {
        let entries = fs::read_dir(dir);
        assert!(
            entries.is_ok(),
            "cannot list {}: {:?}",
            dir.display(),
            entries.err()
        );
        for entry in entries.into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, into);
            } else if let Ok(relative) = path.strip_prefix(root()) {
                into.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("docs"), &mut files);
    files.sort();
    files
}

/// The markdown pages whose links are checked: README.md and every `.md` under `docs/`.
fn markdown_pages() -> Vec<String> {
    std::iter::once("README.md".to_string())
        .chain(docs_files().into_iter().filter(|f| f.ends_with(".md")))
        .collect()
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// `line` without its code spans (a backtick run up to the next run of the same length).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let run = rest[start..].len() - rest[start..].trim_start_matches('`').len();
        let fence = &rest[start..start + run];
        let after = &rest[start + run..];
        match after.find(fence) {
            Some(end) => rest = &after[end + run..],
            None => {
                out.push_str(fence);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of the inline links `[text](target)` of a markdown text, outside code.
fn links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        for piece in line.split("](").skip(1) {
            if let Some(end) = piece.find(')') {
                let target = piece[..end].split_whitespace().next().unwrap_or("");
                targets.push(target.trim_matches(['<', '>']).to_string());
            }
        }
    }
    targets
}

/// The anchors GitHub gives the headings of a markdown text: lowercase, spaces to `-`,
/// punctuation other than `-` and `_` dropped, `-1`, `-2`... on repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for line in prose_lines(text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = line[hashes..]
            .trim()
            .trim_end_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// `target` (a relative link of `page`) as a path relative to the crate root, normalised, or
/// `None` when it leaves the repository.
fn resolve(page: &str, target: &str) -> Option<String> {
    let base = Path::new(page).parent().unwrap_or(Path::new(""));
    let mut parts: Vec<String> = Vec::new();
    for component in base.join(target).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

#[test]
fn pipeline_reference_is_generated_from_the_types() {
    let generated = streamgate::spec::reference::pipeline_reference_markdown();
    let path = root().join("docs/pipeline-reference.md");
    if std::env::var_os("STREAMGATE_UPDATE_DOCS").is_some_and(|v| v == "1") {
        // Written outside docs/ and renamed, so the tests running alongside never see half a
        // file or a stray one.
        let temporary = root().join(".pipeline-reference.md.tmp");
        let written =
            fs::write(&temporary, &generated).and_then(|()| fs::rename(&temporary, &path));
        assert!(
            written.is_ok(),
            "cannot write {}: {:?}",
            path.display(),
            written.err()
        );
        return;
    }
    let current = fs::read_to_string(&path).unwrap_or_default();
    let first_difference = current
        .lines()
        .zip(generated.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(current.lines().count().min(generated.lines().count()));
    assert!(
        current == generated,
        "docs/pipeline-reference.md is stale or missing: the pipeline types or their docs \
         changed. Run `{UPDATE_COMMAND}` and commit the result.\n\
         First difference at line {}:\n  in the file:  {:?}\n  generated:    {:?}",
        first_difference + 1,
        current
            .lines()
            .nth(first_difference)
            .unwrap_or("<end of file>"),
        generated
            .lines()
            .nth(first_difference)
            .unwrap_or("<end of text>"),
    );
}

#[test]
fn readme_fits_its_budget() {
    let size = read("README.md").len();
    assert!(
        size <= README_MAX_BYTES,
        "README.md is {size} bytes, over its {README_MAX_BYTES}-byte budget: move reference \
         material to a page in docs/ and link it from the README's Documentation section"
    );
}

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    // Pages reached from README.md, directly or through the index docs/README.md.
    let mut reached = BTreeSet::new();
    for page in ["README.md", "docs/README.md"] {
        if page != "README.md" && !reached.contains(page) {
            continue;
        }
        for target in links(&read(page)) {
            if is_external(&target) || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap_or("");
            if let Some(path) = resolve(page, file) {
                reached.insert(path);
            }
        }
    }
    assert!(
        reached.contains("docs/README.md"),
        "README.md does not link the documentation index docs/README.md"
    );
    let unlinked: Vec<String> = docs_files()
        .into_iter()
        .filter(|f| !reached.contains(f))
        .collect();
    assert!(
        unlinked.is_empty(),
        "not linked from README.md or docs/README.md: {unlinked:?}"
    );
}

#[test]
fn relative_links_reach_existing_files_and_headings() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in markdown_pages() {
        let text = read(&page);
        for target in links(&text) {
            if is_external(&target) || target.is_empty() {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                Some(page.clone())
            } else {
                resolve(&page, file)
            };
            let Some(path) = path.filter(|p| root().join(p).exists()) else {
                broken.push(format!("{page}: ({target}): no such file"));
                continue;
            };
            if let Some(anchor) = anchor
                && path.ends_with(".md")
                && !anchors(&read(&path)).contains(anchor)
            {
                broken.push(format!(
                    "{page}: ({target}): no heading #{anchor} in {path}"
                ));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn link_parsing_skips_code_and_resolves_relative_paths() {
    let text = "[a](docs/x.md#h) `[no](code.md)` [b](<../y.md> \"title\")\n```\n[c](fenced.md)\n```\n## A `heading`: x\n## A heading x\n";
    assert_eq!(links(text), ["docs/x.md#h", "../y.md"]);
    let anchors = anchors(text);
    assert!(
        anchors.contains("a-heading-x") && anchors.contains("a-heading-x-1"),
        "{anchors:?}"
    );
    assert_eq!(
        resolve("docs/a.md", "../pipelines/x.yaml").as_deref(),
        Some("pipelines/x.yaml")
    );
    assert_eq!(resolve("README.md", "../outside"), None);
}
