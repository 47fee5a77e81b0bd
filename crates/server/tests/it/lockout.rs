//! The lockout under concurrency, on SQLite and PostgreSQL: only failed password checks count, so many callers
//! of one shared user all get in; parallel wrong guesses check no more passwords than the threshold, on one
//! node or two (the hashing pool's count of hashes is the proof); logins that find every check slot taken wait
//! for one, then get `UNAVAILABLE`; a slot left by a stopped node stops counting after 30 s.

use std::time::Duration;

use crate::common::{Backend, ORG, PASSWORD, TestApp, USER, header, post};
use crm_auth_client::{Client, Credentials, Error, Token};
use crm_auth_core::ErrorCode;
use crm_auth_server::clock::Clock as _;
use crm_auth_server::db::login_check::{self, LoginCheck};
use crm_auth_server::db::{login_failure, name_key};
use crm_auth_server::service::retention;
use crm_auth_server::settings::Settings;
use diesel::prelude::*;
use serde_json::json;

backend_tests!(
    many_right_passwords_of_one_user_all_pass,
    parallel_wrong_passwords_check_at_most_the_threshold,
    right_passwords_amid_wrong_ones_are_refused_only_after_the_threshold,
    two_nodes_share_the_check_slots,
    a_full_account_waits_then_answers_unavailable,
    a_stopped_nodes_slot_stops_counting_after_30_seconds,
);

/// One organisation + username's lockout settings for these tests: the default threshold (5), and room for
/// 256 connections from the one test address.
fn wide(settings: &mut Settings) {
    settings.http.max_connections_per_address = 1024;
    settings.database.pool_size = 16;
}

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Wrong,
    Locked,
    Busy,
}

fn answer(result: &Result<Token, Error>) -> anyhow::Result<Answer> {
    Ok(match result {
        Ok(_) => Answer::Ok,
        Err(e) => match e.code() {
            Some(ErrorCode::InvalidCredentials) => Answer::Wrong,
            Some(ErrorCode::TooManyAttempts) => Answer::Locked,
            Some(ErrorCode::Unavailable) => Answer::Busy,
            _ => anyhow::bail!("unexpected answer: {e}"),
        },
    })
}

/// Alice's logins with these passwords, all at once, spread over `clients` in turn; the answers in order.
async fn burst(clients: &[&Client], passwords: &[&str]) -> anyhow::Result<Vec<(String, Answer)>> {
    let logins = passwords.iter().enumerate().map(|(i, password)| {
        let client = clients[i % clients.len()].clone();
        let password = (*password).to_owned();
        tokio::spawn(async move {
            let result = client.token(&Credentials::password(USER, &password, ORG)).await;
            (password, result)
        })
    });
    let mut answers = Vec::new();
    for joined in futures_util::future::join_all(logins).await {
        let (password, result) = joined?;
        answers.push((password, answer(&result)?));
    }
    Ok(answers)
}

fn count(answers: &[(String, Answer)], wanted: Answer) -> usize {
    answers.iter().filter(|(_, a)| *a == wanted).count()
}

/// The check slots left in the database, of every account.
fn slots_left(app: &TestApp) -> anyhow::Result<i64> {
    use crm_auth_server::db::schema::login_checks;
    Ok(login_checks::table.count().get_result(&mut *app.conn()?)?)
}

/// A CRM.COM integration is often one service user shared by many workers: all of them get in at once.
async fn many_right_passwords_of_one_user_all_pass(backend: Backend) -> anyhow::Result<()> {
    // A debug build on two shared cores checks some 70 passwords a second, five at a time, so the last of 256
    // waits for seconds: the longest wait is allowed here, and the bench holds the default.
    let app = TestApp::start_with(&backend, |s| {
        wide(s);
        s.auth.lockout.max_wait_ms = 60_000;
    })
    .await?;
    let hashes = app.state.metrics.hashes();
    let answers = burst(&[&app.client], &[PASSWORD; 256]).await?;
    assert_eq!(count(&answers, Answer::Ok), 256, "{answers:?}");
    assert_eq!(app.state.metrics.hashes() - hashes, 256, "one check each");
    assert_eq!(slots_left(&app)?, 0, "every slot was freed");
    assert_eq!(
        app.state.lockout.accounts_in_progress(),
        0,
        "the queue went with its last login"
    );
    Ok(())
}

