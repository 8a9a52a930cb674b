//! Routes: an HTTP method and path, the actor, group or entity they reach, and how the request
//! becomes a message and the reply a response.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormesh::{
    Accepts, ActorRef, Entity, Error, GroupConfig, GroupRef, Idempotent, Node, RemoteActor,
    RemoteMessage, WireValue,
};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::Client;
use crate::error::{from_actor_error, ApiError};
use crate::limit::RateLimit;

/// One route: built with [`Route::get`] (or `post`, `put`, `patch`, `delete`), then a target
/// ([`RouteTo::actor`], [`RouteTo::group`], [`RouteTo::entity`]), then what to send
/// ([`Bound::ask`], [`Bound::ask_idempotent`], [`Bound::tell`]), then its options.
///
/// ```
/// use actormesh_gateway::{ApiError, Route};
/// # use actix::{Actor, Context, Handler};
/// # use actormesh::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(RemoteMessage, Serialize, Deserialize, Clone)]
/// # #[remote(name = "doc.Greet", result = "String")]
/// # struct Greet(String);
/// # impl actormesh::Idempotent for Greet {}
/// # struct Greeter;
/// # impl Actor for Greeter { type Context = Context<Self>; }
/// # impl Handler<Greet> for Greeter {
/// #     type Result = String;
/// #     fn handle(&mut self, m: Greet, _: &mut Context<Self>) -> String { format!("hello, {}", m.0) }
/// # }
/// # actormesh::remote_actor!(Greeter = "doc.Greeter" { Greet });
/// // GET /hello/{name} asks one instance of the group `greeters`, retrying elsewhere on failure.
/// let route = Route::get("/hello/{name}")
///     .group::<Greeter>("greeters")
///     .ask_idempotent(|call| Ok(Greet(call.param::<String>("name")?)))
///     .timeout(std::time::Duration::from_secs(2));
/// # let _ = route;
/// ```
pub struct Route {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) endpoint: Arc<dyn Endpoint>,
    pub(crate) idempotent: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_timeout: Option<Duration>,
    pub(crate) scopes: Vec<String>,
    pub(crate) public: bool,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) key_param: Option<String>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("idempotent", &self.idempotent)
            .field("timeout", &self.timeout)
            .field("scopes", &self.scopes)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// A route for `method` on `path` (axum syntax: `/accounts/{id}`).
    pub fn on(method: Method, path: impl Into<String>) -> RouteTo {
        RouteTo {
            method,
            path: path.into(),
        }
    }

    /// A `GET` route: its message must be [`Idempotent`] ([`Bound::ask_idempotent`]).
    pub fn get(path: impl Into<String>) -> RouteTo {
        Route::on(Method::GET, path)
    }

    /// A `POST` route.
    pub fn post(path: impl Into<String>) -> RouteTo {
        Route::on(Method::POST, path)
    }

    /// A `PUT` route.
    pub fn put(path: impl Into<String>) -> RouteTo {
        Route::on(Method::PUT, path)
    }

    /// A `PATCH` route.
    pub fn patch(path: impl Into<String>) -> RouteTo {
        Route::on(Method::PATCH, path)
    }

    /// A `DELETE` route.
    pub fn delete(path: impl Into<String>) -> RouteTo {
        Route::on(Method::DELETE, path)
    }

    /// The request's deadline when the client does not send `X-Request-Timeout` (default:
    /// the gateway's, see [`GatewayBuilder::timeout`](crate::GatewayBuilder::timeout)). It
    /// becomes the ask's timeout: the target does not start the message after it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The longest deadline a client may ask for with `X-Request-Timeout` (default: the
    /// gateway's cap).
    pub fn max_timeout(mut self, max: Duration) -> Self {
        self.max_timeout = Some(max);
        self
    }

    /// Scopes the client must hold (all of them): 401 without credentials, 403 without the
    /// scopes.
    pub fn scopes<'a>(mut self, scopes: impl IntoIterator<Item = &'a str>) -> Self {
        self.scopes = scopes.into_iter().map(str::to_owned).collect();
        self
    }

    /// Callable without credentials even when the gateway has authentication configured.
    pub fn public(mut self) -> Self {
        self.public = true;
        self
    }

    /// This route's rate limit per client, instead of the gateway's.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path template.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A route without a target yet: see [`Route`].
