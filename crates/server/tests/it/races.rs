//! Races and several nodes, on SQLite and PostgreSQL: concurrent refreshes, refresh against release, key
//! logins against revocation, and two servers sharing one database.

use crate::common::{Backend, ORG, PASSWORD, TestApp, USER, code};
use crm_auth_client::Credentials;
use crm_auth_core::ErrorCode;

backend_tests!(
    sixty_four_concurrent_refreshes_rotate_once,
    refresh_racing_release_never_leaves_a_live_token,
    two_nodes_share_sessions_and_lockout,
);

async fn sixty_four_concurrent_refreshes_rotate_once(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| s.database.pool_size = 16).await?;
    let first = app.login().await?;
    let refreshes = (0..64).map(|_| {
        let (client, token) = (app.client.clone(), first.as_str().to_owned());
        tokio::spawn(async move { client.refresh(&token).await })
    });
    let mut tokens = Vec::new();
    for result in futures_util::future::join_all(refreshes).await {
        tokens.push(result??.as_str().to_owned());
    }
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "every caller gets the one new token"
    );
    let row = crm_auth_server::db::session::find_by_id(&mut *app.conn()?, first.session_id())?
        .ok_or_else(|| anyhow::anyhow!("session row"))?;
    assert_eq!(row.generation, 1, "one rotation");
    Ok(())
}

async fn refresh_racing_release_never_leaves_a_live_token(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    for _ in 0..10 {
        let token = app.login().await?;
        let (a, b) = (app.client.clone(), app.client.clone());
        let (t1, t2) = (token.as_str().to_owned(), token.as_str().to_owned());
        let refresh = tokio::spawn(async move { a.refresh(&t1).await });
        let release = tokio::spawn(async move { b.release(&t2).await });
        let (refreshed, released) = (refresh.await?, release.await?);
        released?;
        // Release answered OK: whatever the refresh returned must be dead now.
        if let Ok(newer) = refreshed {
            assert_eq!(
                code(app.client.validate(newer.as_str()).await),
                Some(ErrorCode::SessionEnded)
            );
        }
        assert_eq!(
            code(app.client.validate(token.as_str()).await),
            Some(ErrorCode::SessionEnded)
        );
    }
    Ok(())
}

async fn two_nodes_share_sessions_and_lockout(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let other_node = app.node_with(|_| {})?;
    let other = other_node.client()?;
    let token = app.login().await?;
    // Issued by one node, refreshed at the other, released at the first, seen ended by the other.
    let refreshed = other.refresh(token.as_str()).await?;
    assert_eq!(refreshed.claims().r#gen, 1);
    app.client.validate(refreshed.as_str()).await?;
    app.client.release(refreshed.as_str()).await?;
    assert_eq!(
        code(other.validate(refreshed.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    // Failed logins count across nodes.
    for node in [&app.client, &other, &app.client, &other, &app.client] {
        assert_eq!(
            code(node.token(&Credentials::password(USER, "wrong", ORG)).await),
            Some(ErrorCode::InvalidCredentials)
        );
    }
    assert_eq!(
        code(other.token(&Credentials::password(USER, PASSWORD, ORG)).await),
        Some(ErrorCode::TooManyAttempts)
    );
    Ok(())
}
