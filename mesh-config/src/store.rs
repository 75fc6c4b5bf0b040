//! A config directory used as kubectl uses the API server: `apply` a file (its resources
//! replace earlier definitions of the same kind, namespace and name, wherever they were),
//! `delete` a file's resources. Every change is validated as a whole (cross-resource checks
//! included) before anything is written, and files are replaced atomically, so a proxy
//! watching the directory never reads a broken or half-written state.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::{
    api::Kind,
    load::{LoadOptions, Unreadable, collect_files, load_str},
};

/// A resource's identity: (kind, namespace, name).
pub type Id = (Kind, String, String);

/// One YAML document of a file, with the resources it defines.
struct Doc {
    text: String,
    ids: Vec<Id>,
}

/// Split a file into its YAML documents (at `---` lines), keeping each one's text as
/// written; empty documents are dropped.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
        }
    }
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

fn ids_of(label: &str, text: &str, options: &LoadOptions) -> Vec<Id> {
    load_str(label, text, options)
        .resources
        .iter()
        .map(|r| (r.resource.kind(), r.resource.meta().namespace.clone(), r.resource.meta().name.clone()))
        .collect()
}

fn docs(label: &str, text: &str, options: &LoadOptions) -> Vec<Doc> {
    split_documents(text).into_iter().map(|t| Doc { ids: ids_of(label, &t, options), text: t }).collect()
}

fn join(docs: &[Doc]) -> String {
    docs.iter().map(|d| d.text.trim_end_matches('\n').to_string() + "\n").collect::<Vec<_>>().join("---\n")
}

/// kubectl's way of naming an object: `virtualservice.networking.istio.io/reviews`.
pub fn display(id: &Id) -> String {
    let (kind, _, name) = id;
    match kind.group() {
        "" => format!("{}/{name}", kind.as_str().to_ascii_lowercase()),
        g => format!("{}.{g}/{name}", kind.as_str().to_ascii_lowercase()),
    }
}

/// Why `apply` or `delete` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory that cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config directory does not exist.
    #[error("{}: no such config directory (start the mesh with `bookinfo up`, or pass --config-dir)", .0.display())]
    NoDirectory(PathBuf),
    /// The directory cannot be walked.
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    /// The config would not load: every error (analyze's format), and what was not done.
    #[error("{report}error: {refused}\n")]
    Invalid {
        /// The errors, one per line.
        report: String,
        /// `FILE was not applied`, `deleting FILE would leave the config invalid`.
        refused: String,
    },
    /// The file holds no resource.
    #[error("{0}: no resources to apply")]
    Empty(String),
    /// A resource that shares a `List` with others in the directory.
    #[error("{}: {id} is defined in a List with other resources; edit that file by hand", path.display())]
    InList {
        /// The file with the List.
        path: PathBuf,
        /// The resource, `kind/name`.
        id: String,
    },
    /// The path has no file name.
    #[error("{0}: not a file name")]
    NotAFile(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// The config directory's files and their documents.
fn read_dir(dir: &Path, options: &LoadOptions) -> Result<BTreeMap<PathBuf, Vec<Doc>>, StoreError> {
    if !dir.is_dir() {
        return Err(StoreError::NoDirectory(dir.to_path_buf()));
    }
    let mut out = BTreeMap::new();
    for file in collect_files(dir)? {
        let text = std::fs::read_to_string(&file).map_err(io(&file))?;
        out.insert(file.clone(), docs(&file.display().to_string(), &text, options));
    }
    Ok(out)
}

/// Write `text` to `path` atomically.
fn write_atomic(path: &Path, text: &str) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("meshctl")));
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Whether the whole directory, as it would be, loads without error (cross-resource checks
/// included); the report otherwise, naming the files as they will be named in `dir`.
fn validate(
    dir: &Path,
    files: &BTreeMap<PathBuf, String>,
    options: &LoadOptions,
    refused: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let scratch = std::env::temp_dir().join(format!("meshctl-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let result = (|| {
        for (path, text) in files {
            let rel = path.strip_prefix(dir).unwrap_or(path);
            let to = scratch.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&to, text).map_err(io(&to))?;
        }
        let loaded = crate::load::load_paths(&[&scratch], options);
        let report: String = loaded.errors().map(|d| format!("{d}\n")).collect();
        if report.is_empty() {
            Ok(())
        } else {
            let report = report.replace(&scratch.display().to_string(), &dir.display().to_string());
            Err(StoreError::Invalid { report, refused: refused() })
        }
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// What `apply` did to one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// It was not defined before.
    Created,
    /// Its definition changed.
    Configured,
    /// Its definition is the same.
    Unchanged,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        })
    }
}

