//! Generates the `custom-service` example's API from its own schema, the way any application
//! using quicproquo would.
fn main() {
    qpq_codegen::Builder::new("custom-service/methods.toml", "custom-service/proto").build_script();
}
