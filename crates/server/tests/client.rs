//! The SDK's `Session` against the real server: renewal across expiry with the server's clock, logging in
//! again after the server ends the session, and many callers sharing one refresh.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, ORG, PASSWORD, TestApp, USER};
use crm_auth_client::Session;
use crm_auth_server::admin;
use crm_auth_server::clock::Clock as _;

backend_tests!(
    session_renews_ahead_of_expiry,
    session_logs_in_again_after_the_server_ends_it,
    concurrent_callers_share_one_refresh,
    key_session_and_release,
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
    admin::revoke_session(&mut *app.conn()?, first.session_id(), app.clock.now())?;
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
