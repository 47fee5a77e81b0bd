//! The SDK's `Session` against the real server: renewal across expiry with the server's clock, logging in
//! again after the server ends the session, and many callers sharing one refresh.

use crm_auth_server::service::admin::Actor;
use std::sync::Arc;
use std::time::Duration;

use crate::common::server::Node;
use crate::common::{Backend, ORG, PASSWORD, TestApp, USER, code};
use crm_auth_client::Session;
use crm_auth_server::clock::Clock as _;
use crm_auth_server::service::admin;

backend_tests!(
    session_renews_ahead_of_expiry,
    session_logs_in_again_after_the_server_ends_it,
    concurrent_callers_share_one_refresh,
    key_session_and_release,
    calls_retry_across_a_briefly_stopped_server,
    every_error_code_surfaces_through_the_client,
);

fn session_clock(app: &TestApp) -> Arc<dyn Fn() -> i64 + Send + Sync> {
    let clock = app.clock.clone();
    Arc::new(move || clock.now())
}

async fn session_renews_ahead_of_expiry(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let session = Session::with_password(app.client.clone(), USER, PASSWORD, ORG, None)
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
    let session = Session::with_password(app.client.clone(), USER, PASSWORD, ORG, None)
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
    let session = Session::with_password(app.client.clone(), USER, PASSWORD, ORG, None)
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
    let session = Session::with_api_key(app.client.clone(), app.key.clone(), Some("Second".into()))
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
        code(c.token_with_password("", PASSWORD, ORG, None).await),
        Some(ErrorCode::InvalidRequest)
    );
    let huge = "u".repeat(20_000);
    assert_eq!(
        code(c.token_with_password(&huge, PASSWORD, ORG, None).await),
        Some(ErrorCode::PayloadTooLarge)
    );
    assert_eq!(
        code(c.token_with_password(USER, "wrong", ORG, None).await),
        Some(ErrorCode::InvalidCredentials)
    );
    assert_eq!(
        code(c.token_with_password(USER, PASSWORD, ORG, Some("Other")).await),
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
        let _ = c.token_with_password("bob", "wrong", ORG, None).await;
    }
    let err = c.token_with_password("bob", "wrong", ORG, None).await.err();
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
        code(elsewhere.token_with_api_key(&app.key, None).await),
        Some(ErrorCode::NotFound)
    );
    // The burst of 30 is spent by now or soon (the clock stands still): the address is limited.
    let mut limited = None;
    for _ in 0..40 {
        if let Err(e) = c.token_with_api_key(&app.key, None).await {
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
