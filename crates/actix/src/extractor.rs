//! The [`Authenticated`] extractor: who sent the request, or the envelope that refuses it.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use std::fmt;

use crm_auth_core::{AuthMethod, Claims, SessionInfo};
use futures_util::future::LocalBoxFuture;

use crate::AuthError;
use crate::config::AuthConfig;
use crate::lookup::Lookup;

/// The session of a request that carried a valid crm-auth token.
///
/// Take it as a handler argument and the route is protected: a request without a valid token never reaches
/// the handler and is answered with the contract's envelope (see [`AuthError`]). The token is looked for in
/// the contract's order: `Authorization: Bearer <token>`, then the JSON body's `token` member, then the query
/// parameter `token`.
///
/// The body is searched only when there is no bearer token and the body is at most
/// [`BODY_TOKEN_LIMIT`](crate::BODY_TOKEN_LIMIT) bytes. Reading it takes nothing away: extractors after
/// `Authenticated` (`web::Json`, `web::Bytes`, `web::Payload`, ...) and the handler receive the same bytes.
/// An extractor *before* it in the argument list takes the body first, leaving only the header and the query
/// to search, so list `Authenticated` before any body extractor.
///
/// With [`AuthConfig::offline`] the fields come from the verified claims; with `AuthConfig::online` from the
/// server's description of the session. The presented token is kept for services that forward it to another
/// service ([`Authenticated::token`]); `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authenticated {
    /// The session id: the token's `jti`, 32 upper-case hex digits, the same across refreshes.
    pub session_id: String,
    /// The username as stored.
    pub username: String,
    /// The organisation name as stored.
    pub organisation: String,
    /// The token's `oun`: the name of the unit the session is logged into, or its code or id when the
    /// issuing server's `token.unit_claim` says so.
    pub unit: String,
    /// The presented token's expiry, unix seconds.
    pub expires_at: i64,
    /// How the session was authenticated (password or Web API key), as the server's validate answer tells
    /// it: `Some` with `AuthConfig::online`, `None` when checked offline, since tokens do not carry it.
    pub method: Option<AuthMethod>,
    /// The presented token.
    token: String,
}

impl Authenticated {
    /// The token the request presented, to forward as `Authorization: Bearer` to another service.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The session of `claims`, verified from `token`.
    pub(crate) fn from_claims(claims: Claims, token: String) -> Authenticated {
        Authenticated {
            session_id: claims.jti,
            username: claims.usr,
            organisation: claims.org,
            unit: claims.oun,
            expires_at: claims.exp,
            method: None,
            token,
        }
    }

    /// The session the server described for `token`.
    #[cfg_attr(not(feature = "validate"), allow(dead_code))]
    pub(crate) fn from_session(session: SessionInfo, token: String) -> Authenticated {
        Authenticated {
            session_id: session.id,
            username: session.username,
            organisation: session.organisation,
            unit: session.unit,
            expires_at: session.expires_at,
            method: Some(session.method),
            token,
        }
    }
}

impl fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticated")
            .field("session_id", &self.session_id)
            .field("username", &self.username)
            .field("organisation", &self.organisation)
            .field("unit", &self.unit)
            .field("expires_at", &self.expires_at)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl FromRequest for Authenticated {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Authenticated, AuthError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let Some(config) = AuthConfig::from_request(req) else {
            log::error!("{}", AuthError::NotConfigured);
            return Box::pin(async { Err(AuthError::NotConfigured) });
        };
        let lookup = Lookup::start(req, payload);
        Box::pin(async move {
            let token = lookup.token().await.ok_or(AuthError::Missing)?;
            config.authenticate(token).await
        })
    }
}
