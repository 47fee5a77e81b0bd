//! The [`Authenticated`] extractor: who sent the request, or the envelope that refuses it.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use crm_auth_core::{Claims, SessionInfo};
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
/// server's description of the session.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl From<Claims> for Authenticated {
    fn from(claims: Claims) -> Authenticated {
        Authenticated {
            session_id: claims.jti,
            username: claims.usr,
            organisation: claims.org,
            unit: claims.oun,
            expires_at: claims.exp,
        }
    }
}

impl From<SessionInfo> for Authenticated {
    fn from(session: SessionInfo) -> Authenticated {
        Authenticated {
            session_id: session.id,
            username: session.username,
            organisation: session.organisation,
            unit: session.unit,
            expires_at: session.expires_at,
        }
    }
}

impl FromRequest for Authenticated {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Authenticated, AuthError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let Some(config) = AuthConfig::from_request(req) else {
            log::error!(
                "{}: register web::Data<AuthConfig> with the app",
                AuthError::NotConfigured
            );
            return Box::pin(async { Err(AuthError::NotConfigured) });
        };
        let lookup = Lookup::start(req, payload);
        Box::pin(async move {
            let token = lookup.token().await.ok_or(AuthError::Missing)?;
            config.authenticate(&token).await
        })
    }
}
