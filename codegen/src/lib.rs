//! `qpq-codegen`: turns `methods.toml` and its `.proto` files into a typed Rust API.
//!
//! Pipeline: parse the toml → compile the protos with protox (no system `protoc`) → validate
//! the toml against the compiled descriptors (every problem reported at once) → emit the
//! prost messages and the service API (`MethodId`, descriptor tables, the `…Service` trait,
//! the dispatch, the `…Client`, `Event` and the typed push sender) as one formatted file.
//! It also renders the Markdown method reference and the schema lock.
//!
//! Use it from a `build.rs`:
//!
//! ```no_run
//! // in build.rs, inside `fn main()`:
//! qpq_codegen::Builder::new("methods.toml", "proto").build_script();
//! ```
//! and include the output: `include!(concat!(env!("OUT_DIR"), "/qpq_generated.rs"));`.

mod compat;
mod docs;
mod emit;
mod schema;

use std::fs;
use std::path::{Path, PathBuf};

pub use compat::{Break, Lock, check};
pub use schema::{
    AcceptedBreak, Auth, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TIMEOUT_MS, Event, Method, Service,
    group_trait_name, snake_case,
};

/// The file name the build script writes into `OUT_DIR`.
pub const OUTPUT_FILE: &str = "qpq_generated.rs";

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The protobuf files do not compile.
    #[error("protobuf compilation failed: {0}")]
    Proto(String),
    /// The schema has problems; each line names the method it concerns.
    #[error("methods.toml has {} problem(s):\n  - {}", .0.len(), .0.join("\n  - "))]
    Schema(Vec<String>),
    /// The generated code did not parse (a generator bug).
    #[error("generated code does not parse: {0}")]
    Emit(String),
}

impl Error {
    /// The individual schema problems (empty for other errors).
    pub fn problems(&self) -> &[String] {
        match self {
            Self::Schema(problems) => problems,
            _ => &[],
        }
    }
}

/// Everything generated from one schema.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The validated model.
    pub service: Service,
    /// The Rust file: messages and service API.
    pub code: String,
    /// The Markdown method reference.
    pub docs: String,
    /// The lock of this schema.
    pub lock: Lock,
    /// Every input file (for `cargo:rerun-if-changed`).
    pub inputs: Vec<PathBuf>,
}

/// Configures generation from a schema file and its proto directory.
#[derive(Debug, Clone)]
pub struct Builder {
    schema: PathBuf,
    proto_dir: PathBuf,
}

impl Builder {
    /// A builder for `schema` (the toml) whose messages live in `.proto` files in `proto_dir`.
    pub fn new(schema: impl AsRef<Path>, proto_dir: impl AsRef<Path>) -> Self {
        Self {
            schema: schema.as_ref().to_owned(),
            proto_dir: proto_dir.as_ref().to_owned(),
        }
    }

