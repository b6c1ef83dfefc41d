//! The protocol as declared matches the reference, the committed lock, and the committed docs.

use std::fs;
use std::path::{Path, PathBuf};

use qpq_codegen::{Builder, Lock, check};
use qpq_schema::{EVENTS, METHODS, MethodId};

/// The 49 methods of the protocol reference (`spec/service-architecture.md`), by ID.
const REFERENCE_METHODS: [(u16, &str); 49] = [
    (100, "OpaqueRegisterStart"),
    (101, "OpaqueRegisterFinish"),
    (102, "OpaqueLoginStart"),
    (103, "OpaqueLoginFinish"),
    (200, "Enqueue"),
    (201, "Fetch"),
    (202, "FetchWait"),
    (203, "Peek"),
    (204, "Ack"),
    (205, "BatchEnqueue"),
    (300, "UploadKeyPackage"),
    (301, "FetchKeyPackage"),
    (302, "UploadHybridKey"),
    (303, "FetchHybridKey"),
    (304, "FetchHybridKeys"),
    (400, "CreateChannel"),
    (410, "RemoveMember"),
    (411, "UpdateGroupMetadata"),
    (412, "ListGroupMembers"),
    (413, "RotateKeys"),
    (420, "ReportMessage"),
    (421, "BanUser"),
    (422, "UnbanUser"),
    (423, "ListReports"),
    (424, "ListBanned"),
    (500, "ResolveUser"),
    (501, "ResolveIdentity"),
    (510, "RevokeKey"),
    (511, "CheckRevocation"),
    (520, "AuditKeyTransparency"),
    (600, "UploadBlob"),
    (601, "DownloadBlob"),
    (700, "RegisterDevice"),
    (701, "ListDevices"),
    (702, "RevokeDevice"),
    (710, "RegisterPushToken"),
    (750, "StoreRecoveryBundle"),
    (751, "FetchRecoveryBundle"),
    (752, "DeleteRecoveryBundle"),
    (800, "PublishEndpoint"),
    (801, "ResolveEndpoint"),
    (802, "Health"),
    (900, "RelayEnqueue"),
    (901, "RelayBatchEnqueue"),
    (902, "ProxyFetchKeyPackage"),
    (903, "ProxyFetchHybridKey"),
    (904, "ProxyResolveUser"),
    (905, "FederationHealth"),
    (950, "DeleteAccount"),
];

const REFERENCE_EVENTS: [(u16, &str); 4] = [
    (1000, "PushNewMessage"),
    (1001, "PushTyping"),
    (1002, "PushPresence"),
    (1003, "PushMembership"),
];

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generated() -> qpq_codegen::Generated {
    Builder::new(
        schema_dir().join("methods.toml"),
        schema_dir().join("proto"),
    )
    .generate()
    .expect("schema generates")
}

fn bless() -> bool {
    std::env::var_os("QPQ_BLESS").is_some()
}

/// Compares a committed file with fresh content; `QPQ_BLESS=1` rewrites it.
fn assert_current(path: &Path, fresh: &str) {
    let committed = fs::read_to_string(path).unwrap_or_default();
    if committed == fresh {
        return;
    }
    if bless() {
        fs::write(path, fresh).unwrap();
    } else {
        panic!(
            "{} is stale; run `QPQ_BLESS=1 cargo test -p qpq-schema` and commit the change",
            path.display()
        );
    }
}

#[test]
fn every_reference_method_is_declared_with_its_id() {
    // Every reference method is declared with its exact ID and name…
    for (id, name) in REFERENCE_METHODS {
        let method = MethodId::try_from(id).unwrap_or_else(|_| panic!("{name} ({id}) missing"));
        assert_eq!(method.name(), name, "ID {id}");
        assert_eq!(method.descriptor().id, id);
    }
    // …and anything beyond the reference is an addition, never a replacement.
    assert!(METHODS.len() >= REFERENCE_METHODS.len());
    for (id, name) in REFERENCE_EVENTS {
        assert!(
            EVENTS.iter().any(|e| e.id == id && e.name == name),
            "event {name} ({id}) missing"
        );
    }
    assert!(
        METHODS.windows(2).all(|w| w[0].id < w[1].id),
        "sorted by ID"
    );
    for method in &METHODS {
        assert!(!method.doc.is_empty(), "{} has a doc", method.name);
        assert!(method.max_request_bytes > 0 && method.timeout_ms > 0);
    }
}

#[test]
fn lock_has_no_breaking_change_and_is_current() {
    let generated = generated();
    let path = schema_dir().join("methods.lock");
    let lock_text = fs::read_to_string(&path).unwrap_or_default();
    let lock = Lock::parse(&lock_text).expect("methods.lock parses");
    let breaks = check(&lock, &generated.service);
    assert!(
        breaks.is_empty(),
        "breaking protocol changes (acknowledge a deliberate one with [[accept_break]] in methods.toml):\n{}",
        breaks
            .iter()
            .map(|b| format!("  - {b}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_current(&path, &generated.lock.render());
}

#[test]
fn method_reference_in_docs_is_current() {
    let generated = generated();
    let path = schema_dir().join("../docs/methods.md");
    assert_current(&path, &generated.docs);
}

#[test]
fn error_body_matches_the_proto_definition() {
    use prost::Message;
    let status = qpq_runtime::Status::rate_limited("slow down", 250);
    let decoded = qpq_schema::proto::Error::decode(&status.encode_body()[..]).unwrap();
    assert_eq!(decoded.message, "slow down");
    assert_eq!(decoded.retry_after_ms, 250);
    let encoded = qpq_schema::proto::Error {
        message: "gone".into(),
        retry_after_ms: 0,
    }
    .encode_to_vec();
    let status = qpq_runtime::Status::decode_body(qpq_runtime::StatusCode::NotFound, &encoded);
    assert_eq!(status.message(), "gone");
    assert_eq!(status.retry_after_ms(), None);
}
