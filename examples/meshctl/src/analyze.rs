//! `meshctl analyze PATH...`

use std::{io::Write, path::PathBuf, process::ExitCode};

use mesh_core::{
    Severity,
    load::{LoadOptions, load_paths},
};

pub(crate) fn run(paths: &[PathBuf], namespace: &str, quiet: bool) -> ExitCode {
    let options = LoadOptions { default_namespace: namespace.to_string(), ..LoadOptions::default() };
    let loaded = load_paths(paths, &options);
    let mut out = std::io::stdout().lock();
    let count = |s| loaded.diagnostics.iter().filter(|d| d.severity == s).count();
    for d in loaded.diagnostics.iter().filter(|d| !quiet || d.severity != Severity::Note) {
        // A closed pipe (`| head`) is not an error worth a panic.
        if writeln!(out, "{d}").is_err() {
            break;
        }
    }
    let (errors, warnings, notes) = (count(Severity::Error), count(Severity::Warning), count(Severity::Note));
    let files: std::collections::BTreeSet<_> = loaded.resources.iter().map(|r| r.file.clone()).collect();
    if errors + warnings == 0 {
        eprintln!("No validation issues found: {} resources in {} files.", loaded.resources.len(), files.len());
    } else {
        eprintln!(
            "{errors} error(s), {warnings} warning(s), {notes} note(s); {} resources loaded from {} files.",
            loaded.resources.len(),
            files.len()
        );
    }
    if errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