    fn proto_files(&self) -> Result<Vec<PathBuf>, Error> {
        let io = |source| Error::Io {
            path: self.proto_dir.display().to_string(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.proto_dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "proto") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Runs the whole pipeline in memory.
    pub fn generate(&self) -> Result<Generated, Error> {
        let text = fs::read_to_string(&self.schema).map_err(|source| Error::Io {
            path: self.schema.display().to_string(),
            source,
        })?;
        let raw = schema::parse(&text).map_err(Error::Schema)?;
        let files = self.proto_files()?;
        let names: Vec<PathBuf> = files
            .iter()
            .filter_map(|f| f.file_name().map(PathBuf::from))
            .collect();
        let fds = protox::compile(&names, [&self.proto_dir])
            .map_err(|e| Error::Proto(format!("{e:?}")))?;
        let service = schema::validate(raw, &fds).map_err(Error::Schema)?;
        let messages = prost_messages(&service.package, fds)?;
        let code = render_code(&service, &messages)?;
        let mut inputs = vec![self.schema.clone()];
        inputs.extend(files);
        Ok(Generated {
            docs: docs::render(&service),
            lock: Lock::of(&service),
            code,
            service,
            inputs,
        })
    }

    /// For `build.rs`: generates into `$OUT_DIR/qpq_generated.rs` and prints
    /// `cargo:rerun-if-changed` for every input. On error it prints every problem and exits
    /// the build script with a failure.
    pub fn build_script(&self) {
        match self.try_build_script() {
            Ok(_) => {}
            Err(error) => {
                eprintln!("error: {error}");
                std::process::exit(1);
            }
        }
    }

    /// Like [`build_script`](Self::build_script) but returns the error and the result.
    pub fn try_build_script(&self) -> Result<Generated, Error> {
        println!("cargo:rerun-if-changed={}", self.schema.display());
        println!("cargo:rerun-if-changed={}", self.proto_dir.display());
        let generated = self.generate()?;
        for input in &generated.inputs {
            println!("cargo:rerun-if-changed={}", input.display());
        }
        let out_dir = std::env::var_os("OUT_DIR").ok_or_else(|| Error::Io {
            path: "OUT_DIR".into(),
            source: std::io::Error::other("OUT_DIR is not set; call this from a build script"),
        })?;
        let out = Path::new(&out_dir).join(OUTPUT_FILE);
        fs::write(&out, &generated.code).map_err(|source| Error::Io {
            path: out.display().to_string(),
            source,
        })?;
        Ok(generated)
    }
}

/// Compiles every `.proto` file of `proto_dir` with protox.
pub fn compile_protos(proto_dir: &Path) -> Result<prost_types::FileDescriptorSet, Error> {
    let builder = Builder::new("", proto_dir);
    let files = builder.proto_files()?;
    let names: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.file_name().map(PathBuf::from))
        .collect();
    protox::compile(&names, [proto_dir]).map_err(|e| Error::Proto(format!("{e:?}")))
}

/// Parses and validates the text of a `methods.toml` against compiled protos, listing every
/// problem (for tools and fuzzing; [`Builder`] does this from files).
pub fn validate_text(
    text: &str,
    protos: &prost_types::FileDescriptorSet,
) -> Result<Service, Vec<String>> {
    let raw = schema::parse(text)?;
    schema::validate(raw, protos)
}

/// Runs prost over the package's files and returns the messages' Rust source.
fn prost_messages(package: &str, fds: prost_types::FileDescriptorSet) -> Result<String, Error> {
    let requests: Vec<_> = fds
        .file
        .into_iter()
        .filter(|f| f.package.as_deref() == Some(package))
        .map(|f| (prost_build::Module::from_protobuf_package_name(package), f))
        .collect();
    let mut config = prost_build::Config::new();
    // Byte fields as `bytes::Bytes`: payloads are sliced from the frame without copying.
    config.bytes(["."]);
    let mut modules = config
        .generate(requests)
        .map_err(|e| Error::Proto(e.to_string()))?;
    let module = prost_build::Module::from_protobuf_package_name(package);
    Ok(modules.remove(&module).unwrap_or_default())
}

fn render_code(service: &Service, messages: &str) -> Result<String, Error> {
    let messages: syn::File =
        syn::parse_str(messages).map_err(|e| Error::Emit(format!("prost output: {e}")))?;
    let items = messages.items;
    let package_doc = format!(" Protobuf messages of package `{}`.", service.package);
    let api = emit::service_tokens(service);
    let tokens = quote::quote! {
        #[doc = #package_doc]
        #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub, rustdoc::all)]
        pub mod proto {
            #(#items)*
        }

        #api
    };
    let file: syn::File =
        syn::parse2(tokens).map_err(|e| Error::Emit(format!("service API: {e}")))?;
    Ok(format!(
        "// @generated by qpq-codegen from methods.toml and its .proto files.\n\
         // Do not edit: change the schema and rebuild.\n\n{}",
        prettyplease::unparse(&file)
    ))
}
