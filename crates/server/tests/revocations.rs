//! Logins hammered against revocations, on SQLite and PostgreSQL: for each kind of revocation, 20 rounds in
//! which 4 clients make 500 key logins each while the revocation runs in their midst. Once the revocation has
//! answered, no session it covers may be live, whatever the interleaving.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Backend, ORG, TestApp};
use crm_auth_core::ErrorCode;
use crm_auth_server::clock::Clock as _;
use crm_auth_server::db::schema::sessions;
use crm_auth_server::service::admin;
use diesel::prelude::*;

backend_tests!(
    no_session_outlives_a_key_revocation,
    no_session_outlives_a_user_disable
);

const ROUNDS: usize = 20;
const CLIENTS: usize = 4;
const LOGINS_PER_CLIENT: usize = 500;

/// What a round revokes.
#[derive(Clone, Copy, Debug)]
enum Revocation {
    Key,
    User,
}

/// One round: a fresh user with a fresh key, hammered with key logins; once half of them have answered, the
/// revocation runs. Returns how many sessions of that user are still live after everything answered.
async fn round(app: &TestApp, what: Revocation, n: usize) -> anyhow::Result<i64> {
    let username = format!("worker{n}");
    app.add_user(&username, None, &["Main"])?;
    let (user_id, key_id, key) = {
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, ORG)?;
        let user = admin::find_user(conn, &org, &username)?;
        let (row, key) = admin::create_key(conn, &user, app.clock.now())?;
        (user.id, row.id, key.expose().to_owned())
    };
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, key, answered) = (app.client.clone(), key.clone(), Arc::clone(&answered));
            tokio::spawn(async move {
                for _ in 0..LOGINS_PER_CLIENT {
                    match client.token_with_api_key(&key, None).await {
                        Ok(_) => {}
                        Err(e) if e.code() == Some(ErrorCode::InvalidCredentials) => {}
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    while answered.load(Ordering::Relaxed) < CLIENTS * LOGINS_PER_CLIENT / 2 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (store, now, user_id_for_revocation) = (app.state.store.clone(), app.clock.now(), user_id.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let conn = &mut *store.pool().get()?;
        let org = admin::find_organisation(conn, ORG)?;
        match what {
            Revocation::Key => {
                admin::revoke_key(conn, &org, &key_id, now)?;
            }
            Revocation::User => {
                let user = crm_auth_server::db::user::find_by_id(conn, &user_id_for_revocation)?
                    .ok_or_else(|| anyhow::anyhow!("user"))?;
                admin::set_user_active(conn, &user, false, now)?;
            }
        }
        Ok(())
    })
    .await??;
    for client in clients {
        client.await??;
    }
    let live: i64 = sessions::table
        .filter(sessions::user_id.eq(&user_id))
        .filter(sessions::ended_at.is_null())
        .count()
        .get_result(&mut *app.conn()?)?;
    Ok(live)
}

async fn hammer(backend: Backend, what: Revocation) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| s.database.pool_size = 16).await?;
    let mut survivors = Vec::new();
    for n in 0..ROUNDS {
        survivors.push(round(&app, what, n).await?);
    }
    assert!(
        survivors.iter().all(|live| *live == 0),
        "live sessions left after each {what:?} revocation: {survivors:?}"
    );
    Ok(())
}

async fn no_session_outlives_a_key_revocation(backend: Backend) -> anyhow::Result<()> {
    hammer(backend, Revocation::Key).await
}

async fn no_session_outlives_a_user_disable(backend: Backend) -> anyhow::Result<()> {
    hammer(backend, Revocation::User).await
}
