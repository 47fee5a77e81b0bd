//! The coalesced statements (`db::coalesce`), on SQLite and PostgreSQL: requests queued together are served
//! by one statement per kind, and each still gets exactly its own answer.
//!
//! Each test queues its requests while the coalescing thread waits for a connection (the test holds every
//! connection of the pool), so they are taken as one batch when the connections come back.

use std::time::Duration;

use crate::common::{self, Backend, TestApp};
use crm_auth_server::admin;
use crm_auth_server::db::coalesce::Coalescer;
use crm_auth_server::db::session::{self, Rotation, Session};
use crm_auth_server::error::ApiError;
use futures_util::future::join_all;

backend_tests!(
    one_rotation_of_a_generation_wins_in_a_batch,
    a_bad_row_fails_only_its_own_insert,
    a_new_session_of_a_disabled_user_ends_at_the_recheck,
    lookups_in_a_batch_each_get_their_own_row,
);

/// A coalescer with one thread on the app's pool.
fn coalescer(app: &TestApp) -> anyhow::Result<Coalescer> {
    Ok(Coalescer::start(&app.state.pool, 1, &app.state.metrics)?)
}

/// Runs `requests` as one batch: every pooled connection is held while they are queued, then given back.
async fn in_one_batch<F: Future>(app: &TestApp, requests: Vec<F>) -> anyhow::Result<Vec<F::Output>> {
    let held = (0..app.state.pool.max_size())
        .map(|_| app.state.pool.get())
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
    let token = app.client.token_with_api_key(&app.key, None).await?;
    session::find_by_id(&mut *app.conn()?, token.session_id())?.ok_or_else(|| anyhow::anyhow!("session row"))
}

async fn one_rotation_of_a_generation_wins_in_a_batch(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let coalescer = coalescer(&app)?;
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
            let coalescer = coalescer.clone();
            async move { (rotation.from_gen, coalescer.rotate(rotation).await) }
        })
        .collect();
    let answers = in_one_batch(&app, requests).await?;
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
    let coalescer = coalescer(&app)?;
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
    let requests = rows.iter().map(|row| coalescer.insert(row.clone())).collect();
    let answers = in_one_batch(&app, requests).await?;
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
    let coalescer = coalescer(&app)?;
    let template = stored_session(&app).await?;
    {
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, common::ORG)?;
        let alice = admin::find_user(conn, &org, common::USER)?;
        admin::set_user_active(conn, &alice, false, template.created_at)?;
    }
    let rows: Vec<Session> = (0..4)
        .map(|_| Session {
            id: crm_auth_core::new_id(),
            ..template.clone()
        })
        .collect();
    let requests = rows.iter().map(|row| coalescer.insert(row.clone())).collect();
    for (row, answer) in rows.iter().zip(in_one_batch(&app, requests).await?) {
        assert!(matches!(answer, Err(ApiError::InvalidCredentials)), "{answer:?}");
        // On either backend no live session is left behind.
        let stored = session::find_by_id(&mut *app.conn()?, &row.id)?;
        assert!(
            stored.is_none_or(|s| s.ended_at.is_some() && s.end_reason.as_deref() == Some("user_disabled")),
            "the new session is ended"
        );
    }
    Ok(())
}

async fn lookups_in_a_batch_each_get_their_own_row(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let coalescer = coalescer(&app)?;
    let a = stored_session(&app).await?;
    let b = stored_session(&app).await?;
    let missing = crm_auth_core::new_id();
    let ids = [&a.id, &b.id, &missing, &a.id];
    let requests = ids.iter().map(|id| coalescer.session((*id).clone())).collect();
    let found = in_one_batch(&app, requests).await?;
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
        .map(|id| coalescer.session_with_standing((*id).clone()))
        .collect();
    let found = in_one_batch(&app, requests).await?;
    let found: Vec<Option<(String, Option<&str>)>> = found
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
        .map(|d| coalescer.key_with_owner(d))
        .collect();
    let found = in_one_batch(&app, requests).await?;
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
