//! Which files a listing picks: a selector's glob, regex and paths compiled within limits,
//! and the walk that lists them folder by folder.

use std::{
    fs::{self},
    path::{Path, PathBuf},
};

use quicswarm_proto::{
    limits::MAX_PATTERN_LEN,
    path,
    transfer::{FileEntry, Selector},
};

use super::{
    pieces::PieceCache,
    source::{entry_of, relative, resolve, walk_error, Root},
    TransferError,
};

/// Compiled glob and regex of a selector.
struct Matcher {
    glob: Option<globset::GlobMatcher>,
    regex: Option<regex::Regex>,
}

/// Deepest nesting of `{…}` alternates and `[…]` classes accepted in a glob.
const MAX_GLOB_NESTING: usize = 8;
/// Size limits of a compiled regex (its program and its lazy DFA's cache), and its nesting.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_NEST_LIMIT: u32 = 32;

impl Matcher {
    /// Compiles a selector's patterns, each checked for length (and a glob for nesting)
    /// before it is parsed, and a regex compiled within size and nesting limits: a hostile
    /// pattern costs at most a few megabytes and milliseconds.
    fn new(selector: &Selector) -> Result<Self, TransferError> {
        let bad = |what: &str, e: String| TransferError::BadSelector(format!("{what}: {e}"));
        let glob = selector
            .glob
            .as_deref()
            .map(|g| {
                TransferError::check("glob length", g.len() as u64, MAX_PATTERN_LEN as u64)?;
                let depth = glob_nesting(g);
                TransferError::check("glob nesting", depth as u64, MAX_GLOB_NESTING as u64)?;
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map(|g| g.compile_matcher())
                    .map_err(|e| bad("glob", e.to_string()))
            })
            .transpose()?;
        let regex = selector
            .regex
            .as_deref()
            .map(|r| {
                TransferError::check("regex length", r.len() as u64, MAX_PATTERN_LEN as u64)?;
                regex::RegexBuilder::new(r)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .nest_limit(REGEX_NEST_LIMIT)
                    .build()
                    .map_err(|e| bad("regex", e.to_string()))
            })
            .transpose()?;
        Ok(Self { glob, regex })
    }

    fn matches(&self, rel: &str) -> bool {
        self.glob.as_ref().is_none_or(|g| g.is_match(rel))
            && self.regex.as_ref().is_none_or(|r| r.is_match(rel))
    }
}

/// How deeply `{` and `[` nest in a glob (escapes skipped).
fn glob_nesting(glob: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '{' | '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A checked `List`: its patterns compiled and its starting points resolved, deduplicated and
/// pruned so that no file is visited twice (a start inside a folder that is walked anyway is
/// dropped). Made before the listing is accepted, so a bad selector is a plain error.
pub(crate) struct ListPlan {
    root: PathBuf,
    matcher: Matcher,
    recursive: bool,
    starts: Vec<Start>,
}

struct Start {
    rel: String,
    path: PathBuf,
    meta: fs::Metadata,
}

/// Checks `selector` for a listing of `root`: at most `max_paths` paths, patterns within
/// their limits, every start inside the root.
pub(crate) fn plan_list(
    root: &Path,
    selector: &Selector,
    max_paths: usize,
) -> Result<ListPlan, TransferError> {
    TransferError::check("list paths", selector.paths.len() as u64, max_paths as u64)?;
    let matcher = Matcher::new(selector)?;
    let explicit = !selector.paths.is_empty();
    let mut rels: Vec<String> = if explicit {
        selector
            .paths
            .iter()
            .map(|p| match (selector.dir.is_empty(), p.is_empty()) {
                (true, _) => p.clone(),
                (false, true) => selector.dir.clone(),
                (false, false) => path::join(&selector.dir, p),
            })
            .collect()
    } else {
        vec![selector.dir.clone()]
    };
    rels.sort();
    rels.dedup();
    let mut resolved = Vec::with_capacity(rels.len());
    for rel in rels {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            resolve(root, &rel)?
        };
        let meta = fs::symlink_metadata(&path).map_err(TransferError::io("inspecting", &path))?;
        if !meta.is_file() && !meta.is_dir() {
            return Err(TransferError::Refused {
                path: rel,
                reason: "not a regular file or folder".into(),
            });
        }
        resolved.push(Start { rel, path, meta });
    }
    let folders: std::collections::HashSet<String> = resolved
        .iter()
        .filter(|s| s.meta.is_dir())
        .map(|s| s.rel.clone())
        .collect();
    let recursive = selector.recursive;
    let starts = resolved
        .into_iter()
        .filter(|s| {
            // A folder start visits its files; is this one visited by another start already?
            let walked_by =
                |folder: &str| folders.contains(folder) && (recursive || parent(&s.rel) == folder);
            let covered = ancestors(&s.rel).any(walked_by);
            if s.meta.is_dir() {
                !(covered && recursive)
            } else {
                // An explicit file is listed even if the patterns do not pick it; the walk of
                // its folder lists it only if they do.
                !(covered && matcher.matches(&s.rel))
            }
        })
        .collect();
    Ok(ListPlan {
        root: root.to_path_buf(),
        matcher,
        recursive,
        starts,
    })
}

