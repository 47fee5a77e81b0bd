//! The SDK's `Session` against the real server: renewal across expiry with the server's clock, logging in
//! again after the server ends the session, and many callers sharing one refresh; logins with both kinds of
//! `Credentials` and what a `Token` tells of itself; `Session::invalidate` after an operator's revoke; and a
//! host name that does not resolve. The crate docs' examples run here, compiled from the files the docs show.

use crm_auth_server::service::admin::Actor;
use std::sync::Arc;
use std::time::Duration;

use crate::common::server::Node;
use crate::common::{Backend, ORG, PASSWORD, TestApp, USER, code};
use crm_auth_client::{Client, Credentials, Session, TransportKind};
use crm_auth_core::{ErrorCode, Role};
use crm_auth_server::clock::Clock as _;
use crm_auth_server::password::PasswordHasher;
use crm_auth_server::service::admin;

backend_tests!(
    documented_logins_with_both_kinds_of_credentials,
    invalidate_after_a_revoke_starts_a_new_session,
    session_renews_ahead_of_expiry,
    session_logs_in_again_after_the_server_ends_it,
    concurrent_callers_share_one_refresh,
    key_session_and_release,
    calls_retry_across_a_briefly_stopped_server,
    every_error_code_surfaces_through_the_client,
);

/// The client crate's documented examples, from the very files its docs include.
mod documented {
    pub mod login {
        include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../client/src/doc/login.rs"));
    }
    pub mod session {
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../client/src/doc/session.rs"
        ));
    }
}

/// The crate docs' logins: a Web API key, and ann's password into unit HQ; each token tells who, where,
/// which generation and how long.
async fn documented_logins_with_both_kinds_of_credentials(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    {
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, ORG)?;
        admin::add_unit(conn, &Actor::Cli, &org, "HQ", None, app.clock.now())?;
    }
    app.add_user("ann", Some(PASSWORD), &["Main", "HQ"])?;
    let [service, person] = documented::login::log_in(&app.url, &app.key, PASSWORD).await?;
    assert_eq!(
        (service.username(), service.organisation(), service.unit()),
        (USER, ORG, "Main")
    );
    assert_eq!(
        (person.username(), person.organisation(), person.unit()),
        ("ann", ORG, "HQ")
    );
    for token in [&service, &person] {
        assert_eq!(token.generation(), 0);
        // The server's clock stands at the system time; tokens live two hours.
        let left = token.expires_in().as_secs();
        assert!((7200 - 60..=7200).contains(&left), "{left}");
        app.client.validate(token.as_str()).await?;
    }
    let refreshed = app.client.refresh(person.as_str()).await?;
    assert_eq!(refreshed.generation(), 1);
    // A password that is wrong for ann is refused as any wrong password is.
    let wrong = documented::login::log_in(&app.url, &app.key, "not ann's password").await;
    assert_eq!(code(wrong), Some(crm_auth_core::ErrorCode::InvalidCredentials));
    Ok(())
}

