//! `meshctl analyze PATH...`

use std::{io::Write, path::PathBuf, process::ExitCode};

use mesh_config::{Severity, load::load_paths};

/// `meshctl analyze --kube`: the findings on what the cluster holds, as the sidecars see it
/// (files are `k8s://<api path>`).
pub(crate) fn run_kube(quiet: bool) -> ExitCode {
    let (snapshot, status) = match crate::args::from_cluster() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meshctl analyze: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let all: Vec<_> = status.errors.iter().chain(&status.warnings).collect();
    for d in all.iter().filter(|d| !quiet || d.severity != Severity::Note) {
        if writeln!(out, "{d}").is_err() {
            break;
        }
    }
    let (errors, warnings) = (status.errors.len(), status.warnings.len());
    if errors + warnings == 0 {
        eprintln!("No validation issues found: {} resources in the cluster.", snapshot.len());
    } else {
        eprintln!("{errors} error(s), {warnings} warning(s); {} resources in force in the cluster.", snapshot.len());
    }
    if errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

pub(crate) fn run(paths: &[PathBuf], namespace: &str, quiet: bool) -> ExitCode {
    let options = mesh_proxy::config::load_options(namespace);
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
