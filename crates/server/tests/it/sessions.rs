//! Refresh, release and validate through the real server on SQLite and PostgreSQL: rotation by generation,
//! the reuse interval, theft detection, grace, maximum lifetime and the liveness re-checks.

use crate::common::{Backend, ENDED, ORG, TestApp, USER, code, refresh_then_validate, test_keyring};
use crm_auth_client::Credentials;
use crm_auth_core::ErrorCode;
use crm_auth_server::clock::Clock as _;
use crm_auth_server::service::admin;
use crm_auth_server::service::admin::Actor;
use serde_json::{Value, json};

backend_tests!(
    refresh_rotates_by_generation_keeping_the_session,
    the_replaced_token_gets_the_newest_back_within_the_reuse_interval,
    reuse_after_the_interval_ends_the_session,
    two_refreshes_within_one_second_stay_distinct,
    concurrent_refreshes_rotate_once_and_share_the_token,
    refresh_grace_after_expiry,
    maximum_lifetime_caps_exp_and_ends_the_session,
    disabled_user_and_revoked_key_end_sessions,
    leaving_a_unit_ends_the_sessions_in_it,
    release_is_idempotent_and_accepts_expired_tokens,
    validate_reports_the_session_and_sees_superseded_tokens_until_exp,
    token_is_read_from_bearer_then_body_then_query,
    bad_tokens_are_invalid_token,
);

