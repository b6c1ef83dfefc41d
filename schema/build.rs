//! Generates the protocol's Rust API from `methods.toml` and `proto/`.
fn main() {
    qpq_codegen::Builder::new("methods.toml", "proto").build_script();
}
