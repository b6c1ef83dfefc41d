//! `methods.toml`: parsing into a raw form, then validation into the [`Service`] model.
//!
//! Validation collects every problem before failing, each pointing at the method (name and
//! ID) it concerns, so one build shows the whole list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde::Deserialize;

/// Default `max_request_bytes` when a method does not set one (1 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1 << 20;
/// Default `timeout_ms` when a method does not set one.
pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchema {
    service: RawService,
    #[serde(default)]
    groups: BTreeMap<String, [u16; 2]>,
    #[serde(default, rename = "method")]
    methods: Vec<RawMethod>,
    #[serde(default, rename = "event")]
    events: Vec<RawEvent>,
    #[serde(default)]
    accept_break: Vec<AcceptedBreak>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    package: String,
    #[serde(default)]
    reserved: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMethod {
    id: u16,
    name: String,
    group: String,
    request: String,
    response: String,
    auth: String,
    max_request_bytes: Option<u32>,
    timeout_ms: Option<u32>,
    #[serde(default)]
    idempotent: bool,
    rate_class: Option<String>,
    doc: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    id: u16,
    name: String,
    message: String,
    doc: String,
}

/// A deliberate breaking change, acknowledged in `methods.toml` with `[[accept_break]]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcceptedBreak {
    /// The rule name the compatibility check reported (e.g. `auth-weakened`).
    pub rule: String,
    /// The method or event it concerns.
    pub subject: String,
    /// Why the break is acceptable.
    pub reason: String,
}

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Auth {
    /// Anyone.
    None,
    /// A session token.
    Session,
    /// An administrator's session token.
    Admin,
    /// A pinned federation peer.
    Federation,
}

impl Auth {
    /// Parses the toml spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "none" => Self::None,
            "session" => Self::Session,
            "admin" => Self::Admin,
            "federation" => Self::Federation,
            _ => return None,
        })
    }

    /// The toml spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Session => "session",
            Self::Admin => "admin",
            Self::Federation => "federation",
        }
    }

    /// Whether the request must carry `bytes session_token = 1`.
    pub fn needs_token(self) -> bool {
        matches!(self, Self::Session | Self::Admin)
    }
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Method {
    /// Wire ID.
    pub id: u16,
    /// UpperCamelCase name.
    pub name: String,
    /// Group name.
    pub group: String,
    /// Request message (bare name in the package).
    pub request: String,
    /// Response message.
    pub response: String,
    /// Auth level.
    pub auth: Auth,
    /// Request size limit.
    pub max_request_bytes: u32,
    /// Server deadline.
    pub timeout_ms: u32,
    /// Whether a retry is harmless.
    pub idempotent: bool,
    /// Rate-limit bucket.
    pub rate_class: Option<String>,
    /// One-line description.
    pub doc: String,
}

impl Method {
    /// The snake_case name used for trait and client methods.
    pub fn snake_name(&self) -> String {
        snake_case(&self.name)
    }

    /// The trait of the method's group (see [`group_trait_name`]).
    pub fn group_trait(&self) -> String {
        group_trait_name(&self.group)
    }
}

/// One validated push event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Wire event type.
    pub id: u16,
    /// UpperCamelCase name.
    pub name: String,
    /// Payload message.
    pub message: String,
    /// One-line description.
    pub doc: String,
}

impl Event {
    /// The snake_case name used for push sender methods.
    pub fn snake_name(&self) -> String {
        snake_case(&self.name)
    }
}

/// The validated schema: what the emitters work from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Service name (`Qpq` → `QpqService`, `QpqClient`).
    pub name: String,
    /// Protobuf package of the messages.
    pub package: String,
    /// Group ranges.
    pub groups: BTreeMap<String, [u16; 2]>,
    /// Methods, sorted by ID.
    pub methods: Vec<Method>,
    /// Events, sorted by ID.
    pub events: Vec<Event>,
    /// Acknowledged breaking changes.
    pub accepted_breaks: Vec<AcceptedBreak>,
}

