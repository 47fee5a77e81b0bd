//! The store's batches (`db::coalesce` on PostgreSQL, `db::group_commit` on SQLite): requests queued together
//! are served by one batch, and each still gets exactly its own answer.
//!
//! Each test queues its requests while the batching thread is held (on PostgreSQL it waits for a connection,
//! because the test holds every connection of the pool; on SQLite the commit thread runs a job that waits for
//! the test), so they are taken as one batch when it is let go. The batch-size metric shows that they were.

use crm_auth_client::Credentials;
use crm_auth_server::service::admin::Actor;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{self, Backend, TestApp};
use crm_auth_server::db::batch::Queue;
use crm_auth_server::db::session::{self, EndReason, Rotation, Session};
use crm_auth_server::db::{self, Store};
use crm_auth_server::error::ApiError;
use crm_auth_server::service::admin;
use futures_util::future::join_all;
use tokio::sync::oneshot;

backend_tests!(
    one_rotation_of_a_generation_wins_in_a_batch,
    a_bad_row_fails_only_its_own_insert,
    a_new_session_of_a_disabled_user_ends_at_the_recheck,
    lookups_in_a_batch_each_get_their_own_row,
);

/// The queue that serves the store's writes: PostgreSQL's coalesced writes, or SQLite's group commit.
fn write_queue(store: &Store) -> Queue {
    match store.backend() {
        db::Backend::Postgres(_) => Queue::Write,
        db::Backend::Sqlite(_) => Queue::Commit,
    }
}

/// The queue that serves the store's lookups: PostgreSQL's coalesced lookups; SQLite runs each lookup on a
/// pooled connection of its own.
fn read_queue(store: &Store) -> Option<Queue> {
    match store.backend() {
        db::Backend::Postgres(_) => Some(Queue::Read),
        db::Backend::Sqlite(_) => None,
    }
}

/// Runs `requests` while the thread of `queue` is held, then lets it go, and checks that they were served as
/// one batch of that queue. Without a queue, the requests run while every pooled connection is held.
async fn in_one_batch<F: Future>(
    app: &TestApp,
    queue: Option<Queue>,
    requests: Vec<F>,
) -> anyhow::Result<Vec<F::Output>> {
    let store = &app.state.store;
    let count = u64::try_from(requests.len())?;
    let Some(queue) = queue else {
        return hold_pool(app, requests).await;
    };
    let before = app.state.metrics.db_batches(queue);
    let answers = match queue {
        Queue::Commit => {
            // A write job that holds the commit thread until the requests have queued behind it.
            let (started, running) = oneshot::channel();
            let (let_go, held) = mpsc::channel::<()>();
            let store = store.clone();
            let holder = tokio::spawn(async move {
                store
                    .write(move |_| {
                        let _ = started.send(());
                        let _ = held.recv_timeout(Duration::from_secs(10));
                        Ok(())
                    })
                    .await
            });
            running.await?;
            let release = async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = let_go.send(());
            };
            let (answers, ()) = tokio::join!(join_all(requests), release);
            holder.await??;
            answers
        }
        Queue::Read | Queue::Write => hold_pool(app, requests).await?,
    };
    let after = app.state.metrics.db_batches(queue);
    let holders = u64::from(queue == Queue::Commit);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1 + holders, count + holders),
        "the {count} requests form one batch of the {} queue",
        queue.as_str()
    );
    Ok(answers)
}

/// Runs `requests` while every pooled connection is held, then gives them back.
async fn hold_pool<F: Future>(app: &TestApp, requests: Vec<F>) -> anyhow::Result<Vec<F::Output>> {
    let pool = app.state.store.pool();
    let held = (0..pool.max_size())
        .map(|_| pool.get())
        .collect::<Result<Vec<_>, _>>()?;
    let release = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
    };
    let (answers, ()) = tokio::join!(join_all(requests), release);
    Ok(answers)
}

/// A stored session of alice's, opened by a key login.
async fn stored_session(app: &TestApp) -> anyhow::Result<Session> {
    let token = app.client.token(&Credentials::api_key(&app.key)).await?;
    session::find_by_id(&mut *app.conn()?, token.session_id())?.ok_or_else(|| anyhow::anyhow!("session row"))
}

async fn one_rotation_of_a_generation_wins_in_a_batch(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let store = &app.state.store;
    let current = stored_session(&app).await?;
    // 32 callers present generation 0 (the current one) and 32 a generation the session never had; they
    // alternate so that a stale request comes first.
    let requests = (0..64)
        .map(|n| {
            let rotation = Rotation {
                id: current.id.clone(),
                from_gen: if n % 2 == 0 { 7 } else { 0 },
                now: current.created_at + 1,
                expires_at: current.created_at + 100,
            };
            async move { (rotation.from_gen, store.rotate_session(rotation).await) }
        })
        .collect();
    let answers = in_one_batch(&app, Some(write_queue(store)), requests).await?;
    let winners: Vec<i64> = answers
        .into_iter()
        .map(|(from, won)| won.map(|won| won.then_some(from)))
        .collect::<Result<Vec<_>, ApiError>>()?
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        winners,
        vec![0],
        "exactly one caller of the current generation wins"
    );
    let row = session::find_by_id(&mut *app.conn()?, &current.id)?.ok_or_else(|| anyhow::anyhow!("row"))?;
    assert_eq!((row.generation, row.expires_at), (1, current.created_at + 100));
    Ok(())
}

