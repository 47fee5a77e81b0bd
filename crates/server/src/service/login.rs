//! Getting a token: by username + password in an organisation, or by Web API key.

use std::net::IpAddr;

use crm_auth_core::{ApiKey, AuthMethod, new_session_id};

use crate::db::api_key;
use crate::db::organisation::Organisation;
use crate::db::session::Session;
use crate::db::unit::{self, Unit};
use crate::db::user::{self, User};
use crate::db::{DbConnection, name_key};
use crate::error::ApiError;
use crate::logging::{self, Event};
use crate::metrics::GrantOutcome;
use crate::service::{lockout, token_for};
use crate::state::AppState;

/// A key's `last_used_at` is written at most this often, so key logins do not all write the key row.
const LAST_USED_RESOLUTION: i64 = 60;

/// A validated password login.
pub struct PasswordLogin {
    /// As typed.
    pub username: String,
    /// Never logged.
    pub password: String,
    /// As typed.
    pub organisation: String,
    /// `None` for the user's default unit.
    pub unit: Option<String>,
}

/// Checks a password login and opens a session; returns the token. Every outcome is counted.
pub async fn login_with_password(
    state: &AppState,
    login: PasswordLogin,
    client: IpAddr,
) -> Result<String, ApiError> {
    let result = password_login(state, login, client).await;
    state
        .metrics
        .token_grant(AuthMethod::Password, GrantOutcome::of(&result));
    result
}

async fn password_login(state: &AppState, login: PasswordLogin, client: IpAddr) -> Result<String, ApiError> {
    let now = state.clock.now();
    let org_key = name_key(&login.organisation);
    let user_key = name_key(&login.username);

    let check = match state.lockout.begin(&state.store, &org_key, &user_key, now).await {
        Err(ApiError::TooManyAttempts { retry_after }) => {
            log::warn!(
                target: logging::AUDIT,
                event = Event::LoginLocked,
                organisation = login.organisation.as_str(),
                username = login.username.as_str(),
                auth_method = AuthMethod::Password.as_str(),
                client = client,
                retry_after = retry_after;
                "login locked"
            );
            return Err(ApiError::TooManyAttempts { retry_after });
        }
        Err(ApiError::Busy) => {
            log::warn!(
                target: logging::AUDIT,
                event = Event::LoginBusy,
                organisation = login.organisation.as_str(),
                username = login.username.as_str(),
                auth_method = AuthMethod::Password.as_str(),
                client = client,
                waited_ms = state.settings.auth.lockout.max_wait_ms;
                "login busy"
            );
            return Err(ApiError::Busy);
        }
        other => other?,
    };
    // From here to `end` the check holds a slot; an early return drops it, which frees the slot uncounted.
    let organisation = login.organisation.clone();
    let username = login.username.clone();
    let found = state
        .store
        .read(move |conn| Ok(user::find_with_organisation(conn, &organisation, &username)?))
        .await?;
    let phc = found.as_ref().and_then(|(_, user, _)| user.password_hash.clone());
    let verdict = state.hasher.check(login.password, phc).await?;
    let found = found.filter(|(org, user, _)| verdict.matches && org.is_active && user.is_active);
    let failures = check.end(found.is_some(), now).await?;
    if let (Some((_, user, _)), Some(rehashed)) = (&found, verdict.rehashed) {
        replace_hash(state, user, rehashed).await;
    }
    let Some((org, user, default_unit)) = found else {
        log::info!(
            target: logging::AUDIT,
            event = Event::LoginFailed,
            organisation = login.organisation.as_str(),
            username = login.username.as_str(),
            auth_method = AuthMethod::Password.as_str(),
            client = client;
            "login failed"
        );
        if lockout::delay_seconds(failures, &state.settings.auth.lockout) > 0 {
            state.metrics.lockout();
        }
        return Err(ApiError::InvalidCredentials);
    };

    let unit = choose_unit(state, &org, &user, default_unit, login.unit).await?;
    let session = open_session(state, &org, &user, &unit, None, client, now).await?;
    log::info!(
        target: logging::AUDIT,
        event = Event::LoginOk,
        organisation = session.organisation_name.as_str(),
        username = session.username.as_str(),
        unit = session.unit_name.as_str(),
        auth_method = AuthMethod::Password.as_str(),
        session = session.id.as_str(),
        client = client;
        "login ok"
    );
    Ok(token_for(state, &session))
}

/// Stores the Argon2id hash of a password that matched a foreign hash (one an import brought in, or one made
/// at other parameters) in place of it, unless the password was changed meanwhile. The login goes on either
/// way: the old hash still verifies, and the next login tries again.
async fn replace_hash(state: &AppState, user: &User, rehashed: String) {
    let Some(old) = user.password_hash.clone() else {
        return;
    };
    let id = user.id.clone();
    let replaced = state
        .store
        .write(move |conn| Ok(user::update_password_from(conn, &id, &old, &rehashed)?))
        .await;
    if let Err(e) = replaced {
        log::warn!(
            username = user.username.as_str(),
            reason:% = e;
            "a foreign password hash was not replaced"
        );
    }
}