/// Put `file`'s resources into `dir` (resources naming no namespace are in `default`, as
/// the mesh loads them), checked with `options` (its rules: those the proxies load with).
/// On invalid config, the findings (analyze's format) and nothing written.
pub fn apply(file: &Path, dir: &Path, options: &LoadOptions) -> Result<Vec<(Id, Change)>, StoreError> {
    let label = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(io(file))?;
    let refused = || format!("{label} was not applied");
    // The file on its own first: its own errors, with its own name and lines.
    let own = load_str(&label, &text, options);
    if own.has_errors() {
        return Err(StoreError::Invalid { report: own.report(), refused: refused() });
    }
    let new_docs = docs(&label, &text, options);
    let new_ids: BTreeSet<Id> = new_docs.iter().flat_map(|d| d.ids.iter().cloned()).collect();
    if new_ids.is_empty() {
        return Err(StoreError::Empty(label));
    }
    let mut existing = read_dir(dir, options)?;
    // Each applied resource's previous text, to say created / configured / unchanged.
    let mut previous: BTreeMap<Id, String> = BTreeMap::new();
    for (path, docs) in &mut existing {
        let mut kept = Vec::new();
        for d in docs.drain(..) {
            let replaced: Vec<&Id> = d.ids.iter().filter(|i| new_ids.contains(*i)).collect();
            if replaced.is_empty() {
                kept.push(d);
            } else if replaced.len() < d.ids.len() {
                return Err(StoreError::InList { path: path.clone(), id: display(replaced[0]) });
            } else {
                for id in &d.ids {
                    previous.insert(id.clone(), d.text.clone());
                }
            }
        }
        *docs = kept;
    }
    // Where the applied file goes: its own name, unless that file holds other resources.
    let name = file.file_name().and_then(|n| n.to_str()).ok_or_else(|| StoreError::NotAFile(label.clone()))?;
    let mut target = dir.join(name);
    let mut n = 2;
    while existing.get(&target).is_some_and(|d| !d.is_empty()) {
        let stem = Path::new(name).file_stem().and_then(|s| s.to_str()).unwrap_or("applied");
        target = dir.join(format!("{stem}-{n}.yaml"));
        n += 1;
    }
    let mut next: BTreeMap<PathBuf, String> =
        existing.iter().filter(|(_, d)| !d.is_empty()).map(|(p, d)| (p.clone(), join(d))).collect();
    next.insert(target.clone(), text.clone());
    validate(dir, &next, options, refused)?;

    // Write: the new file first, then the ones that lost documents, then remove emptied ones.
    write_atomic(&target, &text)?;
    for (path, docs) in &existing {
        if *path == target {
            continue;
        }
        let before = std::fs::read_to_string(path).unwrap_or_default();
        if docs.is_empty() {
            std::fs::remove_file(path).map_err(io(path))?;
        } else if join(docs) != before && docs.len() < split_documents(&before).len() {
            write_atomic(path, &join(docs))?;
        }
    }
    Ok(new_docs
        .iter()
        .flat_map(|d| d.ids.iter().map(move |id| (id, d)))
        .map(|(id, d)| {
            let change = match previous.get(id) {
                None => Change::Created,
                Some(old) if old.trim() == d.text.trim() => Change::Unchanged,
                Some(_) => Change::Configured,
            };
            (id.clone(), change)
        })
        .collect())
}

/// Remove `file`'s resources from `dir`: the ones that were there, and the ones that were not.
pub fn delete(file: &Path, dir: &Path) -> Result<(Vec<Id>, Vec<Id>), StoreError> {
    let options = LoadOptions::default();
    let label = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(io(file))?;
    let ids: BTreeSet<Id> = docs(&label, &text, &options).into_iter().flat_map(|d| d.ids).collect();
    let mut existing = read_dir(dir, &options)?;
    let mut found = BTreeSet::new();
    for docs in existing.values_mut() {
        docs.retain(|d| {
            let hit = d.ids.iter().any(|i| ids.contains(i));
            if hit {
                found.extend(d.ids.iter().cloned());
            }
            !hit
        });
    }
    let next: BTreeMap<PathBuf, String> =
        existing.iter().filter(|(_, d)| !d.is_empty()).map(|(p, d)| (p.clone(), join(d))).collect();
    validate(dir, &next, &options, || format!("deleting {label} would leave the config invalid"))?;
    for (path, docs) in &existing {
        let before = std::fs::read_to_string(path).unwrap_or_default();
        if docs.is_empty() {
            std::fs::remove_file(path).map_err(io(path))?;
        } else if docs.len() < split_documents(&before).len() {
            write_atomic(path, &join(docs))?;
        }
    }
    Ok(ids.into_iter().partition(|id| found.contains(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_separator_lines_only() {
        let docs = split_documents("# head\na: 1\n---\nb: 2\n--- # c\nc: '---'\n---\n");
        assert_eq!(docs, ["# head\na: 1\n", "b: 2\n", "c: '---'\n"]);
    }
}
