//! `meshctl analyze` as a user runs it: output format and exit codes.

use std::{path::Path, process::Command};

fn meshctl(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl")).args(args).current_dir(dir).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn clean_config_exits_zero() {
    let (code, stdout, stderr) = meshctl(&["analyze", "examples/bookinfo/config/mesh"], repo());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("No validation issues found: 20 resources in 3 files."), "{stderr}");
}

#[test]
fn warnings_are_printed_and_exit_zero() {
    let (code, stdout, _) = meshctl(
        &[
            "analyze",
            "examples/bookinfo/config/mesh/destination-rules.yaml",
            "examples/bookinfo/config/tutorial/networking/fault-injection-details-v1.yaml",
        ],
        repo(),
    );
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "examples/bookinfo/config/tutorial/networking/fault-injection-details-v1.yaml:9: warning: VirtualService default/details: spec.http[0]: this route matches every request but is not the last one; the routes after it are never used\n\
         examples/bookinfo/config/tutorial/networking/fault-injection-details-v1.yaml:17: warning: DestinationRule default/details: metadata.name: defined more than once; this definition replaces the one at examples/bookinfo/config/mesh/destination-rules.yaml:42\n"
    );
}

#[test]
fn errors_exit_one_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - uri:\n        regex: \"/v1/(\"\n    route:\n    - destination: {host: reviews}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ingress.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: gw}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = meshctl(&["analyze", "."], dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stdout,
        "./ingress.yaml:2: note: Ingress default/gw: kind: Ingress (networking.k8s.io/v1) is not used by the mesh; skipped\n\
         ./vs.yaml:10: error: VirtualService default/reviews: spec.http[0].match[0].uri.regex: invalid regex: unclosed group\n"
    );
    assert!(stderr.contains("1 error(s), 0 warning(s), 1 note(s)"), "{stderr}");
    // -q hides notes; -n sets the default namespace.
    let (code, stdout, _) = meshctl(&["analyze", "-q", "-n", "prod", "vs.yaml"], dir.path());
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        "vs.yaml:10: error: VirtualService prod/reviews: spec.http[0].match[0].uri.regex: invalid regex: unclosed group\n"
    );
}

#[test]
fn usage_errors() {
    let (code, _, stderr) = meshctl(&["analyze"], repo());
    assert_eq!(code, 2);
    assert!(stderr.contains("<PATHS>..."), "{stderr}");
}
