//! The `methods.toml` parser and validator on arbitrary text, against the real protos:
//! problems are reported, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn protos() -> &'static prost_types::FileDescriptorSet {
    static PROTOS: OnceLock<prost_types::FileDescriptorSet> = OnceLock::new();
    PROTOS.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/proto");
        qpq_codegen::compile_protos(&dir).expect("the schema's protos compile")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = qpq_codegen::validate_text(text, protos());
    }
});
