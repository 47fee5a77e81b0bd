//! Refresh (rotation by generation, reuse interval, theft detection), release and validate.

use std::net::IpAddr;

use actix_web::web;
use crm_auth_core::{AuthMethod, Claims, SessionInfo, TokenError, verify, verify_ignoring_expiry};

use crate::db::session::{self, Session};
use crate::db::{DbConnection, api_key, organisation, unit, user};
use crate::error::ApiError;
use crate::metrics::RefreshOutcome;
use crate::service::token_for;
use crate::state::AppState;

/// Exchanges a token for the session's next one.
pub async fn refresh(state: &AppState, token: &str, client: IpAddr) -> Result<String, ApiError> {
    let now = state.clock.now();
    let claims = verify_ignoring_expiry(&state.keyring, token, &state.verify_options(now))
        .inspect_err(|_| state.metrics.refresh(RefreshOutcome::Invalid))?;
    let settings = &state.settings.token;
    let limit = claims.exp.saturating_add(
        i64::try_from(settings.leeway_seconds + settings.refresh_grace_seconds).unwrap_or(i64::MAX),
    );
    if now > limit {
        state.metrics.refresh(RefreshOutcome::Expired);
        return Err(TokenError::Expired.into());
    }
    let state2 = state.clone();
    let jti = claims.jti.clone();
    let outcome = web::block(move || {
        let mut conn = state2.conn()?;
        rotate(&mut conn, &state2, &claims, now)
    })
    .await
    .inspect_err(|_| state.metrics.refresh(RefreshOutcome::Error))?;
    let outcome = match outcome {
        Ok(Rotation::Issued(session, kind)) => {
            state.metrics.refresh(kind);
            Ok(session)
        }
        Ok(Rotation::Stolen) => {
            state.metrics.refresh(RefreshOutcome::Theft);
            Err(ApiError::SessionEnded)
        }
        Err(e) => {
            state.metrics.refresh(RefreshOutcome::of_error(&e));
            Err(e)
        }
    };
    match outcome {
        Ok(session) => {
            log::info!(
                target: "crm_auth::audit",
                "refresh ok org={:?} user={:?} jti={} gen={} client={client}",
                session.organisation_name,
                session.username,
                session.id,
                session.generation
            );
            Ok(token_for(state, &session))
        }
        Err(e) => {
            log::info!(target: "crm_auth::audit", "refresh refused jti={jti} reason={e} client={client}");
            Err(e)
        }
    }
}

/// What a refresh did to its session.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per refresh and moved straight out"
)]
enum Rotation {
    /// The session's newest token is for the caller: `Rotated` to a new generation, or `Reused` (handed back
    /// to the token it had just replaced, within the reuse interval).
    Issued(Session, RefreshOutcome),
    /// A superseded token came back after the reuse interval; the session was ended as stolen.
    Stolen,
}