#[derive(Debug)]
pub struct RouteTo {
    method: Method,
    path: String,
}

impl RouteTo {
    /// Sends to the actor registered under `name` ([`Node::register_name`]). The reference is
    /// looked up on first use and again after the actor or its node went away.
    pub fn actor<A: RemoteActor>(self, name: impl Into<String>) -> Bound<Named<A>> {
        self.bind(Named {
            name: name.into(),
            cached: Arc::new(Mutex::new(None)),
        })
    }

    /// Sends to one instance of the group `group`, picked by the group's balancer (round
    /// robin by default).
    pub fn group<A: RemoteActor>(self, group: impl Into<String>) -> Bound<Grouped<A>> {
        self.group_with(group, GroupConfig::new())
    }

    /// Like [`group`](Self::group), with a balancer, in-flight cap and retry policy.
    pub fn group_with<A: RemoteActor>(
        self,
        group: impl Into<String>,
        config: GroupConfig,
    ) -> Bound<Grouped<A>> {
        self.bind(Grouped {
            name: group.into(),
            config,
            group: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Sends to the entity of type `E` whose key is the path parameter `key_param` (which
    /// the path must contain, e.g. `/carts/{id}` with `"id"`).
    pub fn entity<E: Entity>(self, key_param: impl Into<String>) -> Bound<Keyed<E>> {
        let key_param = key_param.into();
        let mut bound = self.bind(Keyed {
            _entity: std::marker::PhantomData,
        });
        bound.key_param = Some(key_param);
        bound
    }

    fn bind<T>(self, target: T) -> Bound<T> {
        Bound {
            method: self.method,
            path: self.path,
            target,
            key_param: None,
            body: std::marker::PhantomData,
        }
    }
}

/// A route with its target; say what it sends with [`ask`](Self::ask),
/// [`ask_idempotent`](Self::ask_idempotent) or [`tell`](Self::tell). `B` is the type the
/// JSON body is parsed into: `()` (no body) unless set with [`body`](Self::body).
#[derive(Debug)]
pub struct Bound<T, B = ()> {
    method: Method,
    path: String,
    target: T,
    key_param: Option<String>,
    body: std::marker::PhantomData<fn() -> B>,
}

/// The request as a route's closure sees it: the JSON body (already parsed into `B`), the
/// path and query parameters, the headers and the authenticated client.
#[derive(Debug)]
pub struct Call<B> {
    /// The request body, parsed from JSON (an empty body reads as JSON `null`, so `()` and
    /// `Option<T>` accept it).
    pub body: B,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    client: Client,
}

impl<B> Call<B> {
    /// The path parameter `name` parsed as `T`; a 400 naming it when it does not parse.
    pub fn param<T>(&self, name: &str) -> Result<T, ApiError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let raw = self.param_str(name)?;
        raw.parse()
            .map_err(|e| ApiError::bad_request(name, format!("path parameter `{name}`: {e}")))
    }

    /// The path parameter `name` as text (a 400 if the route has no such parameter).
    pub fn param_str(&self, name: &str) -> Result<&str, ApiError> {
        find(&self.params, name)
            .ok_or_else(|| ApiError::bad_request(name, format!("no path parameter `{name}`")))
    }

    /// The query parameter `name` parsed as `T`, `None` when absent; a 400 naming it when it
    /// does not parse.
    pub fn query<T>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        find(&self.query, name)
            .map(|raw| {
                raw.parse().map_err(|e| {
                    ApiError::bad_request(name, format!("query parameter `{name}`: {e}"))
                })
            })
            .transpose()
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The caller.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// What a route's handler receives from the server.
pub(crate) struct Input {
    pub(crate) body: Bytes,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) client: Client,
    pub(crate) node: Node,
    pub(crate) timeout: Duration,
}

/// A route's type-erased handler.
pub(crate) trait Endpoint: Send + Sync + 'static {
    fn call(&self, input: Input) -> BoxFuture<'static, Result<Response, ApiError>>;
}

/// The target of a sending route: a named actor, a group or an entity type. Implemented by
/// [`Named`], [`Grouped`] and [`Keyed`] only.
pub trait Target: sealed::Sealed + Clone + Send + Sync + 'static {
    /// The actor type the target accepts messages for.
    type Actor: RemoteActor;

    #[doc(hidden)]
    fn ask<M>(
        &self,
        node: &Node,
        key: Option<&str>,
        message: M,
        timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<M::Result>>
    where
        Self::Actor: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue;

    #[doc(hidden)]
    fn ask_idempotent<M>(
        &self,
        node: &Node,
        key: Option<&str>,
        message: M,
        timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<M::Result>>
    where
        Self::Actor: Accepts<M>,
        M: Idempotent,
        M::Result: WireValue;

    #[doc(hidden)]
    fn tell<M>(
        &self,
        node: &Node,
        key: Option<&str>,
        message: M,
        timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<()>>
    where
        Self::Actor: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue;
}

mod sealed {
    pub trait Sealed {}
}

/// The actor registered under a name (see [`RouteTo::actor`]).
#[derive(Debug)]
pub struct Named<A: RemoteActor> {
    name: String,
    cached: Arc<Mutex<Option<ActorRef<A>>>>,
}

impl<A: RemoteActor> Clone for Named<A> {
    fn clone(&self) -> Self {
        Named {
            name: self.name.clone(),
            cached: self.cached.clone(),
        }
    }
}

impl<A: RemoteActor> Named<A> {
    async fn resolve(&self, node: &Node) -> actormesh::Result<ActorRef<A>> {
        if let Some(actor) = self
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(actor);
        }
        let actor = node.lookup::<A>(&self.name).await?;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(actor.clone());
        Ok(actor)
    }

    /// Forgets the cached reference after an error that says it no longer leads anywhere.
    fn forget_after(&self, error: &Error) {
        if gone(error) {
            *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

/// Errors after which a reference (or a name's holder) may have moved: look it up again.
fn gone(error: &Error) -> bool {
    matches!(
        error,
        Error::ActorNotFound { .. }
            | Error::ActorStopped { .. }
            | Error::NodeDown { .. }
            | Error::NodeUnreachable { .. }
            | Error::NodeFenced { .. }
            | Error::UnknownNode(_)
    )
}

/// How long an idempotent ask to a named actor waits before looking the name up again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

impl<A: RemoteActor> sealed::Sealed for Named<A> {}

impl<A: RemoteActor> Target for Named<A> {
    type Actor = A;

    fn ask<M>(
        &self,
        node: &Node,
        _key: Option<&str>,
        message: M,
        timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<M::Result>>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let (this, node) = (self.clone(), node.clone());
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let actor = this.resolve(&node).await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let result = actor.ask_timeout(message, left).await;
            if let Err(e) = &result {
                this.forget_after(e);
            }
            result
        })
    }

    fn ask_idempotent<M>(
        &self,
        node: &Node,
        _key: Option<&str>,
        message: M,
        timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<M::Result>>
    where
        A: Accepts<M>,
        M: Idempotent,
        M::Result: WireValue,
    {
        let (this, node) = (self.clone(), node.clone());
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let result = match this.resolve(&node).await {
                    Ok(actor) => {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        actor.ask_timeout(message.clone(), left).await
                    }
                    Err(e) => Err(e),
                };
                let error = match result {
                    Ok(reply) => return Ok(reply),
                    Err(e) => e,
                };
                this.forget_after(&error);
                let retry = gone(&error) || matches!(error, Error::NameNotFound(_));
                let now = tokio::time::Instant::now();
                if !retry || now + RETRY_PAUSE >= deadline {
                    return Err(error);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        })
    }

    fn tell<M>(
        &self,
        node: &Node,
        _key: Option<&str>,
        message: M,
        _timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<()>>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let (this, node) = (self.clone(), node.clone());
        Box::pin(async move {
            let actor = this.resolve(&node).await?;
            let result = actor.tell(message).map_err(Error::from);
            if let Err(e) = &result {
                this.forget_after(e);
            }
            result
        })
    }
}

/// One instance of a group (see [`RouteTo::group`]).
#[derive(Debug)]
pub struct Grouped<A: RemoteActor> {
    name: String,
    config: GroupConfig,
    group: Arc<tokio::sync::OnceCell<GroupRef<A>>>,
}

impl<A: RemoteActor> Clone for Grouped<A> {
    fn clone(&self) -> Self {
        Grouped {
            name: self.name.clone(),
            config: self.config.clone(),
            group: self.group.clone(),
        }
    }
}

impl<A: RemoteActor> Grouped<A> {
    async fn resolve(&self, node: &Node) -> actormesh::Result<GroupRef<A>> {
        self.group
            .get_or_try_init(|| node.group_with::<A>(&self.name, self.config.clone()))
            .await
            .cloned()
    }
}

impl<A: RemoteActor> sealed::Sealed for Grouped<A> {}

impl<A: RemoteActor> Target for Grouped<A> {
    type Actor = A;

    fn ask<M>(
        &self,
        node: &Node,
        _key: Option<&str>,
        message: M,
        timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<M::Result>>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let (this, node) = (self.clone(), node.clone());
        Box::pin(async move {
            let group = this.resolve(&node).await?;
            group.ask_timeout(message, timeout).await
        })
    }

    fn ask_idempotent<M>(
        &self,
        node: &Node,
        _key: Option<&str>,
        message: M,
        timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<M::Result>>
    where
        A: Accepts<M>,
        M: Idempotent,
        M::Result: WireValue,
    {
        let (this, node) = (self.clone(), node.clone());
        Box::pin(async move {
            let group = this.resolve(&node).await?;
            group.ask_idempotent_timeout(message, timeout).await
        })
    }

    fn tell<M>(
        &self,
        node: &Node,
        _key: Option<&str>,
        message: M,
        _timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<()>>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let (this, node) = (self.clone(), node.clone());
        Box::pin(async move { this.resolve(&node).await?.tell(message) })
    }
}

/// The entity whose key is a path parameter (see [`RouteTo::entity`]).
#[derive(Debug)]
pub struct Keyed<E: Entity> {
    _entity: std::marker::PhantomData<fn() -> E>,
}

impl<E: Entity> Clone for Keyed<E> {
    fn clone(&self) -> Self {
        Keyed {
            _entity: std::marker::PhantomData,
        }
    }
}

impl<E: Entity> sealed::Sealed for Keyed<E> {}

impl<E: Entity> Target for Keyed<E> {
    type Actor = E;

    fn ask<M>(
        &self,
        node: &Node,
        key: Option<&str>,
        message: M,
        timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<M::Result>>
    where
        E: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let entity = node.entity::<E>(key.unwrap_or_default());
        Box::pin(async move { entity.ask_timeout(message, timeout).await })
    }

    fn ask_idempotent<M>(
        &self,
        node: &Node,
        key: Option<&str>,
        message: M,
        timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<M::Result>>
    where
        E: Accepts<M>,
        M: Idempotent,
        M::Result: WireValue,
    {
        let entity = node.entity::<E>(key.unwrap_or_default());
        Box::pin(async move { entity.ask_idempotent_timeout(message, timeout).await })
    }

    fn tell<M>(
        &self,
        node: &Node,
        key: Option<&str>,
        message: M,
        _timeout: Duration,
    ) -> BoxFuture<'static, actormesh::Result<()>>
    where
        E: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let result = node
            .entity::<E>(key.unwrap_or_default())
            .tell(message)
            .map_err(Error::from);
        Box::pin(async move { result })
    }
}

/// How a route sends its message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum How {
    Ask,
    AskIdempotent,
    Tell,
}

type MakeFn<B, M> = dyn Fn(Call<B>) -> Result<M, ApiError> + Send + Sync;
type ReplyFn<R, O> = dyn Fn(R) -> Result<O, ApiError> + Send + Sync;
type SendFn<M, R> = dyn Fn(&Node, Option<&str>, M, Duration) -> BoxFuture<'static, actormesh::Result<R>>
    + Send
    + Sync;

struct Handler<B, M, R, O> {
    make: Arc<MakeFn<B, M>>,
    send: Arc<SendFn<M, R>>,
    reply: Arc<ReplyFn<R, O>>,
    key_param: Option<String>,
    accepted: bool,
}

impl<B, M, R, O> Endpoint for Handler<B, M, R, O>
where
    B: DeserializeOwned + Send + 'static,
    M: Send + 'static,
    R: Send + 'static,
    O: Serialize + 'static,
{
    fn call(&self, input: Input) -> BoxFuture<'static, Result<Response, ApiError>> {
        // The key parameter was checked against the path when the gateway was built.
        let key = self
            .key_param
            .as_deref()
            .and_then(|name| find(&input.params, name))
            .map(str::to_owned);
        let body = match parse_body::<B>(&input.body) {
            Ok(body) => body,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let made = (self.make)(Call {
            body,
            params: input.params,
            query: input.query,
            headers: input.headers,
            client: input.client,
        });
        let message = match made {
            Ok(message) => message,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let sent = (self.send)(&input.node, key.as_deref(), message, input.timeout);
        let (reply, accepted, deadline) = (self.reply.clone(), self.accepted, input.timeout);
        Box::pin(async move {
            let result = sent.await.map_err(|e| match e {
                // Say the deadline the request had, not what was left of it at the last attempt.
                Error::Timeout { .. } => ActorFailure(Error::Timeout { after: deadline }),
                e => ActorFailure(e),
            });
            let result = result.map_err(ActorFailure::into_api)?;
            let body = reply(result)?;
            let status = if accepted {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok((status, axum::Json(body)).into_response())
        })
    }
}

/// An actor error on its way to becoming an HTTP answer: kept whole for the log.
pub(crate) struct ActorFailure(pub(crate) Error);

impl ActorFailure {
    fn into_api(self) -> ApiError {
        let api = from_actor_error(&self.0);
        if api.status().is_server_error() {
            tracing::warn!(target: "actormesh_gateway", error = %self.0, status = api.status().as_u16(), "request failed");
        }
        api
    }
}

/// Parses a JSON body into `B`; an empty body reads as `null`. A 400 names the field that
/// failed (its path in the document, like `items[2].price`).
fn parse_body<B: DeserializeOwned>(body: &[u8]) -> Result<B, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed: Result<B, _> = serde_path_to_error::deserialize(&mut de);
    let body = parsed.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if text == b"null" {
            format!("a JSON body is required: {inner}")
        } else {
            format!("malformed JSON body: {inner}")
        };
        let field = match (path.as_str(), missing_field(&inner)) {
            (".", Some(f)) => f,
            (".", None) => "body".to_owned(),
            (p, Some(f)) => format!("{p}.{f}"),
            (p, None) => p.to_owned(),
        };
        ApiError::bad_request(field, message)
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("body", format!("malformed JSON body: {e}")))?;
    Ok(body)
}

/// The field of serde's "missing field `x`" message (serde's path ends at the struct).
fn missing_field(error: &serde_json::Error) -> Option<String> {
    let text = error.to_string();
    let rest = text.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

impl<T: Target, B: DeserializeOwned + Send + 'static> Bound<T, B> {
    /// Parses the request's JSON body into `J` (a 400 naming the field when it does not fit;
    /// an empty body reads as JSON `null`, so `Option<J>` makes it optional).
    pub fn body<J: DeserializeOwned + Send + 'static>(self) -> Bound<T, J> {
        Bound {
            method: self.method,
            path: self.path,
            target: self.target,
            key_param: self.key_param,
            body: std::marker::PhantomData,
        }
    }

    /// Asks with the message `make` builds from the request; the reply is the JSON body of a
    /// `200 OK`. Not retried: for `POST`, `PUT`, `PATCH` and `DELETE` routes whose message is
    /// not safe to handle twice.
    pub fn ask<M, F>(self, make: F) -> Route
    where
        T::Actor: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue + Serialize,
        F: Fn(Call<B>) -> Result<M, ApiError> + Send + Sync + 'static,
    {
        self.ask_with(make, Ok)
    }

    /// Like [`ask`](Self::ask), with `reply` turning the actor's reply into the response
    /// body or an [`ApiError`] (an application error such as 404 or 409).
    pub fn ask_with<M, F, O, G>(self, make: F, reply: G) -> Route
    where
        T::Actor: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
        F: Fn(Call<B>) -> Result<M, ApiError> + Send + Sync + 'static,
        O: Serialize + 'static,
        G: Fn(M::Result) -> Result<O, ApiError> + Send + Sync + 'static,
    {
        let target = self.target.clone();
        let send =
            move |node: &Node, key: Option<&str>, m: M, timeout| target.ask(node, key, m, timeout);
        self.finish(How::Ask, make, send, reply)
    }

    /// Asks with a message that is safe to handle twice: a failed attempt (node down, actor
    /// gone, shard moving) is retried, on another instance for a group, within the request's
    /// deadline. Required for `GET` routes; use it for any route marked idempotent.
    pub fn ask_idempotent<M, F>(self, make: F) -> Route
    where
        T::Actor: Accepts<M>,
        M: Idempotent,
        M::Result: WireValue + Serialize,
        F: Fn(Call<B>) -> Result<M, ApiError> + Send + Sync + 'static,
    {
        self.ask_idempotent_with(make, Ok)
    }

    /// [`ask_idempotent`](Self::ask_idempotent) with a reply mapping, as in
    /// [`ask_with`](Self::ask_with).
    pub fn ask_idempotent_with<M, F, O, G>(self, make: F, reply: G) -> Route
    where
        T::Actor: Accepts<M>,
        M: Idempotent,
        M::Result: WireValue,
        F: Fn(Call<B>) -> Result<M, ApiError> + Send + Sync + 'static,
        O: Serialize + 'static,
        G: Fn(M::Result) -> Result<O, ApiError> + Send + Sync + 'static,
    {
        let target = self.target.clone();
        let send = move |node: &Node, key: Option<&str>, m: M, timeout| {
            target.ask_idempotent(node, key, m, timeout)
        };
        self.finish(How::AskIdempotent, make, send, reply)
    }

    /// Sends the message without waiting for it to be handled (at-most-once) and answers
    /// `202 Accepted` with `{"accepted": true}` once it is on its way.
    pub fn tell<M, F>(self, make: F) -> Route
    where
        T::Actor: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
        F: Fn(Call<B>) -> Result<M, ApiError> + Send + Sync + 'static,
    {
        let target = self.target.clone();
        let send =
            move |node: &Node, key: Option<&str>, m: M, timeout| target.tell(node, key, m, timeout);
        self.finish(How::Tell, make, send, |()| {
            Ok(serde_json::json!({ "accepted": true }))
        })
    }

    fn finish<M, R, O, F, S, G>(self, how: How, make: F, send: S, reply: G) -> Route
    where
        M: Send + 'static,
        R: Send + 'static,
        O: Serialize + 'static,
        F: Fn(Call<B>) -> Result<M, ApiError> + Send + Sync + 'static,
        S: Fn(&Node, Option<&str>, M, Duration) -> BoxFuture<'static, actormesh::Result<R>>
            + Send
            + Sync
            + 'static,
        G: Fn(R) -> Result<O, ApiError> + Send + Sync + 'static,
    {
        let handler = Handler {
            make: Arc::new(make),
            send: Arc::new(send),
            reply: Arc::new(reply),
            key_param: self.key_param.clone(),
            accepted: how == How::Tell,
        };
        Route {
            method: self.method,
            path: self.path,
            endpoint: Arc::new(handler),
            idempotent: how == How::AskIdempotent,
            timeout: None,
            max_timeout: None,
            scopes: Vec::new(),
            public: false,
            rate_limit: None,
            key_param: self.key_param,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Order {
        amount: u64,
        items: Vec<Item>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Item {
        price: u32,
    }

    #[test]
    fn body_errors_name_the_field() {
        let e = parse_body::<Order>(br#"{"amount": "x", "items": []}"#).unwrap_err();
        assert_eq!(e.field(), Some("amount"));
        let e = parse_body::<Order>(br#"{"amount": 1, "items": [{"price": 1}, {"price": -2}]}"#)
            .unwrap_err();
        assert_eq!(e.field(), Some("items[1].price"));
        let e = parse_body::<Order>(br#"{"items": []}"#).unwrap_err();
        assert_eq!(e.field(), Some("amount"));
        let e = parse_body::<Order>(br#"{"amount": 1, "items": [{}]}"#).unwrap_err();
        assert_eq!(e.field(), Some("items[0].price"));
        let e = parse_body::<Order>(b"").unwrap_err();
        assert_eq!(e.field(), Some("body"));
        assert!(e.message().contains("required"), "{}", e.message());
        let e = parse_body::<Order>(br#"{"amount": 1,"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = parse_body::<Order>(br#"{"amount": 1, "items": []} trailing"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        parse_body::<()>(b"  ").unwrap();
        parse_body::<Option<Order>>(b"").unwrap();
    }
}
