//! `meshctl create-ca --dir DIR`: the mesh root for a cluster, made once, kept by the
//! operator; then the Secret for the CA and the ConfigMaps for the pods.

use std::{path::Path, process::ExitCode};

use mesh_mtls::ca::CertificateAuthority;

pub(crate) fn run(dir: &Path, trust_domain: &str, namespaces: &[String]) -> ExitCode {
    let existed = dir.join("root-key.pem").exists();
    let ca = match CertificateAuthority::load_or_create(dir, trust_domain) {
        Ok(ca) => ca,
        Err(e) => {
            eprintln!("meshctl create-ca: {e}");
            return ExitCode::from(1);
        }
    };
    let d = dir.display();
    println!(
        "# The mesh root for {} {} {d} (root-cert.pem, root-key.pem: keep the key secret).",
        ca.trust_domain(),
        if existed { "is in" } else { "was created in" }
    );
    println!("# The CA's Secret (mounted only into the mesh-ca pod) and the root for every meshed namespace:");
    println!("kubectl create namespace mesh-system --dry-run=client -o yaml | kubectl apply -f -");
    println!(
        "kubectl -n mesh-system create secret generic mesh-ca --from-file={d}/root-cert.pem --from-file={d}/root-key.pem"
    );
    for ns in namespaces {
        println!("kubectl create namespace {ns} --dry-run=client -o yaml | kubectl apply -f -");
        println!("kubectl -n {ns} create configmap mesh-ca-root --from-file=root-cert.pem={d}/root-cert.pem");
    }
    ExitCode::SUCCESS
}