/// An operator revokes a session through the administration API. The session still hands out its cached
/// token (it learns of the revoke at its next refresh); the documented `send_with`, told `SESSION_ENDED` by
/// validate, invalidates it and gets a new session at once.
async fn invalidate_after_a_revoke_starts_a_new_session(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    {
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, ORG)?;
        let hash = PasswordHasher::hash_blocking(&app.state.settings.auth.argon2, PASSWORD)?;
        let new = admin::NewUser {
            username: "olga",
            units: &["Main".to_owned()],
            default_unit: None,
            password_hash: Some(hash),
            role: Role::Operator,
        };
        admin::add_user(conn, &Actor::Cli, &org, new, app.clock.now())?;
    }
    let session = Session::new(app.client.clone(), Credentials::api_key(&app.key)).clock(session_clock(&app));
    let first = session.token().await?;
    let operator = app
        .client
        .token(&Credentials::password("olga", PASSWORD, ORG))
        .await?;
    app.client
        .admin(operator.as_str())?
        .revoke_session(ORG, first.session_id())
        .await?;
    assert_eq!(session.token().await?, first, "cached until the next refresh");

    let client = app.client.clone();
    let validate = move |token: crm_auth_client::Token| {
        let client = client.clone();
        async move { client.validate(token.as_str()).await }
    };
    let live = documented::session::send_with(&session, validate.clone()).await?;
    assert_ne!(live.id, first.session_id());
    let current = session.token().await?;
    assert_eq!(current.session_id(), live.id);
    assert_eq!(
        code(app.client.validate(first.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    // With a live session `send_with` sends once, with the cached token.
    assert_eq!(
        documented::session::send_with(&session, validate).await?.id,
        live.id
    );
    assert_eq!(session.token().await?, current);
    Ok(())
}

/// A base URL whose host does not resolve fails every call at once, naming the host and port, and is not
/// worth retrying: a mistyped name stays mistyped.
#[tokio::test]
async fn a_host_that_does_not_resolve_is_named_and_not_retryable() -> anyhow::Result<()> {
    const KEY: &str = "0123456789ABCDEF0123456789ABCDEF";
    let client = Client::builder()
        .base_url("http://no-such-host.invalid:8080")
        .build()?;
    let session = Session::new(client.clone(), Credentials::api_key(KEY));
    let errors = [
        client.token(&Credentials::api_key(KEY)).await.err(),
        client.validate("a.b.c").await.err(),
        client.health().await.err(),
        session.token().await.err(),
    ];
    for err in errors {
        let err = err.ok_or_else(|| anyhow::anyhow!("a host that does not exist answered"))?;
        assert_eq!(
            err.transport_kind(),
            Some(TransportKind::NameNotResolved),
            "{err}"
        );
        assert!(!err.is_retryable(), "{err}");
        let shown = err.to_string();
        assert_eq!(
            shown,
            "could not connect to no-such-host.invalid:8080: the host name does not resolve"
        );
        assert!(!format!("{err:?}").contains(KEY));
    }
    Ok(())
}

fn session_clock(app: &TestApp) -> Arc<dyn Fn() -> i64 + Send + Sync> {
    let clock = app.clock.clone();
    Arc::new(move || clock.now())
}

async fn session_renews_ahead_of_expiry(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let session = Session::new(app.client.clone(), Credentials::password(USER, PASSWORD, ORG))
        .margin(Duration::from_secs(300))
        .clock(session_clock(&app));
    let first = session.token().await?;
    assert_eq!(
        session.token().await?.as_str(),
        first.as_str(),
        "a fresh token is reused"
    );
    // Inside the margin the session refreshes: same session, next generation.
    app.clock.advance(7200 - 200);
    let second = session.token().await?;
    assert_eq!(second.session_id(), first.session_id());
    assert_eq!(second.claims().r#gen, 1);
    assert!(second.remaining(app.clock.now()) > 300);
    // Long past expiry and the refresh grace: the session logs in again.
    app.clock.advance(20_000);
    let third = session.token().await?;
    assert_ne!(third.session_id(), first.session_id());
    app.client.validate(third.as_str()).await?;
    Ok(())
}

async fn session_logs_in_again_after_the_server_ends_it(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let session = Session::new(app.client.clone(), Credentials::password(USER, PASSWORD, ORG))
        .margin(Duration::from_secs(60))
        .clock(session_clock(&app));
    let first = session.token().await?;
    admin::revoke_session(
        &mut *app.conn()?,
        &Actor::Cli,
        None,
        first.session_id(),
        app.clock.now(),
    )?;
    app.clock.advance(7200 - 30);
    let second = session.token().await?;
    assert_ne!(second.session_id(), first.session_id());
    app.client.validate(second.as_str()).await?;
    Ok(())
}

async fn concurrent_callers_share_one_refresh(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let session = Session::new(app.client.clone(), Credentials::password(USER, PASSWORD, ORG))
        .margin(Duration::from_secs(60))
        .clock(session_clock(&app));
    let first = session.token().await?;
    app.clock.advance(7200 - 30);
    let calls = (0..32).map(|_| {
        let session = session.clone();
        tokio::spawn(async move { session.token().await })
    });
    let mut tokens = Vec::new();
    for call in futures_util::future::join_all(calls).await {
        tokens.push(call??.as_str().to_owned());
    }
    assert!(tokens.iter().all(|t| *t == tokens[0]));
    // One refresh on the wire: the server counted one refresh request, and the row moved one generation.
    let metrics = reqwest::get(format!("{}/metrics", app.url)).await?.text().await?;
    let refreshes: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("crm_auth_refreshes_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert_eq!(refreshes, 1.0, "{metrics}");
    let conn = &mut *app.conn()?;
    let row = crm_auth_server::db::session::find_by_id(conn, first.session_id())?
        .ok_or_else(|| anyhow::anyhow!("session row"))?;
    assert_eq!(row.generation, 1);
    assert_eq!(row.rotated_at, app.clock.now());
    Ok(())
}

async fn key_session_and_release(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let session = Session::new(
        app.client.clone(),
        Credentials::api_key(app.key.clone()).unit("Second"),
    )
    .clock(session_clock(&app));
    let token = session.token().await?;
    assert_eq!(token.claims().oun, "Second");
    session.release().await?;
    let err = app.client.validate(token.as_str()).await.err();
    assert_eq!(
        err.and_then(|e| e.code()),
        Some(crm_auth_core::ErrorCode::SessionEnded)
    );
    // The next call opens a new session.
    let next = session.token().await?;
    assert_ne!(next.session_id(), token.session_id());
    assert!(!format!("{session:?}").contains(&app.key));
    Ok(())
}

async fn calls_retry_across_a_briefly_stopped_server(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token = app.login().await?;
    // A node of our own on a port we control, so it can be stopped and started again.
    let node = Node::start(app.state.clone())?;
    let addr = node.addr;
    let client = crm_auth_client::Client::builder()
        .base_url(format!("http://{addr}"))
        .retries(5)
        .build()?;
    client.validate(token.as_str()).await?;
    node.stop().await;
    // The call starts while nothing listens; its retries reach the server once it is back.
    let call = tokio::spawn({
        let (client, token) = (client.clone(), token.as_str().to_owned());
        async move { client.validate(&token).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let node = Node::start_on(std::net::TcpListener::bind(addr)?, app.state.clone())?;
    let session = call.await??;
    assert_eq!(session.id, token.session_id());
    // Without retries the same outage is a transport error, not a wrong answer.
    node.stop().await;
    let once = crm_auth_client::Client::builder()
        .base_url(format!("http://{addr}"))
        .retries(0)
        .build()?;
    let err = once
        .validate(token.as_str())
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("expected an error"))?;
    assert_eq!(err.code(), None);
    assert!(err.is_retryable());
    Ok(())
}

async fn every_error_code_surfaces_through_the_client(backend: Backend) -> anyhow::Result<()> {
    use crm_auth_core::ErrorCode;
    let app = TestApp::start_with(&backend, |s| {
        s.http.rate_limit.per_second = 1;
        s.http.rate_limit.burst = 30;
    })
    .await?;
    let c = &app.client;
    assert_eq!(
        code(c.token(&Credentials::password("", PASSWORD, ORG)).await),
        Some(ErrorCode::InvalidRequest)
    );
    let huge = "u".repeat(20_000);
    assert_eq!(
        code(c.token(&Credentials::password(&huge, PASSWORD, ORG)).await),
        Some(ErrorCode::PayloadTooLarge)
    );
    assert_eq!(
        code(c.token(&Credentials::password(USER, "wrong", ORG)).await),
        Some(ErrorCode::InvalidCredentials)
    );
    assert_eq!(
        code(
            c.token(&Credentials::password(USER, PASSWORD, ORG).unit("Other"))
                .await
        ),
        Some(ErrorCode::InvalidUnit)
    );
    assert_eq!(code(c.refresh("garbage").await), Some(ErrorCode::InvalidToken));
    let token = app.login().await?;
    app.clock.advance(7200 + 31);
    let err = c.validate(token.as_str()).await.err();
    assert_eq!(err.as_ref().and_then(|e| e.code()), Some(ErrorCode::TokenExpired));
    assert_eq!(err.map(|e| e.http_status()), Some(Some(401)));
    app.clock.advance(-(7200 + 31));
    c.release(token.as_str()).await?;
    assert_eq!(
        code(c.refresh(token.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    for _ in 0..5 {
        let _ = c.token(&Credentials::password("bob", "wrong", ORG)).await;
    }
    let err = c.token(&Credentials::password("bob", "wrong", ORG)).await.err();
    assert_eq!(
        err.as_ref().and_then(|e| e.code()),
        Some(ErrorCode::TooManyAttempts)
    );
    assert!(err.is_some_and(|e| e.retry_after().is_some() && e.is_retryable()));
    let elsewhere = crm_auth_client::Client::builder()
        .base_url(&app.url)
        .base_path("/nowhere")
        .build()?;
    assert_eq!(
        code(elsewhere.token(&Credentials::api_key(&app.key)).await),
        Some(ErrorCode::NotFound)
    );
    // The burst of 30 is spent by now or soon (the clock stands still): the address is limited.
    let mut limited = None;
    for _ in 0..40 {
        if let Err(e) = c.token(&Credentials::api_key(&app.key)).await {
            limited = Some(e);
            break;
        }
    }
    let limited = limited.ok_or_else(|| anyhow::anyhow!("the rate limit never applied"))?;
    assert_eq!(limited.code(), Some(ErrorCode::RateLimited));
    assert_eq!(limited.http_status(), Some(429));
    assert!(limited.retry_after().is_some());
    Ok(())
}
