//! The per-address rate limit shared by the nodes of one database (`http.rate_limit.shared`): the configured
//! rate holds in total, not once per node.

use crm_auth_client::{Client, Credentials};
use crm_auth_core::ErrorCode;
use crm_auth_server::db::schema::rate_limit_hits;
use crm_auth_server::ratelimit::FLUSH_INTERVAL;
use crm_auth_server::settings::Settings;
use diesel::prelude::*;

use crate::common::{Backend, TestApp};

backend_tests!(
    two_nodes_allow_the_shared_rate_in_total,
    each_node_allows_the_rate_when_not_shared,
);

/// Four requests in any four seconds from one address (1 per second, bursts of 4).
fn limited(shared: bool) -> impl Fn(&mut Settings) {
    move |s: &mut Settings| {
        s.http.rate_limit.per_second = 1;
        s.http.rate_limit.burst = 4;
        s.http.rate_limit.shared = shared;
    }
}

/// Key logins from this test's one address, taking turns between the clients, each after the nodes have
/// flushed their counts; how many were allowed.
async fn allowed(app: &TestApp, clients: &[&Client], requests: usize) -> anyhow::Result<usize> {
    let mut allowed = 0;
    for i in 0..requests {
        match clients[i % clients.len()]
            .token(&Credentials::api_key(&app.key))
            .await
        {
            Ok(_) => allowed += 1,
            Err(e) if e.code() == Some(ErrorCode::RateLimited) => {}
            Err(e) => anyhow::bail!("request {i}: {e}"),
        }
        tokio::time::sleep(FLUSH_INTERVAL * 3).await;
    }
    Ok(allowed)
}

/// Rows of counts in the database and the requests they add up to.
fn stored(app: &TestApp) -> anyhow::Result<(usize, i64)> {
    let hits: Vec<i64> = rate_limit_hits::table
        .select(rate_limit_hits::hits)
        .load(&mut *app.conn()?)?;
    Ok((hits.len(), hits.iter().sum()))
}

async fn two_nodes_allow_the_shared_rate_in_total(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, limited(true)).await?;
    let other_node = app.node_with(|_| {})?;
    let other = other_node.client()?;
    // The test's clock stands still, so nothing refills: four in all, whichever node answers.
    assert_eq!(allowed(&app, &[&app.client, &other], 12).await?, 4);
    assert_eq!(
        stored(&app)?.1,
        4,
        "the allowed requests are counted in the database"
    );
    // Once the window has passed, both nodes allow requests again, four in all.
    app.clock.advance(4);
    assert_eq!(allowed(&app, &[&other, &app.client], 12).await?, 4);
    Ok(())
}

/// The same requests with the limit per node: each node allows its own four. (What the shared limit is for.)
async fn each_node_allows_the_rate_when_not_shared(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, limited(false)).await?;
    let other_node = app.node_with(|_| {})?;
    let other = other_node.client()?;
    assert_eq!(allowed(&app, &[&app.client, &other], 12).await?, 8);
    assert_eq!(stored(&app)?, (0, 0), "nothing is counted in the database");
    Ok(())
}