async fn a_bad_row_fails_only_its_own_insert(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let store = &app.state.store;
    let template = stored_session(&app).await?;
    // Row 3 reuses the stored session's id: its insert breaks the primary key.
    let rows: Vec<Session> = (0..8)
        .map(|n| Session {
            id: if n == 3 {
                template.id.clone()
            } else {
                crm_auth_core::new_id()
            },
            ..template.clone()
        })
        .collect();
    let requests = rows.iter().map(|row| store.insert_session(row.clone())).collect();
    let answers = in_one_batch(&app, Some(write_queue(store)), requests).await?;
    for (n, (row, answer)) in rows.iter().zip(answers).enumerate() {
        let stored = session::find_by_id(&mut *app.conn()?, &row.id)?;
        if n == 3 {
            assert!(answer.is_err(), "the duplicate id is refused");
            assert_eq!(
                stored.as_ref(),
                Some(&template),
                "the stored session is untouched"
            );
        } else {
            assert_eq!(answer?, *row, "row {n} is stored and answered");
            assert_eq!(stored.as_ref(), Some(row));
        }
    }
    Ok(())
}

async fn a_new_session_of_a_disabled_user_ends_at_the_recheck(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let store = &app.state.store;
    let template = stored_session(&app).await?;
    {
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, common::ORG)?;
        let alice = admin::find_user(conn, &org, common::USER)?;
        admin::set_user_active(conn, &Actor::Cli, &org, &alice, false, template.created_at)?;
    }
    let rows: Vec<Session> = (0..4)
        .map(|_| Session {
            id: crm_auth_core::new_id(),
            ..template.clone()
        })
        .collect();
    let requests = rows.iter().map(|row| store.insert_session(row.clone())).collect();
    for (row, answer) in rows
        .iter()
        .zip(in_one_batch(&app, Some(write_queue(store)), requests).await?)
    {
        assert!(matches!(answer, Err(ApiError::InvalidCredentials)), "{answer:?}");
        // On either backend no live session is left behind.
        let stored = session::find_by_id(&mut *app.conn()?, &row.id)?;
        assert!(
            stored.is_none_or(|s| s.ended_at.is_some() && s.end_reason == Some(EndReason::UserDisabled)),
            "the new session is ended"
        );
    }
    Ok(())
}

async fn lookups_in_a_batch_each_get_their_own_row(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let store = &app.state.store;
    let a = stored_session(&app).await?;
    let b = stored_session(&app).await?;
    let missing = crm_auth_core::new_id();
    let ids = [&a.id, &b.id, &missing, &a.id];
    let requests = ids.iter().map(|id| store.find_session(id)).collect();
    let found = in_one_batch(&app, read_queue(store), requests).await?;
    let found: Vec<Option<String>> = found
        .into_iter()
        .map(|s| s.map(|s| s.map(|s| s.id)))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        found,
        vec![Some(a.id.clone()), Some(b.id.clone()), None, Some(a.id.clone())]
    );

    let requests = ids
        .iter()
        .map(|id| store.find_session_with_standing(id))
        .collect();
    let found = in_one_batch(&app, read_queue(store), requests).await?;
    let found: Vec<Option<(String, Option<EndReason>)>> = found
        .into_iter()
        .map(|s| s.map(|s| s.map(|(s, standing)| (s.id, standing.end_reason()))))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        found,
        vec![
            Some((a.id.clone(), None)),
            Some((b.id.clone(), None)),
            None,
            Some((a.id.clone(), None))
        ]
    );

    let digest = crm_auth_core::ApiKey::new(app.key.clone()).digest();
    let requests = [digest.clone(), "0".repeat(64), digest]
        .into_iter()
        .map(|d| store.find_key_with_owner(d))
        .collect();
    let found = in_one_batch(&app, read_queue(store), requests).await?;
    let found: Vec<Option<String>> = found
        .into_iter()
        .map(|k| {
            k.map(|k| k.map(|(_, user, _, unit)| format!("{}/{:?}", user.username, unit.map(|u| u.name))))
        })
        .collect::<Result<_, _>>()?;
    let alice = Some(format!("{}/{:?}", common::USER, Some("Main")));
    assert_eq!(found, vec![alice.clone(), None, alice]);
    Ok(())
}
