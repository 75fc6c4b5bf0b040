//! `mesh-sidecar`: see the library's documentation.

fn main() -> std::process::ExitCode {
    mesh_sidecar::main_with(std::env::args())
}