/// Opens a session for a Web API key; returns the token. Every outcome is counted.
pub async fn login_with_key(
    state: &AppState,
    key: Option<ApiKey>,
    wanted_unit: Option<String>,
    client: IpAddr,
) -> Result<String, ApiError> {
    let result = key_login(state, key, wanted_unit, client).await;
    state
        .metrics
        .token_grant(AuthMethod::WebApiKey, GrantOutcome::of(&result));
    result
}

async fn key_login(
    state: &AppState,
    key: Option<ApiKey>,
    wanted_unit: Option<String>,
    client: IpAddr,
) -> Result<String, ApiError> {
    let Some(key) = key else {
        log::info!(
            target: logging::AUDIT,
            event = Event::LoginFailed,
            auth_method = AuthMethod::WebApiKey.as_str(),
            reason = "no_key",
            client = client;
            "login failed"
        );
        return Err(ApiError::InvalidCredentials);
    };
    let digest = key.digest();
    let now = state.clock.now();
    let session = async {
        let (key, user, org, default_unit) = state
            .store
            .find_key_with_owner(digest)
            .await?
            // An expired key is refused on the same path, with the same answer, as an unknown one.
            .filter(|(key, user, org, _)| !key.is_expired(now) && user.is_active && org.is_active)
            .ok_or(ApiError::InvalidCredentials)?;
        let unit = choose_unit(state, &org, &user, default_unit, wanted_unit).await?;
        let session = open_session(state, &org, &user, &unit, Some(&key.id), client, now).await?;
        if key.last_used_at.is_none_or(|at| now - at >= LAST_USED_RESOLUTION) {
            state
                .store
                .write(move |conn| Ok(api_key::update_last_used(conn, &key.id, now)?))
                .await?;
        }
        Ok::<_, ApiError>(session)
    }
    .await;
    match &session {
        Ok(s) => log::info!(
            target: logging::AUDIT,
            event = Event::LoginOk,
            organisation = s.organisation_name.as_str(),
            username = s.username.as_str(),
            unit = s.unit_name.as_str(),
            auth_method = AuthMethod::WebApiKey.as_str(),
            session = s.id.as_str(),
            client = client;
            "login ok"
        ),
        Err(e) => log::info!(
            target: logging::AUDIT,
            event = Event::LoginFailed,
            auth_method = AuthMethod::WebApiKey.as_str(),
            reason:% = e,
            client = client;
            "login failed"
        ),
    }
    Ok(token_for(state, &session?))
}

/// [`resolve_unit`] when the user's default unit was read with the user: it is used as read if the login asks
/// for none, and only a named unit costs another statement.
async fn choose_unit(
    state: &AppState,
    org: &Organisation,
    user: &User,
    default_unit: Option<Unit>,
    wanted: Option<String>,
) -> Result<Unit, ApiError> {
    match wanted.filter(|w| !w.is_empty()) {
        None => default_unit.filter(|u| u.is_active).ok_or(ApiError::InvalidUnit),
        Some(wanted) => {
            let (org, user) = (org.clone(), user.clone());
            state
                .store
                .read(move |conn| resolve_unit(conn, &org, &user, Some(&wanted)))
                .await
        }
    }
}

/// The unit a login asks for (id, else name, else code), or the user's default; it must be active and the
/// user a member.
pub fn resolve_unit(
    conn: &mut DbConnection,
    org: &Organisation,
    user: &User,
    wanted: Option<&str>,
) -> Result<Unit, ApiError> {
    let unit = match wanted.filter(|w| !w.is_empty()) {
        None => user::find_default_unit(conn, &user.id)?,
        Some(wanted) => match unit::find_in_organisation(conn, &org.id, wanted)? {
            Some(unit) if user::is_member(conn, &user.id, &unit.id)? => Some(unit),
            _ => None,
        },
    };
    unit.filter(|u| u.is_active).ok_or(ApiError::InvalidUnit)
}

async fn open_session(
    state: &AppState,
    org: &Organisation,
    user: &User,
    unit: &Unit,
    key_id: Option<&str>,
    client: IpAddr,
    now: i64,
) -> Result<Session, ApiError> {
    let settings = &state.settings;
    let max_end_at =
        now.saturating_add(i64::try_from(settings.session.max_lifetime_seconds).unwrap_or(i64::MAX));
    let expires_at = now
        .saturating_add(i64::try_from(settings.token.ttl_seconds).unwrap_or(i64::MAX))
        .min(max_end_at);
    let method = if key_id.is_some() {
        AuthMethod::WebApiKey
    } else {
        AuthMethod::Password
    };
    let row = Session {
        id: new_session_id(),
        organisation_id: org.id.clone(),
        user_id: user.id.clone(),
        unit_id: unit.id.clone(),
        api_key_id: key_id.map(str::to_owned),
        method,
        username: user.username.clone(),
        organisation_name: org.name.clone(),
        unit_name: unit.name.clone(),
        created_at: now,
        generation: 0,
        rotated_at: now,
        expires_at,
        max_end_at,
        ended_at: None,
        end_reason: None,
        refreshed_at: None,
        client: Some(client.to_string()),
        unit_code: unit.code.clone(),
    };
    state.store.insert_session(row).await
}
