//! Refresh (rotation by generation, reuse interval, theft detection), release and validate.

use std::net::IpAddr;

use crm_auth_core::{Claims, SessionInfo, TokenError, is_id, verify, verify_ignoring_expiry};

use crate::db::session::{self, EndReason, Rotation, Session};
use crate::error::ApiError;
use crate::logging::{self, Event};
use crate::metrics::RefreshOutcome;
use crate::service::token_for;
use crate::state::AppState;

/// Exchanges a token for the session's next one.
pub async fn refresh(state: &AppState, token: &str, client: IpAddr) -> Result<String, ApiError> {
    let now = state.clock.now();
    let claims = verify_ignoring_expiry(&state.keys.current().keyring, token, &state.verify_options(now))
        .inspect_err(|_| state.metrics.refresh(RefreshOutcome::Invalid))?;
    let settings = &state.settings.token;
    let limit = claims.exp.saturating_add(
        i64::try_from(settings.leeway_seconds + settings.refresh_grace_seconds).unwrap_or(i64::MAX),
    );
    if now > limit {
        state.metrics.refresh(RefreshOutcome::Expired);
        return Err(TokenError::Expired.into());
    }
    let jti = claims.jti.clone();
    let outcome = match rotate(state, &claims, now, client).await {
        Ok(Refreshed::Issued(session, kind)) => {
            state.metrics.refresh(kind);
            Ok(session)
        }
        Ok(Refreshed::Stolen) => {
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
                target: logging::AUDIT,
                event = Event::SessionRefresh,
                organisation = session.organisation_name.as_str(),
                username = session.username.as_str(),
                session = session.id.as_str(),
                generation = session.generation,
                client = client;
                "refresh ok"
            );
            Ok(token_for(state, &session))
        }
        Err(e) => {
            log::info!(
                target: logging::AUDIT,
                event = Event::SessionRefreshRefused,
                session = jti.as_str(),
                reason:% = e,
                client = client;
                "refresh refused"
            );
            Err(e)
        }
    }
}

/// What a refresh did to its session.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per refresh and moved straight out"
)]
enum Refreshed {
    /// The session's newest token is for the caller: `Rotated` to a new generation, or `Reused` (handed back
    /// to the token it had just replaced, within the reuse interval).
    Issued(Session, RefreshOutcome),
    /// A superseded token came back after the reuse interval; the session was ended as stolen.
    Stolen,
}

/// Rotates the session from the presented generation, or hands back the newest token to a caller whose
/// token was superseded within the reuse interval; anything else ends the session as stolen.
async fn rotate(state: &AppState, claims: &Claims, now: i64, client: IpAddr) -> Result<Refreshed, ApiError> {
    let presented = i64::try_from(claims.r#gen).map_err(|_| ApiError::Token(TokenError::Malformed))?;
    let reuse_interval = i64::try_from(state.settings.token.reuse_interval_seconds).unwrap_or(i64::MAX);
    let ttl = i64::try_from(state.settings.token.ttl_seconds).unwrap_or(i64::MAX);
    let (current, standing) = state
        .store
        .find_session_with_standing(session_id(&claims.jti)?)
        .await?
        .ok_or(ApiError::SessionEnded)?;
    let mut current = live(Some(current), now)?;
    // Every path checks the standing, the reuse interval's hand-back included: a session whose user, key,
    // unit or organisation fell gets no token, whichever generation it presents.
    if let Some(reason) = standing.end_reason() {
        let id = current.id.clone();
        state
            .store
            .write(move |conn| Ok(session::update_end(conn, &id, now, reason)?))
            .await?;
        log::info!(
            target: logging::AUDIT,
            event = Event::SessionEnd,
            organisation = current.organisation_name.as_str(),
            username = current.username.as_str(),
            session = current.id.as_str(),
            reason:% = reason,
            client = client;
            "session ended"
        );
        return Err(ApiError::SessionEnded);
    }
    if current.generation == presented {
        let expires_at = now.saturating_add(ttl).min(current.max_end_at);
        let rotation = Rotation {
            id: current.id.clone(),
            from_gen: presented,
            now,
            expires_at,
        };
        if state.store.rotate_session(rotation).await? {
            let rotated = Session {
                generation: presented + 1,
                rotated_at: now,
                expires_at,
                refreshed_at: Some(now),
                ..current
            };
            return Ok(Refreshed::Issued(rotated, RefreshOutcome::Rotated));
        }
        // A concurrent refresh of the same token won the compare-and-set: read what it wrote.
        current = live_session(state, &claims.jti, now).await?;
    }
    if current.generation == presented + 1 && now - current.rotated_at <= reuse_interval {
        return Ok(Refreshed::Issued(current, RefreshOutcome::Reused));
    }
    // A superseded token presented again after the reuse interval (or one never issued): take it as stolen.
    let id = current.id.clone();
    state
        .store
        .write(move |conn| Ok(session::update_end(conn, &id, now, EndReason::Reuse)?))
        .await?;
    log::warn!(
        target: logging::AUDIT,
        event = Event::SessionReuse,
        organisation = current.organisation_name.as_str(),
        username = current.username.as_str(),
        session = current.id.as_str(),
        presented_generation = presented,
        current_generation = current.generation,
        client = client;
        "refresh reuse detected; session ended"
    );
    Ok(Refreshed::Stolen)
}

/// The session if it is live at `now`.
async fn live_session(state: &AppState, jti: &str, now: i64) -> Result<Session, ApiError> {
    live(state.store.find_session(session_id(jti)?).await?, now)
}

/// Only an id can name a session; anything else (a NUL, which PostgreSQL refuses in a query) is looked up
/// nowhere.
fn session_id(jti: &str) -> Result<&str, ApiError> {
    if is_id(jti) {
        Ok(jti)
    } else {
        Err(ApiError::SessionEnded)
    }
}

/// The session, if there is one and it has not ended by `now`.
fn live(current: Option<Session>, now: i64) -> Result<Session, ApiError> {
    match current {
        Some(current) if current.ended_at.is_none() && now < current.max_end_at => Ok(current),
        _ => Err(ApiError::SessionEnded),
    }
}

/// Ends the token's session. Idempotent; expired tokens may be released.
pub async fn release(state: &AppState, token: &str, client: IpAddr) -> Result<(), ApiError> {
    let now = state.clock.now();
    let claims = verify_ignoring_expiry(&state.keys.current().keyring, token, &state.verify_options(now))?;
    let jti = claims.jti.clone();
    let ended = if is_id(&jti) {
        state
            .store
            .write(move |conn| Ok(session::update_end(conn, &jti, now, EndReason::Released)?))
            .await?
    } else {
        false
    };
    log::info!(
        target: logging::AUDIT,
        event = Event::SessionRelease,
        organisation = claims.org.as_str(),
        username = claims.usr.as_str(),
        session = claims.jti.as_str(),
        was_live = ended,
        client = client;
        "released"
    );
    state.metrics.release();
    Ok(())
}

/// Whether the token's session is live; its details if so.
pub async fn validate(state: &AppState, token: &str) -> Result<SessionInfo, ApiError> {
    let now = state.clock.now();
    let claims = verify(&state.keys.current().keyring, token, &state.verify_options(now))?;
    let current = live_session(state, &claims.jti, now).await?;
    if i64::try_from(claims.r#gen).map_or(true, |presented| presented > current.generation) {
        return Err(ApiError::SessionEnded);
    }
    Ok(SessionInfo::new(
        current.id,
        current.username,
        current.organisation_name,
        current.unit_name,
        current.method,
        claims.iat,
        claims.exp,
    ))
}
