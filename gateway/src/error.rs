//! What a failed request answers: an HTTP status, a stable error code, a message, and the
//! JSON body that carries them.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

/// An HTTP error answer: status, a stable machine-readable `code`, a human message, the
/// offending field when there is one, and `Retry-After` when waiting helps.
///
/// The body is JSON: `{"error": code, "message": ..., "field": ..., "trace_id": ...}`
/// (`field` and `trace_id` only when known). Route closures return it to refuse a request
/// (`ApiError::bad_request("amount", "must be positive")`); the gateway builds the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<Duration>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    trace_id: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
}

impl ApiError {
    /// An error with any status and code (`code` is a short snake_case word clients match on).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError(Box::new(Inner {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            headers: Vec::new(),
            trace_id: None,
        }))
    }

    /// `400 Bad Request` about one field of the request (a path or query parameter, a header
    /// or a JSON field, named as the client wrote it).
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message).with_field(field)
    }

    /// `404 Not Found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `409 Conflict`: the request contradicts the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// `503 Service Unavailable` with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            .with_retry_after(retry_after)
    }

    /// `500 Internal Server Error` with a fixed message: what went wrong stays in the
    /// gateway's log (under the request's trace id), not in the answer.
    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the service failed while handling the request; quote the trace id when reporting it",
        )
    }

    /// Names the field the error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.0.field = Some(field.into());
        self
    }

    /// Adds `Retry-After` (whole seconds, at least 1).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    pub(crate) fn with_trace_id(mut self, trace_id: String) -> Self {
        self.0.trace_id = Some(trace_id);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The stable error code of the JSON body.
    pub fn code(&self) -> &'static str {
        self.0.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }

    /// The `Retry-After` wait, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.code(),
            self.message()
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = *self.0;
        let body = serde_json::to_vec(&Body {
            error: this.code,
            message: &this.message,
            field: this.field.as_deref(),
            trace_id: this.trace_id.as_deref(),
        })
        .unwrap_or_default();
        let mut response = (this.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(after) = this.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        for (name, value) in this.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// How long a client should wait before retrying a request refused for lack of capacity.
const RETRY_SOON: Duration = Duration::from_secs(1);

/// The HTTP answer to a failed ask or tell. Unavailability (no instance, node down or
/// unreachable, moving shard, overload) is 503 with `Retry-After`; a deadline is 504; a
/// handler failure is 500 without internals (logged by the caller with the trace id).
pub(crate) fn from_actor_error(error: &actormesh::Error) -> ApiError {
    use actormesh::Error as E;
    match error {
        E::Timeout { after } => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            format!("no answer within the request's deadline of {after:?}"),
        ),
        E::Overloaded { .. } | E::MailboxFull { .. } | E::EntityBufferFull { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the service is overloaded; retry later",
        )
        .with_retry_after(RETRY_SOON),
        E::NoInstances { .. }
        | E::GroupNotReady { .. }
        | E::UnknownGroup(_)
        | E::NameNotFound(_)
        | E::ActorNotFound { .. }
        | E::NodeDown { .. }
        | E::NodeUnreachable { .. }
        | E::NodeFenced { .. }
        | E::UnknownNode(_)
        | E::EntityUnavailable { .. }
        | E::Discovery(_)
        | E::Store(_)
        | E::Shutdown => ApiError::unavailable(
            "no instance of the service can take the request right now; retry later",
            RETRY_SOON,
        ),
        _ => ApiError::internal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actormesh::{ActorId, NodeId};

    fn node() -> NodeId {
        NodeId::new("n1")
    }

    #[test]
    fn actor_errors_map_to_the_statuses_clients_expect() {
        let cases = [
            (
                actormesh::Error::Timeout {
                    after: Duration::from_millis(5),
                },
                504,
                false,
            ),
            (
                actormesh::Error::NoInstances { group: "g".into() },
                503,
                true,
            ),
            (actormesh::Error::NodeDown { node: node() }, 503, true),
            (
                actormesh::Error::Overloaded { group: "g".into() },
                503,
                true,
            ),
            (
                actormesh::Error::HandlerPanicked {
                    node: node(),
                    actor: serde_json::from_str::<ActorId>("3").unwrap(),
                    actor_type: "t",
                    message: "secret detail".into(),
                },
                500,
                false,
            ),
            (actormesh::Error::Codec("inner detail".into()), 500, false),
        ];
        for (error, status, retry) in cases {
            let api = from_actor_error(&error);
            assert_eq!(api.status().as_u16(), status, "{error}");
            assert_eq!(api.retry_after().is_some(), retry, "{error}");
            assert!(!api.message().contains("detail"), "no internals leak");
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let response = ApiError::unavailable("x", Duration::from_millis(1500)).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = ApiError::unavailable("x", Duration::ZERO).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