async fn parallel_wrong_passwords_check_at_most_the_threshold(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, wide).await?;
    let hashes = app.state.metrics.hashes();
    let answers = burst(&[&app.client], &["wrong"; 64]).await?;
    let checked = app.state.metrics.hashes() - hashes;
    assert_eq!(checked, 5, "64 parallel guesses, a threshold of 5: {answers:?}");
    assert_eq!(count(&answers, Answer::Wrong), 5);
    assert_eq!(count(&answers, Answer::Locked), 59);
    // Once the delay has passed, one check at a time: of 16 parallel guesses one is checked, and its
    // failure locks the account again for twice as long.
    app.clock.advance(1);
    let hashes = app.state.metrics.hashes();
    let answers = burst(&[&app.client], &["wrong"; 16]).await?;
    assert_eq!(app.state.metrics.hashes() - hashes, 1, "{answers:?}");
    assert_eq!(count(&answers, Answer::Wrong), 1);
    assert_eq!(count(&answers, Answer::Locked), 15);
    let counter = login_failure::find(&mut *app.conn()?, &name_key(ORG), &name_key(USER))?;
    assert_eq!(
        counter.map(|c| (c.failures, c.locked_until)),
        Some((6, app.clock.now() + 2))
    );
    assert_eq!(slots_left(&app)?, 0);
    Ok(())
}

async fn right_passwords_amid_wrong_ones_are_refused_only_after_the_threshold(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, wide).await?;
    // Fewer wrong guesses than the threshold, however they interleave with the right ones, lock no one out.
    let mut passwords = vec![PASSWORD; 60];
    for at in [0, 15, 30, 45] {
        passwords.insert(at, "wrong");
    }
    let answers = burst(&[&app.client], &passwords).await?;
    for (password, answer) in &answers {
        let expected = if password == PASSWORD {
            Answer::Ok
        } else {
            Answer::Wrong
        };
        assert_eq!(*answer, expected, "{answers:?}");
    }
    // Half and half: a right password may be refused only once five failures in a row locked the account,
    // and then the lock is still on at the end (the clock stands still and nothing can reset it).
    let passwords: Vec<&str> = (0..64)
        .map(|i| if i % 2 == 0 { PASSWORD } else { "wrong" })
        .collect();
    let answers = burst(&[&app.client], &passwords).await?;
    let refused_right = answers
        .iter()
        .filter(|(p, a)| p == PASSWORD && *a != Answer::Ok)
        .count();
    assert_eq!(count(&answers, Answer::Busy), 0, "{answers:?}");
    if refused_right > 0 {
        let counter = login_failure::find(&mut *app.conn()?, &name_key(ORG), &name_key(USER))?;
        assert!(
            counter.is_some_and(|c| c.failures >= 5 && c.locked_until > app.clock.now()),
            "a right password was refused without a lock: {answers:?}"
        );
    }
    assert!(count(&answers, Answer::Ok) > 0);
    assert_eq!(slots_left(&app)?, 0);
    Ok(())
}