/// Rotates the session from the presented generation, or hands back the newest token to a caller whose
/// token was superseded within the reuse interval; anything else ends the session as stolen.
fn rotate(
    conn: &mut DbConnection,
    state: &AppState,
    claims: &Claims,
    now: i64,
) -> Result<Rotation, ApiError> {
    let presented = i64::try_from(claims.r#gen).map_err(|_| ApiError::Token(TokenError::Malformed))?;
    let reuse_interval = i64::try_from(state.settings.token.reuse_interval_seconds).unwrap_or(i64::MAX);
    let ttl = i64::try_from(state.settings.token.ttl_seconds).unwrap_or(i64::MAX);
    let mut current = live_session(conn, &claims.jti, now)?;
    if current.generation == presented {
        if let Some(reason) = inactive_reason(conn, &current)? {
            session::update_end(conn, &current.id, now, reason)?;
            log::info!(target: "crm_auth::audit", "session ended jti={} reason={reason}", current.id);
            return Err(ApiError::SessionEnded);
        }
        let expires_at = now.saturating_add(ttl).min(current.max_end_at);
        if session::update_rotate(conn, &current.id, presented, now, expires_at)? {
            let rotated = Session {
                generation: presented + 1,
                rotated_at: now,
                expires_at,
                ..current
            };
            return Ok(Rotation::Issued(rotated, RefreshOutcome::Rotated));
        }
        // A concurrent refresh of the same token won the compare-and-set: read what it wrote.
        current = live_session(conn, &claims.jti, now)?;
    }
    if current.generation == presented + 1 && now - current.rotated_at <= reuse_interval {
        return Ok(Rotation::Issued(current, RefreshOutcome::Reused));
    }
    // A superseded token presented again after the reuse interval (or one never issued): take it as stolen.
    session::update_end(conn, &current.id, now, "reuse")?;
    log::warn!(
        target: "crm_auth::audit",
        "refresh reuse detected org={:?} user={:?} jti={} presented_gen={presented} current_gen={}; session ended",
        current.organisation_name,
        current.username,
        current.id,
        current.generation
    );
    Ok(Rotation::Stolen)
}

/// The session if it is live at `now`.
fn live_session(conn: &mut DbConnection, jti: &str, now: i64) -> Result<Session, ApiError> {
    let current = session::find_by_id(conn, jti)?.ok_or(ApiError::SessionEnded)?;
    if current.ended_at.is_some() || now >= current.max_end_at {
        return Err(ApiError::SessionEnded);
    }
    Ok(current)
}

/// Why the session may not go on: its user, key, unit or organisation is no longer active.
pub(crate) fn inactive_reason(
    conn: &mut DbConnection,
    current: &Session,
) -> Result<Option<&'static str>, ApiError> {
    if !user::find_by_id(conn, &current.user_id)?.is_some_and(|u| u.is_active) {
        return Ok(Some("user_disabled"));
    }
    if !organisation::find_by_id(conn, &current.organisation_id)?.is_some_and(|o| o.is_active) {
        return Ok(Some("organisation_disabled"));
    }
    if !unit::find_by_id(conn, &current.unit_id)?.is_some_and(|u| u.is_active)
        || !user::is_member(conn, &current.user_id, &current.unit_id)?
    {
        return Ok(Some("unit_disabled"));
    }
    if let Some(key_id) = &current.api_key_id
        && api_key::find_by_id(conn, key_id)?.is_none_or(|k| k.revoked_at.is_some())
    {
        return Ok(Some("key_revoked"));
    }
    Ok(None)
}

/// Ends the token's session. Idempotent; expired tokens may be released.
pub async fn release(state: &AppState, token: &str, client: IpAddr) -> Result<(), ApiError> {
    let now = state.clock.now();
    let claims = verify_ignoring_expiry(&state.keyring, token, &state.verify_options(now))?;
    let state2 = state.clone();
    let jti = claims.jti.clone();
    let ended = web::block(move || -> Result<bool, ApiError> {
        let mut conn = state2.conn()?;
        Ok(session::update_end(&mut conn, &jti, now, "released")?)
    })
    .await??;
    log::info!(
        target: "crm_auth::audit",
        "release org={:?} user={:?} jti={} was_live={ended} client={client}",
        claims.org,
        claims.usr,
        claims.jti
    );
    state.metrics.release();
    Ok(())
}

/// Whether the token's session is live; its details if so.
pub async fn validate(state: &AppState, token: &str) -> Result<SessionInfo, ApiError> {
    let now = state.clock.now();
    let claims = verify(&state.keyring, token, &state.verify_options(now))?;
    let state2 = state.clone();
    let jti = claims.jti.clone();
    let current = web::block(move || -> Result<Session, ApiError> {
        let mut conn = state2.conn()?;
        live_session(&mut conn, &jti, now)
    })
    .await??;
    if i64::try_from(claims.r#gen).map_or(true, |presented| presented > current.generation) {
        return Err(ApiError::SessionEnded);
    }
    let method = current
        .method
        .parse::<AuthMethod>()
        .map_err(|_| ApiError::Internal("bad session method".into()))?;
    Ok(SessionInfo {
        id: current.id,
        username: current.username,
        organisation: current.organisation_name,
        unit: current.unit_name,
        method,
        issued_at: claims.iat,
        expires_at: claims.exp,
    })
}