/// Converts `UpperCamelCase` to `snake_case` (`FetchHybridKeys` → `fetch_hybrid_keys`).
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                None => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                Some(_) => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_snake(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The trait a group's methods are generated into: `delivery` → `DeliveryService`,
/// `p2p` → `P2pService`, `key_transparency` → `KeyTransparencyService`.
pub fn group_trait_name(group: &str) -> String {
    let mut name = String::with_capacity(group.len() + 7);
    for word in group.split('_').filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    name.push_str("Service");
    name
}

fn is_upper_camel(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

pub(crate) fn parse(text: &str) -> Result<RawSchema, Vec<String>> {
    toml::from_str(text).map_err(|e| vec![format!("methods.toml is not valid: {e}")])
}

fn find_message<'a>(
    fds: &'a FileDescriptorSet,
    package: &str,
    name: &str,
) -> Option<&'a DescriptorProto> {
    fds.file
        .iter()
        .filter(|f| f.package.as_deref() == Some(package))
        .flat_map(|f| f.message_type.iter())
        .find(|m| m.name.as_deref() == Some(name))
}

fn has_session_token(message: &DescriptorProto) -> bool {
    message.field.iter().any(|f| {
        f.number == Some(1)
            && f.name.as_deref() == Some("session_token")
            && f.r#type == Some(Type::Bytes as i32)
            && f.label != Some(Label::Repeated as i32)
    })
}

