//! The call path every generated dispatch arm runs, written once: decode the request,
//! authenticate the caller at the method's auth level, apply the rate-limit hook, run the
//! handler, encode the response.
//!
//! Generated code stays a table (one arm per method naming its request type, its token field
//! and its handler); the order of the steps and their statuses live here. The transport
//! around it (deadline, panic catching, cancellation) is the server's (`server.rs`).
//! [`call_unary`] is the client's side of the same call kind.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::client::{Connection, RpcError};
use crate::service::{
    Admin, Anonymous, Authenticator, CallInfo, Ctx, FederationPeer, MethodDescriptor, Principal,
    Session,
};
use crate::wire::Status;

/// The principal of one auth level: what [`unary`] obtains from the [`Authenticator`] before
/// a handler runs, and hands to it inside [`Ctx`].
///
/// Implemented for [`Anonymous`], [`Session`], [`Admin`] and [`FederationPeer`]; the
/// generated dispatch picks the one the schema names for each method, so a handler's context
/// type proves its caller was authenticated.
pub trait Caller: Sized + Send + 'static {
    /// Authenticates `call`. `token` is the request's `session_token` (empty for levels that
    /// take none).
    fn authenticate<A: Authenticator>(
        auth: &A,
        call: &CallInfo,
        token: &[u8],
    ) -> impl Future<Output = Result<Self, Status>> + Send;

    /// The caller as the rate-limit hook sees it.
    fn principal(&self) -> Principal<'_>;
}

impl Caller for Anonymous {
    async fn authenticate<A: Authenticator>(
        _auth: &A,
        _call: &CallInfo,
        _token: &[u8],
    ) -> Result<Self, Status> {
        Ok(Anonymous)
    }

    fn principal(&self) -> Principal<'_> {
        Principal::Anonymous
    }
}

impl Caller for Session {
    fn authenticate<A: Authenticator>(
        auth: &A,
        call: &CallInfo,
        token: &[u8],
    ) -> impl Future<Output = Result<Self, Status>> + Send {
        auth.session(call, token)
    }

    fn principal(&self) -> Principal<'_> {
        Principal::Session(self)
    }
}

impl Caller for Admin {
    fn authenticate<A: Authenticator>(
        auth: &A,
        call: &CallInfo,
        token: &[u8],
    ) -> impl Future<Output = Result<Self, Status>> + Send {
        auth.admin(call, token)
    }

    fn principal(&self) -> Principal<'_> {
        Principal::Session(&self.session)
    }
}

impl Caller for FederationPeer {
    fn authenticate<A: Authenticator>(
        auth: &A,
        call: &CallInfo,
        _token: &[u8],
    ) -> impl Future<Output = Result<Self, Status>> + Send {
        auth.federation_peer(call)
    }

    fn principal(&self) -> Principal<'_> {
        Principal::Peer(self)
    }
}

/// The request field a method authenticates with: `session_token` for `session` and `admin`
/// methods, [`no_token`] for the others.
pub type TokenField<Req> = fn(&Req) -> &[u8];

/// The [`TokenField`] of methods whose auth level takes no token.
pub fn no_token<Req>(_request: &Req) -> &[u8] {
    &[]
}

/// Runs one unary call, in order: decode `body` as `Req` (BadRequest when it does not
/// decode) → authenticate the caller as `C` (the authenticator's Unauthorized/Forbidden) →
/// [`Authenticator::rate_limit`] (RateLimited) → `handler` → encode its response.
///
/// Every generated dispatch arm is this call with the method's types.
pub async fn unary<C, A, Req, Resp, H, Fut>(
    auth: &A,
    call: CallInfo,
    body: Bytes,
    token: TokenField<Req>,
    handler: H,
) -> Result<Bytes, Status>
where
    C: Caller,
    A: Authenticator,
    Req: prost::Message + Default,
    Resp: prost::Message,
    H: FnOnce(Ctx<C>, Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let request = Req::decode(body).map_err(|error| malformed_request(call.method(), &error))?;
    let caller = C::authenticate(auth, &call, token(&request)).await?;
    auth.rate_limit(&call, caller.principal())?;
    let response = handler(Ctx::new(call, caller), request).await?;
    Ok(Bytes::from(response.encode_to_vec()))
}

/// The status for a request body that does not decode as the method's request message.
pub fn malformed_request(method: &MethodDescriptor, error: &dyn fmt::Display) -> Status {
    Status::bad_request(format!(
        "malformed request body for {} ({}): {error}",
        method.name, method.id
    ))
}

/// The client side of one unary call: encodes `request`, calls `method` on `connection`
/// within `timeout` (the schema's timeout plus a grace second when `None`, see
/// [`client_timeout`](crate::codegen::client_timeout)) and decodes the response.
pub async fn call_unary<Req, Resp>(
    connection: &Connection,
    method: &'static MethodDescriptor,
    timeout: Option<Duration>,
    request: &Req,
) -> Result<Resp, RpcError>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let timeout = timeout.unwrap_or_else(|| crate::codegen::client_timeout(method));
    let body = connection
        .call_bytes(method.id, Bytes::from(request.encode_to_vec()), timeout)
        .await?;
    Resp::decode(body).map_err(|error| RpcError::Decode {
        method: method.name,
        message: error.to_string(),
    })
}
