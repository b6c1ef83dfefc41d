//! Generates the benchmark service twice from one proto: quicproquo's API (qpq-codegen) and
//! tonic's (tonic-prost-build, fed by protox so no `protoc` is needed).
fn main() {
    qpq_codegen::Builder::new("schema/methods.toml", "schema/proto").build_script();
    let fds = qpq_codegen::compile_protos(std::path::Path::new("schema/proto"))
        .expect("bench protos compile");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)
        .expect("tonic code generates");
}