/// The slots live in the database, so a second node behind the same load balancer shares them.
async fn two_nodes_share_the_check_slots(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, wide).await?;
    let other_node = app.node_with(|_| {})?;
    let other = other_node.client()?;
    let hashes = || app.state.metrics.hashes() + other_node.state.metrics.hashes();
    let before = hashes();
    let answers = burst(&[&app.client, &other], &["wrong"; 64]).await?;
    assert_eq!(hashes() - before, 5, "{answers:?}");
    assert_eq!(count(&answers, Answer::Wrong), 5);
    assert_eq!(count(&answers, Answer::Locked), 59);
    // And many right passwords over both nodes all pass.
    app.clock.advance(1);
    let answers = burst(&[&app.client, &other], &[PASSWORD; 64]).await?;
    assert_eq!(count(&answers, Answer::Ok), 64, "{answers:?}");
    assert_eq!(slots_left(&app)?, 0);
    Ok(())
}

/// Takes every slot of alice's account as another node would, at `taken_at`.
fn take_all_slots(app: &TestApp, taken_at: i64) -> anyhow::Result<()> {
    let conn = &mut *app.conn()?;
    for _ in 0..app.state.settings.auth.lockout.threshold {
        login_check::create(
            conn,
            &LoginCheck {
                organisation_key: name_key(ORG),
                username_key: name_key(USER),
                id: crm_auth_core::new_id(),
                taken_at,
            },
        )?;
    }
    Ok(())
}

/// A login as raw HTTP: its status, `Retry-After` and envelope code.
async fn raw_login(app: &TestApp) -> anyhow::Result<(u16, Option<String>, String)> {
    let body = json!({"username": USER, "password": PASSWORD, "organisation": ORG}).to_string();
    let res = post(&app.api("/authentication/token"), None, body).await?;
    let status = res.status().as_u16();
    let retry = header(&res, "retry-after");
    let envelope: serde_json::Value = res.json().await?;
    let code = envelope["status"]["code"].as_str().unwrap_or_default().to_owned();
    Ok((status, retry, code))
}

async fn a_full_account_waits_then_answers_unavailable(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| s.auth.lockout.max_wait_ms = 1000).await?;
    take_all_slots(&app, app.clock.now())?;
    let hashes = app.state.metrics.hashes();
    assert_eq!(
        raw_login(&app).await?,
        (503, Some("1".to_owned()), "UNAVAILABLE".to_owned())
    );
    assert_eq!(app.state.metrics.hashes(), hashes, "nothing was checked");
    let counter = login_failure::find(&mut *app.conn()?, &name_key(ORG), &name_key(USER))?;
    assert!(counter.is_none_or(|c| c.failures == 0), "nothing was counted");
    // A login that is waiting gets the first slot freed within its wait.
    let waiting = {
        let client = app.client.clone();
        tokio::spawn(async move { client.token(&Credentials::password(USER, PASSWORD, ORG)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    {
        use crm_auth_server::db::schema::login_checks;
        let conn = &mut *app.conn()?;
        let one: String = login_checks::table.select(login_checks::id).first(conn)?;
        login_check::delete(conn, &name_key(ORG), &name_key(USER), &one)?;
    }
    waiting.await??;
    assert_eq!(slots_left(&app)?, 4, "the other node's slots stay");
    let metrics = app.state.metrics.render(app.state.store.pool())?;
    assert!(
        metrics.contains("crm_auth_token_grants_total{method=\"password\",outcome=\"busy\"} 1\n"),
        "{metrics}"
    );
    Ok(())
}

async fn a_stopped_nodes_slot_stops_counting_after_30_seconds(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| s.auth.lockout.max_wait_ms = 100).await?;
    take_all_slots(&app, app.clock.now())?;
    app.clock.advance(29);
    assert_eq!(raw_login(&app).await?.0, 503, "29 s on, the slots still count");
    app.clock.advance(1);
    app.login().await?;
    assert!(slots_left(&app)? > 0, "abandoned slots stay until the purge");
    let state = app.state.clone();
    let purged = tokio::task::spawn_blocking(move || retention::purge_round(&state, || false)).await??;
    assert_eq!(slots_left(&app)?, 0, "the purge deleted the abandoned slots");
    assert!(purged.purged().login_failures > 0, "{purged:?}");
    Ok(())
}