/// Validates the raw schema against the compiled protobuf descriptors.
pub(crate) fn validate(raw: RawSchema, fds: &FileDescriptorSet) -> Result<Service, Vec<String>> {
    let mut problems = Vec::new();
    let service = &raw.service;
    if !is_upper_camel(&service.name) {
        problems.push(format!(
            "service name `{}` must be UpperCamelCase (e.g. `Qpq`)",
            service.name
        ));
    }
    if !fds
        .file
        .iter()
        .any(|f| f.package.as_deref() == Some(service.package.as_str()))
    {
        problems.push(format!(
            "package `{}` is declared in [service] but no .proto file declares it",
            service.package
        ));
    }
    for (group, [low, high]) in &raw.groups {
        if !is_snake(group) {
            problems.push(format!(
                "group `{group}` must be snake_case ASCII starting with a letter (e.g. `delivery`): it names the trait `{}`",
                group_trait_name(group)
            ));
        } else if group_trait_name(group) == format!("{}Service", service.name) {
            problems.push(format!(
                "group `{group}` would generate the trait `{}`, the name of the whole service's trait; rename the group",
                group_trait_name(group)
            ));
        }
        if low > high {
            problems.push(format!(
                "group `{group}` has range [{low}, {high}], whose start is after its end"
            ));
        }
    }
    if raw.methods.is_empty() {
        problems.push("the schema declares no [[method]]; a service needs at least one".to_owned());
    }
    let reserved: BTreeSet<u16> = service.reserved.iter().copied().collect();
    let mut by_id: HashMap<u16, &str> = HashMap::new();
    let mut by_name: HashMap<&str, u16> = HashMap::new();
    let mut methods = Vec::new();
    for m in &raw.methods {
        let at = format!("method {} ({})", m.name, m.id);
        if let Some(other) = by_id.insert(m.id, &m.name) {
            problems.push(format!(
                "{at}: duplicate ID {}, already used by method {other}",
                m.id
            ));
        }
        if let Some(other) = by_name.insert(&m.name, m.id) {
            problems.push(format!(
                "{at}: duplicate name, already used by method ID {other}"
            ));
        }
        if !is_upper_camel(&m.name) {
            problems.push(format!("{at}: name must be UpperCamelCase ASCII"));
        } else if syn::parse_str::<syn::Ident>(&snake_case(&m.name)).is_err() {
            problems.push(format!(
                "{at}: snake_case name `{}` is a Rust keyword",
                snake_case(&m.name)
            ));
        }
        if reserved.contains(&m.id) {
            problems.push(format!(
                "{at}: ID {} is reserved (retired) and must not be reused",
                m.id
            ));
        }
        if m.id >= 1000 {
            problems.push(format!(
                "{at}: method IDs must be below 1000; 1000 and up are push events"
            ));
        }
        match raw.groups.get(&m.group) {
            None => problems.push(format!(
                "{at}: group `{}` is not declared in [groups]",
                m.group
            )),
            Some([low, high]) if !(low..=high).contains(&&m.id) => problems.push(format!(
                "{at}: ID {} is outside its group `{}` range [{low}, {high}]",
                m.id, m.group
            )),
            Some(_) => {}
        }
        let auth = Auth::parse(&m.auth);
        if auth.is_none() {
            problems.push(format!(
                "{at}: auth `{}` is not one of none, session, admin, federation",
                m.auth
            ));
        }
        for (role, ty) in [("request", &m.request), ("response", &m.response)] {
            match find_message(fds, &service.package, ty) {
                None => problems.push(format!(
                    "{at}: {role} type `{ty}` is not a message of package `{}`",
                    service.package
                )),
                Some(_) if !is_upper_camel(ty) => {
                    problems.push(format!("{at}: {role} type `{ty}` must be UpperCamelCase"))
                }
                Some(message) => {
                    if role == "request"
                        && auth.is_some_and(Auth::needs_token)
                        && !has_session_token(message)
                    {
                        problems.push(format!(
                            "{at}: auth `{}` requires the request `{ty}` to declare `bytes session_token = 1;`",
                            m.auth
                        ));
                    }
                }
            }
        }
        let max_request_bytes = m.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes == 0 {
            problems.push(format!("{at}: max_request_bytes must be at least 1"));
        }
        let timeout_ms = m.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 {
            problems.push(format!("{at}: timeout_ms must be at least 1"));
        }
        if m.doc.trim().is_empty() {
            problems.push(format!("{at}: doc must say what the method does"));
        }
        if let Some(class) = &m.rate_class
            && (class.is_empty() || !class.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        {
            problems.push(format!(
                "{at}: rate_class `{class}` must be lowercase snake_case"
            ));
        }
        if let Some(auth) = auth {
            methods.push(Method {
                id: m.id,
                name: m.name.clone(),
                group: m.group.clone(),
                request: m.request.clone(),
                response: m.response.clone(),
                auth,
                max_request_bytes,
                timeout_ms,
                idempotent: m.idempotent,
                rate_class: m.rate_class.clone(),
                doc: m.doc.trim().to_owned(),
            });
        }
    }
    let mut event_ids: HashMap<u16, &str> = HashMap::new();
    let mut event_names: HashMap<&str, u16> = HashMap::new();
    let mut events = Vec::new();
    for e in &raw.events {
        let at = format!("event {} ({})", e.name, e.id);
        if let Some(other) = event_ids.insert(e.id, &e.name) {
            problems.push(format!(
                "{at}: duplicate ID {}, already used by event {other}",
                e.id
            ));
        }
        if let Some(other) = event_names.insert(&e.name, e.id) {
            problems.push(format!(
                "{at}: duplicate name, already used by event ID {other}"
            ));
        }
        if e.id < 1000 {
            problems.push(format!("{at}: event IDs must be 1000 or above"));
        }
        if !is_upper_camel(&e.name) || e.name == "Unknown" {
            problems.push(format!(
                "{at}: name must be UpperCamelCase ASCII and not `Unknown`"
            ));
        }
        if find_message(fds, &service.package, &e.message).is_none() {
            problems.push(format!(
                "{at}: message type `{}` is not a message of package `{}`",
                e.message, service.package
            ));
        }
        if e.doc.trim().is_empty() {
            problems.push(format!("{at}: doc must say what the event means"));
        }
        events.push(Event {
            id: e.id,
            name: e.name.clone(),
            message: e.message.clone(),
            doc: e.doc.trim().to_owned(),
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    methods.sort_by_key(|m| m.id);
    events.sort_by_key(|e| e.id);
    Ok(Service {
        name: raw.service.name,
        package: raw.service.package,
        groups: raw.groups,
        methods,
        events,
        accepted_breaks: raw.accept_break,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_conversions() {
        assert_eq!(snake_case("Enqueue"), "enqueue");
        assert_eq!(snake_case("FetchHybridKeys"), "fetch_hybrid_keys");
        assert_eq!(snake_case("OpaqueRegisterStart"), "opaque_register_start");
        assert_eq!(snake_case("PushNewMessage"), "push_new_message");
        assert_eq!(snake_case("HTTPProxy"), "http_proxy");
        assert_eq!(snake_case("Sha256Sum"), "sha256_sum");
    }
}
