//! Emits the Rust API of a service, one function per generated item: `MethodId`, the
//! descriptor tables, a trait per method group and the service trait composing them, the
//! server (dispatch), the typed client, the `Event` enum, the event stream and the typed
//! push sender.
//!
//! Generated code names only `::qpq_runtime::codegen::*`, `::prost` and `::std`, and refers
//! to messages as `proto::Name`, the module the generated file itself declares. It calls the
//! runtime rather than inlining it: a dispatch arm is one call of `codegen::unary`.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use crate::schema::{Auth, Event, Method, Service};

/// The service API as tokens (everything except the `proto` module).
pub(crate) fn service_tokens(service: &Service) -> TokenStream {
    let items = [
        method_id(service),
        descriptor_tables(service),
        group_traits(service),
        service_trait(service),
        server(service),
        client(service),
        event_enum(service),
        event_stream(service),
        push_trait(service),
    ];
    quote!(#(#items)*)
}

fn ident(name: &str) -> syn::Ident {
    format_ident!("{}", name)
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

fn names(service: &Service) -> Names {
    Names {
        service: format_ident!("{}Service", service.name),
        server: format_ident!("{}Server", service.name),
        client: format_ident!("{}Client", service.name),
        events: format_ident!("{}Events", service.name),
        push: format_ident!("{}Push", service.name),
    }
}

/// The names of the generated types that depend on the service name.
struct Names {
    service: syn::Ident,
    server: syn::Ident,
    client: syn::Ident,
    events: syn::Ident,
    push: syn::Ident,
}

/// Doc attributes for a method: its description, then its wire facts.
fn method_docs(m: &Method) -> TokenStream {
    let mut lines: Vec<String> = m.doc.lines().map(|l| format!(" {l}")).collect();
    lines.push(String::new());
    lines.push(format!(
        " Method `{}` ({}) · auth `{}` · max request {} bytes · timeout {} ms · idempotent: {}{}",
        m.id,
        m.group,
        m.auth,
        m.max_request_bytes,
        m.timeout_ms,
        yes_no(m.idempotent),
        m.rate_class
            .as_ref()
            .map(|c| format!(" · rate class `{c}`"))
            .unwrap_or_default()
    ));
    quote!(#(#[doc = #lines])*)
}

fn event_docs(e: &Event) -> TokenStream {
    let mut lines: Vec<String> = e.doc.lines().map(|l| format!(" {l}")).collect();
    lines.push(String::new());
    lines.push(format!(" Event type `{}` · payload `{}`", e.id, e.message));
    quote!(#(#[doc = #lines])*)
}

fn auth_variant(auth: Auth) -> TokenStream {
    match auth {
        Auth::None => quote!(::qpq_runtime::codegen::AuthLevel::None),
        Auth::Session => quote!(::qpq_runtime::codegen::AuthLevel::Session),
        Auth::Admin => quote!(::qpq_runtime::codegen::AuthLevel::Admin),
        Auth::Federation => quote!(::qpq_runtime::codegen::AuthLevel::Federation),
    }
}

fn principal_type(auth: Auth) -> TokenStream {
    match auth {
        Auth::None => quote!(::qpq_runtime::codegen::Anonymous),
        Auth::Session => quote!(::qpq_runtime::codegen::Session),
        Auth::Admin => quote!(::qpq_runtime::codegen::Admin),
        Auth::Federation => quote!(::qpq_runtime::codegen::FederationPeer),
    }
}

/// The groups that have methods, in the order of their first method ID, with their methods.
fn groups(service: &Service) -> Vec<(&str, Vec<&Method>)> {
    let mut groups: Vec<(&str, Vec<&Method>)> = Vec::new();
    for m in &service.methods {
        match groups.iter_mut().find(|(name, _)| *name == m.group) {
            Some((_, methods)) => methods.push(m),
            None => groups.push((&m.group, vec![m])),
        }
    }
    groups
}

fn method_id(service: &Service) -> TokenStream {
    let doc = format!(" Methods of the `{}` service, by wire ID.", service.name);
    let count = Literal::usize_unsuffixed(service.methods.len());
    let variants = service.methods.iter().map(|m| {
        let docs = method_docs(m);
        let variant = ident(&m.name);
        let id = Literal::u16_unsuffixed(m.id);
        quote!(#docs #variant = #id,)
    });
    let all = service.methods.iter().map(|m| ident(&m.name));
    let names = service.methods.iter().map(|m| {
        let variant = ident(&m.name);
        let name = &m.name;
        quote!(MethodId::#variant => #name,)
    });
    let descriptors = service.methods.iter().enumerate().map(|(index, m)| {
        let variant = ident(&m.name);
        let index = Literal::usize_unsuffixed(index);
        quote!(MethodId::#variant => &METHODS[#index],)
    });
    let checks = service.methods.iter().map(|m| {
        let variant = ident(&m.name);
        let request = ident(&m.request);
        quote!(MethodId::#variant => <proto::#request as ::prost::Message>::decode(body).map(drop),)
    });
    let from_ids = service.methods.iter().map(|m| {
        let variant = ident(&m.name);
        let id = Literal::u16_unsuffixed(m.id);
        quote!(#id => ::std::result::Result::Ok(MethodId::#variant),)
    });
    quote! {
        #[doc = #doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum MethodId {
            #(#variants)*
        }

        impl MethodId {
            /// Every method, in ID order.
            pub const ALL: [MethodId; #count] = [#(MethodId::#all),*];

            /// The wire ID.
            pub const fn id(self) -> u16 {
                self as u16
            }

            /// The method's name as written in the schema.
            pub const fn name(self) -> &'static str {
                match self {
                    #(#names)*
                }
            }

            /// Everything the schema says about the method.
            pub fn descriptor(self) -> &'static ::qpq_runtime::codegen::MethodDescriptor {
                match self {
                    #(#descriptors)*
                }
            }

            /// Decodes `body` as this method's request message, as the dispatch would, and
            /// drops it (for tools, tests and fuzzing).
            pub fn check_request(self, body: &[u8]) -> ::std::result::Result<(), ::prost::DecodeError> {
                match self {
                    #(#checks)*
                }
            }
        }

        impl ::std::convert::TryFrom<u16> for MethodId {
            type Error = u16;

            /// Maps a wire ID to a method; an unknown ID is returned as the error.
            fn try_from(id: u16) -> ::std::result::Result<Self, u16> {
                match id {
                    #(#from_ids)*
                    other => ::std::result::Result::Err(other),
                }
            }
        }

        impl ::std::fmt::Display for MethodId {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{} ({})", self.name(), self.id())
            }
        }
    }
}

fn descriptor_tables(service: &Service) -> TokenStream {
    let count = Literal::usize_unsuffixed(service.methods.len());
    let descriptors = service.methods.iter().map(|m| {
        let id = Literal::u16_unsuffixed(m.id);
        let name = &m.name;
        let group = &m.group;
        let auth = auth_variant(m.auth);
        let max = Literal::u32_unsuffixed(m.max_request_bytes);
        let timeout = Literal::u32_unsuffixed(m.timeout_ms);
        let idempotent = m.idempotent;
        let rate_class = match &m.rate_class {
            Some(class) => quote!(::std::option::Option::Some(#class)),
            None => quote!(::std::option::Option::None),
        };
        let doc = &m.doc;
        quote! {
            ::qpq_runtime::codegen::MethodDescriptor {
                id: #id,
                name: #name,
                group: #group,
                auth: #auth,
                max_request_bytes: #max,
                timeout_ms: #timeout,
                idempotent: #idempotent,
                rate_class: #rate_class,
                doc: #doc,
            }
        }
    });
    let event_count = Literal::usize_unsuffixed(service.events.len());
    let event_descriptors = service.events.iter().map(|e| {
        let id = Literal::u16_unsuffixed(e.id);
        let name = &e.name;
        let doc = &e.doc;
        quote! {
            ::qpq_runtime::codegen::EventDescriptor { id: #id, name: #name, doc: #doc }
        }
    });
    quote! {
        /// The descriptor of every method, in ID order.
        pub static METHODS: [::qpq_runtime::codegen::MethodDescriptor; #count] = [#(#descriptors),*];

        /// The descriptor of every push event, in ID order.
        pub static EVENTS: [::qpq_runtime::codegen::EventDescriptor; #event_count] = [#(#event_descriptors),*];
    }
}

/// One trait per method group, holding that group's handlers.
fn group_traits(service: &Service) -> TokenStream {
    let service_trait = names(service).service;
    let traits = groups(service).into_iter().map(|(group, methods)| {
        let name = ident(&methods[0].group_trait());
        let range = service
            .groups
            .get(group)
            .map(|[low, high]| format!(" (IDs {low}-{high})"))
            .unwrap_or_default();
        let doc = format!(" The handlers of the `{group}` group{range}.");
        let doc_more = format!(
            " Part of [`{service_trait}`]: a type that implements every group's trait is a whole service."
        );
        let handlers = methods.iter().map(|m| {
            let docs = method_docs(m);
            let snake = ident(&m.snake_name());
            let principal = principal_type(m.auth);
            let request = ident(&m.request);
            let response = ident(&m.response);
            quote! {
                #docs
                fn #snake(
                    &self,
                    ctx: ::qpq_runtime::codegen::Ctx<#principal>,
                    request: proto::#request,
                ) -> impl ::std::future::Future<
                    Output = ::std::result::Result<proto::#response, ::qpq_runtime::codegen::Status>,
                > + ::std::marker::Send;
            }
        });
        quote! {
            #[doc = #doc]
            #[doc = ""]
            #[doc = #doc_more]
            pub trait #name: ::std::marker::Send + ::std::marker::Sync + 'static {
                #(#handlers)*
            }
        }
    });
    quote!(#(#traits)*)
}

/// The service trait: every group trait, implemented for any type that implements them all.
fn service_trait(service: &Service) -> TokenStream {
    let name = names(service).service;
    let groups = groups(service);
    let group_traits: Vec<_> = groups
        .iter()
        .map(|(_, methods)| ident(&methods[0].group_trait()))
        .collect();
    let list = group_traits
        .iter()
        .map(|t| format!("[`{t}`]"))
        .collect::<Vec<_>>()
        .join(", ");
    let doc = format!(" The whole service: {list}.");
    quote! {
        #[doc = #doc]
        ///
        /// Implement each group's trait (a group's handlers usually live in a file of their
        /// own); this trait then holds for the type by itself. The context's type follows
        /// the method's auth level (`Ctx<Anonymous>`, `Ctx<Session>`, `Ctx<Admin>`,
        /// `Ctx<FederationPeer>`): the generated dispatch has already authenticated the
        /// caller when a handler runs. There are no default bodies: a new method in the
        /// schema is a compile error until its group's trait implements it.
        pub trait #name: #(#group_traits)+* {}

        impl<T> #name for T where T: #(#group_traits)+* {}
    }
}

/// The server: wraps a service and an authenticator into the runtime's `Dispatch`.
fn server(service: &Service) -> TokenStream {
    let Names {
        service: trait_name,
        server: server_name,
        ..
    } = names(service);
    let arms = service.methods.iter().map(|m| {
        let variant = ident(&m.name);
        let group_trait = ident(&m.group_trait());
        let snake = ident(&m.snake_name());
        let request = ident(&m.request);
        let token = if m.auth.needs_token() {
            quote!(|request: &proto::#request| &request.session_token[..])
        } else {
            quote!(::qpq_runtime::codegen::no_token::<proto::#request>)
        };
        quote! {
            MethodId::#variant => ::std::boxed::Box::pin(async move {
                ::qpq_runtime::codegen::unary(&*auth, call, body, #token, |ctx, request| {
                    #group_trait::#snake(&*service, ctx, request)
                })
                .await
            }),
        }
    });
    quote! {
        /// Connects a service implementation and an authenticator to the runtime: each call
        /// runs `qpq_runtime::codegen::unary` (decode, authenticate, rate-limit hook, handler,
        /// encode) with its method's types.
        pub struct #server_name<S, A> {
            service: ::std::sync::Arc<S>,
            auth: ::std::sync::Arc<A>,
        }

        impl<S, A> #server_name<S, A>
        where
            S: #trait_name,
            A: ::qpq_runtime::codegen::Authenticator,
        {
            /// Wraps a service and its authenticator.
            pub fn new(service: ::std::sync::Arc<S>, auth: ::std::sync::Arc<A>) -> Self {
                Self { service, auth }
            }

            /// The dispatch the runtime's server drives.
            pub fn into_dispatch(self) -> ::std::sync::Arc<dyn ::qpq_runtime::codegen::Dispatch> {
                ::std::sync::Arc::new(self)
            }
        }

        impl<S, A> ::qpq_runtime::codegen::Dispatch for #server_name<S, A>
        where
            S: #trait_name,
            A: ::qpq_runtime::codegen::Authenticator,
        {
            fn method(&self, id: u16) -> ::std::option::Option<&'static ::qpq_runtime::codegen::MethodDescriptor> {
                MethodId::try_from(id).ok().map(MethodId::descriptor)
            }

            fn call(
                &self,
                call: ::qpq_runtime::codegen::CallInfo,
                body: ::qpq_runtime::codegen::Bytes,
            ) -> ::qpq_runtime::codegen::BoxFuture<
                'static,
                ::std::result::Result<::qpq_runtime::codegen::Bytes, ::qpq_runtime::codegen::Status>,
            > {
                let method = match MethodId::try_from(call.method().id) {
                    ::std::result::Result::Ok(method) => method,
                    ::std::result::Result::Err(id) => {
                        return ::std::boxed::Box::pin(::std::future::ready(
                            ::std::result::Result::Err(::qpq_runtime::codegen::Status::unknown_method(id)),
                        ));
                    }
                };
                let service = ::std::sync::Arc::clone(&self.service);
                let auth = ::std::sync::Arc::clone(&self.auth);
                match method {
                    #(#arms)*
                }
            }
        }
    }
}

fn client(service: &Service) -> TokenStream {
    let Names {
        client: client_name,
        events: events_name,
        ..
    } = names(service);
    let methods = service.methods.iter().map(|m| {
        let docs = method_docs(m);
        let variant = ident(&m.name);
        let snake = ident(&m.snake_name());
        let request = ident(&m.request);
        let response = ident(&m.response);
        quote! {
            #docs
            pub async fn #snake(
                &self,
                request: proto::#request,
            ) -> ::std::result::Result<proto::#response, ::qpq_runtime::codegen::RpcError> {
                self.call(MethodId::#variant, &request).await
            }
        }
    });
    quote! {
        /// The typed client: one async method per RPC over a runtime connection.
        ///
        /// Each call uses the method's schema timeout plus a second of grace unless
        /// [`with_timeout`](Self::with_timeout) sets another. Cheap to clone.
        #[derive(Clone, Debug)]
        pub struct #client_name {
            connection: ::qpq_runtime::codegen::Connection,
            timeout: ::std::option::Option<::std::time::Duration>,
        }

        impl #client_name {
            /// A client over an established connection.
            pub fn new(connection: ::qpq_runtime::codegen::Connection) -> Self {
                Self { connection, timeout: ::std::option::Option::None }
            }

            /// The underlying connection.
            pub fn connection(&self) -> &::qpq_runtime::codegen::Connection {
                &self.connection
            }

            /// A client whose calls all use `timeout` instead of the schema's.
            pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                Self { connection: self.connection.clone(), timeout: ::std::option::Option::Some(timeout) }
            }

            /// The stream of push events of this connection; `None` if already taken.
            pub fn events(&self) -> ::std::option::Option<#events_name> {
                self.connection.take_push_receiver().map(|receiver| #events_name { receiver })
            }

            async fn call<Req, Resp>(
                &self,
                method: MethodId,
                request: &Req,
            ) -> ::std::result::Result<Resp, ::qpq_runtime::codegen::RpcError>
            where
                Req: ::prost::Message,
                Resp: ::prost::Message + ::std::default::Default,
            {
                ::qpq_runtime::codegen::call_unary(&self.connection, method.descriptor(), self.timeout, request).await
            }

            #(#methods)*
        }
    }
}

fn event_enum(service: &Service) -> TokenStream {
    let variants = service.events.iter().map(|e| {
        let docs = event_docs(e);
        let variant = ident(&e.name);
        let message = ident(&e.message);
        quote!(#docs #variant(proto::#message),)
    });
    let types = service.events.iter().map(|e| {
        let variant = ident(&e.name);
        let id = Literal::u16_unsuffixed(e.id);
        quote!(Event::#variant(_) => #id,)
    });
    let decodes = service.events.iter().map(|e| {
        let variant = ident(&e.name);
        let id = Literal::u16_unsuffixed(e.id);
        let message = ident(&e.message);
        quote!(#id => Event::#variant(<proto::#message as ::prost::Message>::decode(payload)?),)
    });
    let encodes = service.events.iter().map(|e| {
        let variant = ident(&e.name);
        quote!(Event::#variant(event) => ::qpq_runtime::codegen::Bytes::from(::prost::Message::encode_to_vec(event)),)
    });
    quote! {
        /// A push event from the server.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Event {
            #(#variants)*
            /// An event type this build does not know (sent by a newer server).
            Unknown {
                /// The wire event type.
                event_type: u16,
                /// The undecoded payload.
                payload: ::qpq_runtime::codegen::Bytes,
            },
        }

        // With few or no events in a schema, these matches can have a single arm.
        #[allow(clippy::match_single_binding, clippy::infallible_destructuring_match)]
        impl Event {
            /// The wire event type.
            pub fn event_type(&self) -> u16 {
                match self {
                    #(#types)*
                    Event::Unknown { event_type, .. } => *event_type,
                }
            }

            /// Decodes a push frame; unknown event types become [`Event::Unknown`].
            pub fn decode(
                event_type: u16,
                payload: ::qpq_runtime::codegen::Bytes,
            ) -> ::std::result::Result<Self, ::prost::DecodeError> {
                ::std::result::Result::Ok(match event_type {
                    #(#decodes)*
                    _ => Event::Unknown { event_type, payload },
                })
            }

            /// Encodes the payload of this event.
            pub fn encode(&self) -> ::qpq_runtime::codegen::Bytes {
                match self {
                    #(#encodes)*
                    Event::Unknown { payload, .. } => payload.clone(),
                }
            }
        }
    }
}

fn event_stream(service: &Service) -> TokenStream {
    let events_name = names(service).events;
    quote! {
        /// The client's stream of push events.
        #[derive(Debug)]
        pub struct #events_name {
            receiver: ::qpq_runtime::codegen::PushReceiver,
        }

        impl #events_name {
            /// The next event, or `None` once the connection is closed. A known event type
            /// whose payload does not decode is returned as the decode error.
            pub async fn next(&mut self) -> ::std::option::Option<::std::result::Result<Event, ::prost::DecodeError>> {
                let frame = self.receiver.recv().await?;
                ::std::option::Option::Some(Event::decode(frame.event_type, frame.body))
            }
        }
    }
}

fn push_trait(service: &Service) -> TokenStream {
    let push_name = names(service).push;
    let senders = service.events.iter().map(|e| {
        let docs = event_docs(e);
        let snake = ident(&e.snake_name());
        let message = ident(&e.message);
        quote! {
            #docs
            fn #snake(&self, event: &proto::#message) -> ::std::result::Result<(), ::qpq_runtime::codegen::PushError>;
        }
    });
    let impls = service.events.iter().map(|e| {
        let snake = ident(&e.snake_name());
        let message = ident(&e.message);
        let id = Literal::u16_unsuffixed(e.id);
        quote! {
            fn #snake(&self, event: &proto::#message) -> ::std::result::Result<(), ::qpq_runtime::codegen::PushError> {
                self.push(#id, ::qpq_runtime::codegen::Bytes::from(::prost::Message::encode_to_vec(event)))
            }
        }
    });
    quote! {
        /// Typed pushes to one connection (implemented for the runtime's `PushSink`).
        ///
        /// Pushes are hints: when the connection's buffer is full the push is dropped and
        /// `PushError::Full` returned; the durable state stays the source of truth.
        pub trait #push_name {
            #(#senders)*

            /// Pushes any event.
            fn push_event(&self, event: &Event) -> ::std::result::Result<(), ::qpq_runtime::codegen::PushError>;
        }

        impl #push_name for ::qpq_runtime::codegen::PushSink {
            #(#impls)*

            fn push_event(&self, event: &Event) -> ::std::result::Result<(), ::qpq_runtime::codegen::PushError> {
                self.push(event.event_type(), event.encode())
            }
        }
    }
}
