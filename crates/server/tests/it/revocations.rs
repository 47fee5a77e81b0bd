//! Logins hammered against revocations, on SQLite and PostgreSQL: for each kind of revocation (key revoke, user,
//! organisation and unit disable), 20 rounds in which 4 clients make 500 key logins each while the revocation
//! runs in their midst. Once the revocation has answered, no session it covers may be live, whatever the
//! interleaving. Also: sessions of a disabled organisation or unit end on every path.

use crm_auth_client::Credentials;
use crm_auth_server::service::admin::Actor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{Backend, ENDED, ORG, TestApp, refresh_then_validate};
use crm_auth_core::ErrorCode;
use crm_auth_server::clock::Clock as _;
use crm_auth_server::db::{self, schema::sessions};
use crm_auth_server::service::admin;
use diesel::prelude::*;

backend_tests!(
    no_session_outlives_a_key_revocation,
    no_session_outlives_a_user_disable,
    no_session_outlives_an_organisation_disable,
    no_session_outlives_a_unit_disable,
    a_fallen_standing_ends_the_session_on_every_refresh_path,
    disabled_organisations_and_units_end_sessions_and_refuse_logins,
);

const ROUNDS: usize = 20;
const CLIENTS: usize = 4;
const LOGINS_PER_CLIENT: usize = 500;

/// What a round revokes.
#[derive(Clone, Copy, Debug)]
enum Revocation {
    Key,
    User,
    Organisation,
    Unit,
}

/// One round: a fresh organisation with a unit, a user and its key, hammered with key logins; once half of them
/// have answered, the revocation runs. Returns how many sessions of that user are still live after everything
/// answered.
async fn round(app: &TestApp, what: Revocation, n: usize) -> anyhow::Result<i64> {
    let now = app.clock.now();
    let (org_id, unit_id, user_id, key_id, key) = {
        let conn = &mut *app.conn()?;
        let org = admin::add_organisation(conn, &Actor::Cli, &format!("Round {n}"), now)?;
        let unit = admin::add_unit(conn, &Actor::Cli, &org, "Floor", None, now)?;
        let user = crate::common::add_user(
            conn,
            &org,
            "worker",
            std::slice::from_ref(&unit.id),
            None,
            None,
            now,
        )?;
        let (row, key) = admin::create_key(conn, &Actor::Cli, &org, &user, (None, None), now)?;
        (org.id, unit.id, user.id, row.id, key.expose().to_owned())
    };
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, key, answered) = (app.client.clone(), key.clone(), Arc::clone(&answered));
            tokio::spawn(async move {
                for _ in 0..LOGINS_PER_CLIENT {
                    match client.token(&Credentials::api_key(&key)).await {
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.code(),
                                Some(ErrorCode::InvalidCredentials | ErrorCode::InvalidUnit)
                            ) => {}
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
    let (store, revoked_user) = (app.state.store.clone(), user_id.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let conn = &mut *store.pool().get()?;
        let org = admin::find_organisation(conn, &org_id)?;
        match what {
            Revocation::Key => admin::revoke_key(conn, &Actor::Cli, &org, &key_id, now)?,
            Revocation::User => {
                let user =
                    db::user::find_by_id(conn, &revoked_user)?.ok_or_else(|| anyhow::anyhow!("user"))?;
                admin::set_user_active(conn, &Actor::Cli, &org, &user, false, now)?
            }
            Revocation::Organisation => admin::set_organisation_active(conn, &Actor::Cli, &org, false, now)?,
            Revocation::Unit => {
                let unit = admin::find_unit(conn, &org, &unit_id)?;
                admin::set_unit_active(conn, &Actor::Cli, &org, &unit, false, now)?
            }
        };
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

async fn no_session_outlives_an_organisation_disable(backend: Backend) -> anyhow::Result<()> {
    hammer(backend, Revocation::Organisation).await
}

async fn no_session_outlives_a_unit_disable(backend: Backend) -> anyhow::Result<()> {
    hammer(backend, Revocation::Unit).await
}

fn code<T>(result: Result<T, crm_auth_client::Error>) -> Option<ErrorCode> {
    result.err().and_then(|e| e.code())
}

/// A session whose standing fell without the session being ended (a membership taken away in the database,
/// say) gets no token from any refresh path: not for its current token, and not for the token the last
/// refresh replaced, which the reuse interval would otherwise hand the newest token back to.
async fn a_fallen_standing_ends_the_session_on_every_refresh_path(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let first = app.login().await?;
    let second = app.client.refresh(first.as_str()).await?;
    diesel::update(db::schema::organisations::table)
        .set(db::schema::organisations::is_active.eq(false))
        .execute(&mut *app.conn()?)?;
    // The superseded token, within the reuse interval.
    assert_eq!(
        code(app.client.refresh(first.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    assert_eq!(refresh_then_validate(&app, second.as_str()).await, ENDED);
    Ok(())
}

/// `org disable` and `unit disable` end the sessions in them at once (validate and refresh see it as soon as
/// the command answered), refuse new tokens, and `enable` lets logins in again.
async fn disabled_organisations_and_units_end_sessions_and_refuse_logins(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let now = app.clock.now();
    for what in [Revocation::Organisation, Revocation::Unit] {
        let token = app.login().await?;
        let superseded = token.clone();
        let token = app.client.refresh(token.as_str()).await?;
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, ORG)?;
        let unit = admin::find_unit(conn, &org, "Main")?;
        let set = |conn: &mut db::DbConnection, active: bool| match what {
            Revocation::Organisation => admin::set_organisation_active(conn, &Actor::Cli, &org, active, now),
            _ => admin::set_unit_active(conn, &Actor::Cli, &org, &unit, active, now),
        };
        assert!(set(conn, false)? >= 1, "{what:?}: the live session is ended");
        for presented in [&token, &superseded] {
            assert_eq!(
                code(app.client.refresh(presented.as_str()).await),
                Some(ErrorCode::SessionEnded),
                "{what:?}"
            );
        }
        assert_eq!(
            code(app.client.validate(token.as_str()).await),
            Some(ErrorCode::SessionEnded),
            "{what:?}"
        );
        let refused = match what {
            Revocation::Organisation => Some(ErrorCode::InvalidCredentials),
            _ => Some(ErrorCode::InvalidUnit),
        };
        assert_eq!(code(app.login().await), refused, "{what:?}");
        assert_eq!(
            code(app.client.token(&Credentials::api_key(&app.key)).await),
            refused,
            "{what:?}"
        );
        set(conn, true)?;
        app.login().await?;
    }
    Ok(())
}
