//! `mesh-sidecar`: the mesh beside any app. The flags and the process are
//! `mesh_proxy::sidecar`'s (bookinfo's `sidecar` command runs the same).

fn main() -> std::process::ExitCode {
    mesh_proxy::sidecar::main_with(std::env::args())
}