/// The folders above `rel` (`""` for the root included), nearest first.
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    let cuts = rel.rmatch_indices('/').map(|(i, _)| &rel[..i]);
    cuts.chain((!rel.is_empty()).then_some(""))
}

/// The folder holding `rel` (`""` at the top).
fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Walks a checked listing, handing each regular file to `emit` as it is found (in folder
/// order, names sorted within a folder) until `emit` returns `false`; nothing is collected,
/// so a huge tree costs time, not memory. With `hash`, each entry gets its BLAKE3 and the
/// cache its pieces. Returns how many entries were left out (symlinks, special files, names
/// that are not portable).
pub(crate) fn walk(
    plan: ListPlan,
    hash: Option<&PieceCache>,
    emit: &mut dyn FnMut(FileEntry) -> bool,
) -> Result<u64, TransferError> {
    let reader = hash.map(|_| Root::new(plan.root.clone()));
    let mut finish = |mut entry: FileEntry| -> Result<bool, TransferError> {
        if let (Some(cache), Some(root)) = (hash, &reader) {
            let (file, full) = root.open(&entry.path)?;
            let meta = file
                .metadata()
                .map_err(TransferError::io("inspecting", &full))?;
            if !meta.is_file() {
                return Err(TransferError::Refused {
                    path: entry.path,
                    reason: "not a regular file".into(),
                });
            }
            let hash = cache
                .hash(&file, &full)
                .map_err(TransferError::io("hashing", &full))?;
            entry.hash = Some(hash);
        }
        Ok(emit(entry))
    };
    let mut skipped = 0u64;
    for start in plan.starts {
        if start.meta.is_file() {
            if !finish(entry_of(start.rel, &start.meta))? {
                return Ok(skipped);
            }
            continue;
        }
        let mut walk = walkdir::WalkDir::new(&start.path)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1);
        if !plan.recursive {
            walk = walk.max_depth(1);
        }
        for item in walk {
            let item = item.map_err(|e| walk_error(&e, &start.path))?;
            let ft = item.file_type();
            if ft.is_dir() {
                continue;
            }
            let Some(rel) = relative(&plan.root, item.path()) else {
                skipped += 1;
                continue;
            };
            if !ft.is_file() || path::validate(&rel).is_err() {
                skipped += 1;
                continue;
            }
            if !plan.matcher.matches(&rel) {
                continue;
            }
            let meta = item.metadata().map_err(|e| walk_error(&e, item.path()))?;
            if !finish(entry_of(rel, &meta))? {
                return Ok(skipped);
            }
        }
    }
    Ok(skipped)
}