async fn refresh_rotates_by_generation_keeping_the_session(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let first = app.login().await?;
    app.clock.advance(100);
    let second = app.client.refresh(first.as_str()).await?;
    assert_eq!(second.claims().jti, first.claims().jti);
    assert_eq!(second.claims().r#gen, 1);
    assert_eq!(second.issued_at(), app.clock.now());
    assert_eq!(second.expires_at(), app.clock.now() + 7200);
    assert_eq!(
        (second.claims().usr.as_str(), second.claims().oun.as_str()),
        (USER, "Main")
    );
    let third = app.client.refresh(second.as_str()).await?;
    assert_eq!(third.claims().r#gen, 2);
    Ok(())
}

async fn the_replaced_token_gets_the_newest_back_within_the_reuse_interval(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let first = app.login().await?;
    let second = app.client.refresh(first.as_str()).await?;
    app.clock.advance(10);
    // A lost response: the client retries with the token it still has and gets the same newest token.
    let again = app.client.refresh(first.as_str()).await?;
    assert_eq!(again.as_str(), second.as_str());
    // The newest token still rotates normally afterwards.
    let third = app.client.refresh(second.as_str()).await?;
    assert_eq!(third.claims().r#gen, 2);
    Ok(())
}

async fn reuse_after_the_interval_ends_the_session(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let first = app.login().await?;
    let second = app.client.refresh(first.as_str()).await?;
    app.clock.advance(11);
    // The superseded token presented again is taken as stolen: the whole session ends.
    assert_eq!(
        code(app.client.refresh(first.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    assert_eq!(
        refresh_then_validate(&app, second.as_str()).await,
        ENDED,
        "the newest token of a stolen session"
    );
    // A token two generations old is theft even inside the interval.
    let a = app.login().await?;
    let b = app.client.refresh(a.as_str()).await?;
    let c = app.client.refresh(b.as_str()).await?;
    assert_eq!(
        code(app.client.refresh(a.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    assert_eq!(
        code(app.client.validate(c.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    Ok(())
}

async fn two_refreshes_within_one_second_stay_distinct(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let first = app.login().await?;
    let second = app.client.refresh(first.as_str()).await?;
    let third = app.client.refresh(second.as_str()).await?;
    // Same second, same iat and exp: only gen tells them apart, and rotation follows gen.
    assert_eq!(
        (first.issued_at(), second.issued_at()),
        (third.issued_at(), third.issued_at())
    );
    assert!(first.as_str() != second.as_str() && second.as_str() != third.as_str());
    assert_eq!(third.claims().r#gen, 2);
    let fourth = app.client.refresh(third.as_str()).await?;
    assert_eq!(fourth.claims().r#gen, 3);
    Ok(())
}

async fn concurrent_refreshes_rotate_once_and_share_the_token(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let first = app.login().await?;
    let refreshes = (0..16).map(|_| app.client.refresh(first.as_str()));
    let results = futures_util::future::join_all(refreshes).await;
    let tokens: Vec<String> = results
        .into_iter()
        .map(|r| r.map(|t| t.as_str().to_owned()))
        .collect::<Result<_, _>>()?;
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "all concurrent refreshes get the same token"
    );
    let newest = crm_auth_client::Token::parse(tokens[0].clone())?;
    assert_eq!(newest.claims().r#gen, 1);
    let session = app.client.validate(newest.as_str()).await?;
    assert_eq!(session.id, first.claims().jti);
    Ok(())
}

async fn refresh_grace_after_expiry(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token = app.login().await?;
    // Past exp (and the 30 s leeway) the token no longer validates but still refreshes within the grace.
    app.clock.advance(7200 + 31);
    assert_eq!(
        code(app.client.validate(token.as_str()).await),
        Some(ErrorCode::TokenExpired)
    );
    let fresh = app.client.refresh(token.as_str()).await?;
    assert_eq!(fresh.claims().r#gen, 1);
    app.client.validate(fresh.as_str()).await?;
    // Past exp + leeway + grace it is TOKEN_EXPIRED.
    app.clock.advance(7200 + 30 + 601);
    assert_eq!(
        code(app.client.refresh(fresh.as_str()).await),
        Some(ErrorCode::TokenExpired)
    );
    Ok(())
}

async fn maximum_lifetime_caps_exp_and_ends_the_session(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| s.session.max_lifetime_seconds = 10_000).await?;
    let start = app.clock.now();
    let token = app.login().await?;
    app.clock.advance(7000);
    let token = app.client.refresh(token.as_str()).await?;
    assert_eq!(
        token.expires_at(),
        start + 10_000,
        "exp never passes the session's end"
    );
    app.clock.advance(3000);
    assert_eq!(
        refresh_then_validate(&app, token.as_str()).await,
        ENDED,
        "past the session's maximum lifetime"
    );
    Ok(())
}

async fn disabled_user_and_revoked_key_end_sessions(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let by_password = app.login().await?;
    let by_key = app.client.token(&Credentials::api_key(&app.key)).await?;
    let conn = &mut *app.conn()?;
    let org = admin::find_organisation(conn, ORG)?;
    let user = admin::find_user(conn, &org, USER)?;
    assert_eq!(
        admin::set_user_active(conn, &Actor::Cli, &org, &user, false, app.clock.now())?,
        2
    );
    for token in [&by_password, &by_key] {
        assert_eq!(
            refresh_then_validate(&app, token.as_str()).await,
            ENDED,
            "a session of the disabled user"
        );
    }
    admin::set_user_active(conn, &Actor::Cli, &org, &user, true, app.clock.now())?;
    // A key revoked behind the service's back (no session sweep) is still caught by refresh's re-check.
    let by_key = app.client.token(&Credentials::api_key(&app.key)).await?;
    let key =
        crm_auth_server::db::api_key::find_active_by_digest(conn, &crm_auth_core::digest_key(&app.key))?
            .ok_or_else(|| anyhow::anyhow!("key"))?;
    crm_auth_server::db::api_key::update_revoked(conn, &key.id, app.clock.now())?;
    assert_eq!(
        refresh_then_validate(&app, by_key.as_str()).await,
        ENDED,
        "a session of the revoked key"
    );
    Ok(())
}

async fn release_is_idempotent_and_accepts_expired_tokens(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token = app.login().await?;
    app.client.release(token.as_str()).await?;
    app.client.release(token.as_str()).await?;
    assert_eq!(
        code(app.client.validate(token.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    assert_eq!(
        code(app.client.refresh(token.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    let expired = app.login().await?;
    app.clock.advance(100_000);
    app.client.release(expired.as_str()).await?;
    app.clock.advance(-100_000);
    assert_eq!(
        code(app.client.validate(expired.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    assert_eq!(
        code(app.client.release("not.a.token").await),
        Some(ErrorCode::InvalidToken)
    );
    Ok(())
}

async fn validate_reports_the_session_and_sees_superseded_tokens_until_exp(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let first = app
        .client
        .token(&Credentials::api_key(&app.key).unit("SC"))
        .await?;
    let info = app.client.validate(first.as_str()).await?;
    assert_eq!(info.id, first.claims().jti);
    assert_eq!(
        (
            info.username.as_str(),
            info.organisation.as_str(),
            info.unit.as_str()
        ),
        (USER, ORG, "Second")
    );
    assert_eq!(info.method, crm_auth_core::AuthMethod::WebApiKey);
    assert_eq!(
        (info.issued_at, info.expires_at),
        (first.issued_at(), first.expires_at())
    );
    app.clock.advance(60);
    let second = app.client.refresh(first.as_str()).await?;
    // The superseded token validates until its own exp, with its own times.
    let info = app.client.validate(first.as_str()).await?;
    assert_eq!(info.expires_at, first.expires_at());
    app.clock.advance(7200 - 60 + 31);
    assert_eq!(
        code(app.client.validate(first.as_str()).await),
        Some(ErrorCode::TokenExpired)
    );
    app.client.validate(second.as_str()).await?;
    let password = app.login().await?;
    assert_eq!(
        app.client.validate(password.as_str()).await?.method,
        crm_auth_core::AuthMethod::Password
    );
    Ok(())
}

async fn token_is_read_from_bearer_then_body_then_query(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token = app.login().await?;
    let url = app.api("/authentication/token/validate");
    let http = reqwest::Client::new();
    let ok = |res: reqwest::Response| async move {
        let status = res.status().as_u16();
        let body: Value = res.json().await?;
        anyhow::Ok((
            status,
            body["status"]["code"].as_str().unwrap_or_default().to_owned(),
        ))
    };
    let t = token.as_str();
    let refresh = app.api("/authentication/token/refresh");
    // In order: the refresh at the end rotates the token the others validate.
    let cases = [
        ("body", http.post(&url).json(&json!({"token": t})), (200, "OK")),
        ("query", http.get(format!("{url}?token={t}")), (200, "OK")),
        (
            "lower-case bearer header",
            http.get(&url).header("authorization", format!("bearer {t}")),
            (200, "OK"),
        ),
        // The header wins over the body, the body over the query.
        (
            "header over body and query",
            http.post(format!("{url}?token=garbage"))
                .header("authorization", format!("Bearer {t}"))
                .json(&json!({"token": "garbage"})),
            (200, "OK"),
        ),
        (
            "body over query",
            http.post(format!("{url}?token={t}"))
                .json(&json!({"token": "garbage"})),
            (401, "INVALID_TOKEN"),
        ),
        (
            "query when the body has no token",
            http.post(format!("{url}?token={t}")).json(&json!({"other": 1})),
            (200, "OK"),
        ),
        ("no token anywhere", http.get(&url), (401, "INVALID_TOKEN")),
        (
            "refresh, body without a content type",
            http.post(&refresh).body(format!(r#"{{"token":"{t}"}}"#)),
            (200, "OK"),
        ),
    ];
    for (name, request, (status, code)) in cases {
        assert_eq!(
            ok(request.send().await?).await?,
            (status, code.to_owned()),
            "{name}"
        );
    }
    Ok(())
}

async fn bad_tokens_are_invalid_token(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token = app.login().await?;
    let raw = token.as_str();
    let (head, rest) = raw
        .split_once('.')
        .ok_or_else(|| anyhow::anyhow!("token shape"))?;
    let (payload, signature) = rest
        .split_once('.')
        .ok_or_else(|| anyhow::anyhow!("token shape"))?;
    let none_header = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0";
    let other_key =
        crm_auth_core::Keyring::new(vec![crm_auth_core::SigningKey::new("test", vec![b'x'; 32])?])?;
    let forged = crm_auth_core::issue(&other_key, token.claims(), crm_auth_core::DateFormat::Numeric);
    let mut other_issuer = token.claims().clone();
    other_issuer.iss = Some("someone-else".into());
    let wrong_issuer = crm_auth_core::issue(
        &test_keyring()?,
        &other_issuer,
        crm_auth_core::DateFormat::Numeric,
    );
    let bad = [
        String::new(),
        "garbage".into(),
        format!("{head}.{payload}"),
        format!("{head}.{payload}."),
        format!("{none_header}.{payload}."),
        format!("{head}.{payload}x.{signature}"),
        format!("{raw}.extra"),
        forged,
        wrong_issuer,
        "a".repeat(9000),
    ];
    for token in &bad {
        let shown: String = token.chars().take(40).collect();
        assert_eq!(
            code(app.client.validate(token).await),
            Some(ErrorCode::InvalidToken),
            "validate {shown}"
        );
        assert_eq!(
            code(app.client.refresh(token).await),
            Some(ErrorCode::InvalidToken),
            "refresh {shown}"
        );
    }
    Ok(())
}

/// Replacing a user's units ends, before it answers, the sessions in the units the user left and only those;
/// the change is one audited `user.update`.
async fn leaving_a_unit_ends_the_sessions_in_it(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let in_main = app.login().await?;
    let in_second = app
        .client
        .token(&Credentials::password(USER, crate::common::PASSWORD, ORG).unit("Second"))
        .await?;
    let conn = &mut *app.conn()?;
    let org = admin::find_organisation(conn, ORG)?;
    let user = admin::find_user(conn, &org, USER)?;
    let units = ["MN".to_owned(), "Other".to_owned()];
    let ended = admin::set_units(
        conn,
        &Actor::Cli,
        &org,
        &user,
        (&units, Some("Other")),
        app.clock.now(),
    )?;
    assert_eq!(ended, 1);
    assert_eq!(refresh_then_validate(&app, in_second.as_str()).await, ENDED);
    app.client.validate(in_main.as_str()).await?;
    let refused = app
        .client
        .token(&Credentials::password(USER, crate::common::PASSWORD, ORG).unit("Second"))
        .await;
    assert_eq!(code(refused), Some(ErrorCode::InvalidUnit));
    let default = app.login().await?;
    assert_eq!(default.claims().oun, "Other", "the new default unit");
    // Bad units change nothing.
    assert!(admin::set_units(conn, &Actor::Cli, &org, &user, (&[], None), app.clock.now()).is_err());
    let nowhere = ["Nowhere".to_owned()];
    assert!(admin::set_units(conn, &Actor::Cli, &org, &user, (&nowhere, None), app.clock.now()).is_err());
    app.client.validate(in_main.as_str()).await?;
    let events = crm_auth_server::db::audit::list_for_organisation(conn, &org.id, None, 500)?;
    // (The seed's events share this second, so the update is found by its action, not its place.)
    let updates: Vec<_> = events.iter().filter(|e| e.action == "user.update").collect();
    assert_eq!(updates.len(), 1, "one change, and refused changes write nothing");
    assert_eq!(
        (updates[0].target.as_str(), updates[0].actor.as_str()),
        (USER, "cli")
    );
    Ok(())
}
