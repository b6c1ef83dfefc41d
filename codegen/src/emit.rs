//! Emits the Rust API of a service: `MethodId`, the descriptor tables, the service trait, the
//! dispatch, the typed client, the `Event` enum and the typed push sender.
//!
//! Generated code names only `::qpq_runtime::codegen::*`, `::prost` and `::std`, and refers
//! to messages as `proto::Name`, the module the generated file itself declares.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use crate::schema::{Auth, Event, Method, Service};

fn ident(name: &str) -> syn::Ident {
    format_ident!("{}", name)
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Doc lines for a method: its description, then its wire facts.
fn method_docs(m: &Method) -> Vec<String> {
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
    lines
}

fn event_docs(e: &Event) -> Vec<String> {
    let mut lines: Vec<String> = e.doc.lines().map(|l| format!(" {l}")).collect();
    lines.push(String::new());
    lines.push(format!(" Event type `{}` · payload `{}`", e.id, e.message));
    lines
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

/// The statements that authenticate a call and leave `ctx` in scope.
fn authenticate(auth: Auth) -> TokenStream {
    match auth {
        Auth::None => quote! {
            auth.rate_limit(&call, ::qpq_runtime::codegen::Principal::Anonymous)?;
            let ctx = ::qpq_runtime::codegen::Ctx::new(call, ::qpq_runtime::codegen::Anonymous);
        },
        Auth::Session => quote! {
            let session = auth.session(&call, &request.session_token).await?;
            auth.rate_limit(&call, ::qpq_runtime::codegen::Principal::Session(&session))?;
            let ctx = ::qpq_runtime::codegen::Ctx::new(call, session);
        },
        Auth::Admin => quote! {
            let admin = auth.admin(&call, &request.session_token).await?;
            auth.rate_limit(&call, ::qpq_runtime::codegen::Principal::Session(&admin.session))?;
            let ctx = ::qpq_runtime::codegen::Ctx::new(call, admin);
        },
        Auth::Federation => quote! {
            let peer = auth.federation_peer(&call).await?;
            auth.rate_limit(&call, ::qpq_runtime::codegen::Principal::Peer(&peer))?;
            let ctx = ::qpq_runtime::codegen::Ctx::new(call, peer);
        },
    }
}

/// The service API as tokens (everything except the `proto` module).
pub(crate) fn service_tokens(service: &Service) -> TokenStream {
    let trait_name = format_ident!("{}Service", service.name);
    let server_name = format_ident!("{}Server", service.name);
    let client_name = format_ident!("{}Client", service.name);
    let events_name = format_ident!("{}Events", service.name);
    let push_name = format_ident!("{}Push", service.name);
    let service_doc = format!(" Methods of the `{}` service, by wire ID.", service.name);

    let methods = &service.methods;
    let variants: Vec<_> = methods.iter().map(|m| ident(&m.name)).collect();
    let ids: Vec<_> = methods
        .iter()
        .map(|m| Literal::u16_unsuffixed(m.id))
        .collect();
    let names: Vec<_> = methods.iter().map(|m| m.name.as_str()).collect();
    let docs: Vec<Vec<String>> = methods.iter().map(method_docs).collect();
    let indices: Vec<_> = (0..methods.len()).map(Literal::usize_unsuffixed).collect();
    let snakes: Vec<_> = methods.iter().map(|m| ident(&m.snake_name())).collect();
    let requests: Vec<_> = methods.iter().map(|m| ident(&m.request)).collect();
    let responses: Vec<_> = methods.iter().map(|m| ident(&m.response)).collect();
    let principals: Vec<_> = methods.iter().map(|m| principal_type(m.auth)).collect();
    let auth_blocks: Vec<_> = methods.iter().map(|m| authenticate(m.auth)).collect();
    let count = Literal::usize_unsuffixed(methods.len());

    let descriptors = methods.iter().map(|m| {
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

    let events = &service.events;
    let event_variants: Vec<_> = events.iter().map(|e| ident(&e.name)).collect();
    let event_ids: Vec<_> = events
        .iter()
        .map(|e| Literal::u16_unsuffixed(e.id))
        .collect();
    let event_messages: Vec<_> = events.iter().map(|e| ident(&e.message)).collect();
    let event_docs: Vec<Vec<String>> = events.iter().map(event_docs).collect();
    let event_snakes: Vec<_> = events.iter().map(|e| ident(&e.snake_name())).collect();
    let event_count = Literal::usize_unsuffixed(events.len());
    let event_descriptors = events.iter().map(|e| {
        let id = Literal::u16_unsuffixed(e.id);
        let name = &e.name;
        let doc = &e.doc;
        quote! {
            ::qpq_runtime::codegen::EventDescriptor { id: #id, name: #name, doc: #doc }
        }
    });

    quote! {
        #[doc = #service_doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum MethodId {
            #(
                #(#[doc = #docs])*
                #variants = #ids,
            )*
        }

        impl MethodId {
            /// Every method, in ID order.
            pub const ALL: [MethodId; #count] = [#(MethodId::#variants),*];

            /// The wire ID.
            pub const fn id(self) -> u16 {
                self as u16
            }

            /// The method's name as written in the schema.
            pub const fn name(self) -> &'static str {
                match self {
                    #(MethodId::#variants => #names,)*
                }
            }

            /// Everything the schema says about the method.
            pub fn descriptor(self) -> &'static ::qpq_runtime::codegen::MethodDescriptor {
                match self {
                    #(MethodId::#variants => &METHODS[#indices],)*
                }
            }

            /// Decodes `body` as this method's request message, as the dispatch would, and
            /// drops it (for tools, tests and fuzzing).
            pub fn check_request(self, body: &[u8]) -> ::std::result::Result<(), ::prost::DecodeError> {
                match self {
                    #(MethodId::#variants => <proto::#requests as ::prost::Message>::decode(body).map(drop),)*
                }
            }
        }

        impl ::std::convert::TryFrom<u16> for MethodId {
            type Error = u16;

            /// Maps a wire ID to a method; an unknown ID is returned as the error.
            fn try_from(id: u16) -> ::std::result::Result<Self, u16> {
                match id {
                    #(#ids => ::std::result::Result::Ok(MethodId::#variants),)*
                    other => ::std::result::Result::Err(other),
                }
            }
        }

        impl ::std::fmt::Display for MethodId {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{} ({})", self.name(), self.id())
            }
        }

        /// The descriptor of every method, in ID order.
        pub static METHODS: [::qpq_runtime::codegen::MethodDescriptor; #count] = [#(#descriptors),*];

        /// The descriptor of every push event, in ID order.
        pub static EVENTS: [::qpq_runtime::codegen::EventDescriptor; #event_count] = [#(#event_descriptors),*];

        /// The server side of the service: one async method per RPC.
        ///
        /// The context's type follows the method's auth level (`Ctx<Anonymous>`,
        /// `Ctx<Session>`, `Ctx<Admin>`, `Ctx<FederationPeer>`); the generated dispatch has
        /// already authenticated the caller when a method runs. There are no default bodies:
        /// a new method in the schema is a compile error until it is implemented.
        pub trait #trait_name: ::std::marker::Send + ::std::marker::Sync + 'static {
            #(
                #(#[doc = #docs])*
                fn #snakes(
                    &self,
                    ctx: ::qpq_runtime::codegen::Ctx<#principals>,
                    request: proto::#requests,
                ) -> impl ::std::future::Future<
                    Output = ::std::result::Result<proto::#responses, ::qpq_runtime::codegen::Status>,
                > + ::std::marker::Send;
            )*
        }

        /// Connects a service implementation and an authenticator to the runtime: decodes
        /// each request, authenticates it, applies the rate-limit hook and runs the handler.
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
                    #(
                        MethodId::#variants => ::std::boxed::Box::pin(async move {
                            let request = <proto::#requests as ::prost::Message>::decode(body)
                                .map_err(|error| ::qpq_runtime::codegen::malformed_request(call.method(), &error))?;
                            #auth_blocks
                            let response = service.#snakes(ctx, request).await?;
                            ::std::result::Result::Ok(::qpq_runtime::codegen::Bytes::from(
                                ::prost::Message::encode_to_vec(&response),
                            ))
                        }),
                    )*
                }
            }
        }

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
                let descriptor = method.descriptor();
                let timeout = self
                    .timeout
                    .unwrap_or_else(|| ::qpq_runtime::codegen::client_timeout(descriptor));
                let body = self
                    .connection
                    .call_bytes(
                        descriptor.id,
                        ::qpq_runtime::codegen::Bytes::from(::prost::Message::encode_to_vec(request)),
                        timeout,
                    )
                    .await?;
                <Resp as ::prost::Message>::decode(body).map_err(|error| {
                    ::qpq_runtime::codegen::RpcError::Decode {
                        method: descriptor.name,
                        message: error.to_string(),
                    }
                })
            }

            #(
                #(#[doc = #docs])*
                pub async fn #snakes(
                    &self,
                    request: proto::#requests,
                ) -> ::std::result::Result<proto::#responses, ::qpq_runtime::codegen::RpcError> {
                    self.call(MethodId::#variants, &request).await
                }
            )*
        }

        /// A push event from the server.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Event {
            #(
                #(#[doc = #event_docs])*
                #event_variants(proto::#event_messages),
            )*
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
                    #(Event::#event_variants(_) => #event_ids,)*
                    Event::Unknown { event_type, .. } => *event_type,
                }
            }

            /// Decodes a push frame; unknown event types become [`Event::Unknown`].
            pub fn decode(
                event_type: u16,
                payload: ::qpq_runtime::codegen::Bytes,
            ) -> ::std::result::Result<Self, ::prost::DecodeError> {
                ::std::result::Result::Ok(match event_type {
                    #(#event_ids => Event::#event_variants(<proto::#event_messages as ::prost::Message>::decode(payload)?),)*
                    _ => Event::Unknown { event_type, payload },
                })
            }

            /// Encodes the payload of this event.
            pub fn encode(&self) -> ::qpq_runtime::codegen::Bytes {
                match self {
                    #(Event::#event_variants(event) => ::qpq_runtime::codegen::Bytes::from(::prost::Message::encode_to_vec(event)),)*
                    Event::Unknown { payload, .. } => payload.clone(),
                }
            }
        }

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

        /// Typed pushes to one connection (implemented for the runtime's `PushSink`).
        ///
        /// Pushes are hints: when the connection's buffer is full the push is dropped and
        /// `PushError::Full` returned; the durable state stays the source of truth.
        pub trait #push_name {
            #(
                #(#[doc = #event_docs])*
                fn #event_snakes(&self, event: &proto::#event_messages) -> ::std::result::Result<(), ::qpq_runtime::codegen::PushError>;
            )*

            /// Pushes any event.
            fn push_event(&self, event: &Event) -> ::std::result::Result<(), ::qpq_runtime::codegen::PushError>;
        }

        impl #push_name for ::qpq_runtime::codegen::PushSink {
            #(
                fn #event_snakes(&self, event: &proto::#event_messages) -> ::std::result::Result<(), ::qpq_runtime::codegen::PushError> {
                    self.push(#event_ids, ::qpq_runtime::codegen::Bytes::from(::prost::Message::encode_to_vec(event)))
                }
            )*

            fn push_event(&self, event: &Event) -> ::std::result::Result<(), ::qpq_runtime::codegen::PushError> {
                self.push(event.event_type(), event.encode())
            }
        }
    }
}