/// The regular files `selector` picks below `root`, sorted by path, and how many entries
/// were left out: [`plan_list`] and [`walk`] collected, for local callers.
#[cfg(test)]
pub(crate) fn list(
    root: &Path,
    selector: &Selector,
    hash: Option<&PieceCache>,
) -> Result<(Vec<FileEntry>, u64), TransferError> {
    let plan = plan_list(root, selector, usize::MAX)?;
    let mut entries = Vec::new();
    let skipped = walk(plan, hash, &mut |e| {
        entries.push(e);
        true
    })?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((entries, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::source::open;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for rel in ["a/x.txt", "a/b/y.log", "a-b/z.txt", "top.txt"] {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, rel).unwrap();
        }
        dir
    }

    fn paths(selector: &Selector, root: &Path) -> Vec<String> {
        let (entries, _) = list(root, selector, None).unwrap();
        entries.into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn overlapping_and_repeated_paths_are_walked_once() {
        let dir = tree();
        let mut selector = Selector {
            paths: vec![String::new(); 1000],
            ..Selector::all()
        };
        selector
            .paths
            .extend(["a".into(), "a/b".into(), "a/x.txt".into()]);
        let plan = plan_list(dir.path(), &selector, 4096).unwrap();
        // Everything is below the root: one walk.
        assert_eq!(plan.starts.len(), 1);
        assert_eq!(
            paths(&selector, dir.path()),
            ["a-b/z.txt", "a/b/y.log", "a/x.txt", "top.txt"]
        );
        // Not recursive: a sub-folder is its own start, a direct child file is not.
        selector.recursive = false;
        let plan = plan_list(dir.path(), &selector, 4096).unwrap();
        let starts: Vec<&str> = plan.starts.iter().map(|s| s.rel.as_str()).collect();
        assert_eq!(starts, ["", "a", "a/b"]);
        // An explicit file the pattern does not pick is still listed, once.
        let selector = Selector {
            paths: vec!["a".into(), "a/x.txt".into()],
            glob: Some("**/*.log".into()),
            ..Selector::all()
        };
        assert_eq!(paths(&selector, dir.path()), ["a/b/y.log", "a/x.txt"]);
    }

    #[test]
    fn a_walk_hands_over_entries_as_it_goes_and_stops_when_told() {
        let dir = tree();
        let plan = plan_list(dir.path(), &Selector::all(), 4096).unwrap();
        let mut seen = Vec::new();
        let skipped = walk(plan, None, &mut |e| {
            seen.push(e.path);
            seen.len() < 2
        })
        .unwrap();
        // Nothing is collected first: the walk stopped at the second entry.
        assert_eq!(seen.len(), 2);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn too_many_paths_and_hostile_patterns_are_refused_before_any_work() {
        let dir = tree();
        let many = Selector {
            paths: vec!["a".into(); 4097],
            ..Selector::all()
        };
        assert!(matches!(
            plan_list(dir.path(), &many, 4096),
            Err(TransferError::LimitExceeded {
                limit: "list paths",
                max: 4096,
                asked: 4097
            })
        ));
        let regex = |r: String| Selector {
            regex: Some(r),
            ..Selector::all()
        };
        // Longer than the limit: refused unparsed.
        let long = regex("\\w".repeat(100_000));
        assert!(matches!(
            plan_list(dir.path(), &long, 4096),
            Err(TransferError::LimitExceeded {
                limit: "regex length",
                ..
            })
        ));
        // Short but huge once compiled: the size limit refuses it.
        let huge = regex("(\\w{100}){100}".into());
        assert!(matches!(
            plan_list(dir.path(), &huge, 4096),
            Err(TransferError::BadSelector(_))
        ));
        let deep = regex(format!("{}a{}", "(".repeat(200), ")".repeat(200)));
        assert!(matches!(
            plan_list(dir.path(), &deep, 4096),
            Err(TransferError::BadSelector(_))
        ));
        let glob = |g: String| Selector {
            glob: Some(g),
            ..Selector::all()
        };
        assert!(matches!(
            plan_list(dir.path(), &glob("*".repeat(5000)), 4096),
            Err(TransferError::LimitExceeded {
                limit: "glob length",
                ..
            })
        ));
        let nested = format!("{}a{}", "{a,".repeat(20), "}".repeat(20));
        assert!(matches!(
            plan_list(dir.path(), &glob(nested), 4096),
            Err(TransferError::LimitExceeded {
                limit: "glob nesting",
                ..
            })
        ));
        assert_eq!(paths(&glob("**/*.log".into()), dir.path()), ["a/b/y.log"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_skipped_by_listings_and_refused_by_reads_without_blocking() {
        let dir = tree();
        let fifo = dir.path().join("a/pipe");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let (entries, skipped) = list(dir.path(), &Selector::all(), None).unwrap();
        assert_eq!(skipped, 1);
        assert!(entries.iter().all(|e| e.path != "a/pipe"));
        // Opening it for reading would wait for a writer forever without O_NONBLOCK.
        let root = Root::new(dir.path().to_path_buf());
        assert!(matches!(
            open(&root, "a/pipe", None, 1 << 20),
            Err(TransferError::Refused { .. })
        ));
    }
}
