//! Who is calling: bearer JWTs (HS256, RS256) and static API keys, and the scopes they grant.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use http::{header, HeaderMap, HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::ApiError;

/// The caller of a request, as authentication established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The identity: a JWT's `sub`, an API key's configured id, or `ip:{address}` for an
    /// anonymous caller. Rate limits are kept per identity.
    pub id: String,
    /// The scopes granted (a JWT's `scope`/`scp` claim, an API key's configured scopes).
    pub scopes: BTreeSet<String>,
    /// Whether the caller presented valid credentials.
    pub authenticated: bool,
}

impl Client {
    pub(crate) fn anonymous(ip: IpAddr) -> Self {
        Client {
            id: format!("ip:{ip}"),
            scopes: BTreeSet::new(),
            authenticated: false,
        }
    }

    /// Whether the client holds every scope in `required`.
    pub fn has_scopes<'a>(&self, required: impl IntoIterator<Item = &'a str>) -> bool {
        required.into_iter().all(|s| self.scopes.contains(s))
    }
}

/// How the gateway authenticates callers: JWT verification keys and API keys.
///
/// A request with an `Authorization: Bearer <token>` header is verified as a JWT (signature,
/// `exp` always, `nbf` when present, audience and issuer when configured); one with an
/// `X-Api-Key` header is looked up among the configured keys. Invalid credentials are
/// refused with 401 even on public routes (a client that sends a bad token wants to know).
#[derive(Clone, Default)]
pub struct Auth {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    audience: Vec<String>,
    issuer: Vec<String>,
    leeway_secs: u64,
    api_keys: HashMap<String, Client>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

/// A configuration error of [`Auth`] (an unreadable key).
#[derive(Debug, thiserror::Error)]
#[error("gateway auth: {0}")]
pub struct AuthConfigError(String);

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Scopes>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    List(Vec<String>),
    Text(String),
}

impl Auth {
    /// No keys yet: add them with the builder methods.
    pub fn new() -> Self {
        Auth::default()
    }

    /// Accepts JWTs signed with HS256 under this shared secret.
    pub fn jwt_hs256(mut self, secret: &[u8]) -> Self {
        self.hs256 = Some(DecodingKey::from_secret(secret));
        self
    }

    /// Accepts JWTs signed with RS256 by the private key of this RSA public key (PEM, a
    /// `PUBLIC KEY` or `RSA PUBLIC KEY` block).
    pub fn jwt_rs256_pem(mut self, public_key_pem: &[u8]) -> Result<Self, AuthConfigError> {
        let key = DecodingKey::from_rsa_pem(public_key_pem)
            .map_err(|e| AuthConfigError(format!("RS256 public key: {e}")))?;
        self.rs256 = Some(key);
        Ok(self)
    }

    /// Requires tokens whose `aud` contains one of the configured audiences (call once per
    /// accepted audience). Without it, `aud` is not checked.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience.push(audience.into());
        self
    }

    /// Requires tokens whose `iss` is one of the configured issuers.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer.push(issuer.into());
        self
    }

    /// Clock skew allowed on `exp` and `nbf` (default 0 s).
    pub fn leeway_secs(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// Accepts the static API key `key` (header `X-Api-Key`) as the client `id` with `scopes`.
    pub fn api_key<'a>(
        mut self,
        key: impl Into<String>,
        id: impl Into<String>,
        scopes: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.api_keys.insert(
            key.into(),
            Client {
                id: id.into(),
                scopes: scopes.into_iter().map(str::to_owned).collect(),
                authenticated: true,
            },
        );
        self
    }

    pub(crate) fn is_configured(&self) -> bool {
        self.hs256.is_some() || self.rs256.is_some() || !self.api_keys.is_empty()
    }

    /// The client of a request: `Ok(None)` when it presented no credentials, `Err(401)` when
    /// they are invalid.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Client>, ApiError> {
        if let Some(key) = headers.get("x-api-key") {
            let client = key
                .to_str()
                .ok()
                .and_then(|k| self.api_keys.get(k))
                .ok_or_else(|| unauthorized("invalid_api_key", "the API key is not valid"))?;
            return Ok(Some(client.clone()));
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                unauthorized(
                    "invalid_request",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        self.verify(token).map(Some)
    }

    fn verify(&self, token: &str) -> Result<Client, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("invalid_token", "the bearer token is malformed"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| {
            unauthorized(
                "invalid_token",
                format!("tokens signed with {:?} are not accepted", header.alg),
            )
        })?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
        }
        if !self.issuer.is_empty() {
            validation.set_issuer(&self.issuer);
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let why = match e.kind() {
                K::ExpiredSignature => "the token has expired",
                K::ImmatureSignature => "the token is not valid yet (nbf)",
                K::InvalidAudience => "the token is not meant for this audience",
                K::InvalidIssuer => "the token's issuer is not trusted",
                K::InvalidSignature => "the token's signature does not verify",
                K::MissingRequiredClaim(_) => "the token lacks a required claim (exp)",
                _ => "the token is not valid",
            };
            unauthorized("invalid_token", why)
        })?;
        let claims = data.claims;
        let scopes = match (claims.scope, claims.scp) {
            (Some(text), _) | (None, Some(Scopes::Text(text))) => {
                text.split_whitespace().map(str::to_owned).collect()
            }
            (None, Some(Scopes::List(list))) => list.into_iter().collect(),
            (None, None) => BTreeSet::new(),
        };
        Ok(Client {
            id: claims.sub.unwrap_or_else(|| "jwt:anonymous".to_owned()),
            scopes,
            authenticated: true,
        })
    }
}

/// 401 with the `WWW-Authenticate` challenge of RFC 6750.
pub(crate) fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
    let message = message.into();
    let challenge = format!(
        "Bearer error=\"{code}\", error_description=\"{}\"",
        message.replace('"', "'")
    );
    let mut error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        error = error.with_header(header::WWW_AUTHENTICATE, value);
    }
    error
}

/// 403: authenticated, but without the route's scopes.
pub(crate) fn forbidden(missing: &[&str]) -> ApiError {
    let message = format!("this route requires the scopes {}", missing.join(" "));
    let challenge = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\"",
        missing.join(" ")
    );
    let mut error = ApiError::new(StatusCode::FORBIDDEN, "forbidden", message);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        error = error.with_header(header::WWW_AUTHENTICATE, value);
    }
    error
}
