//! Retention, on SQLite and PostgreSQL: the purge deletes exactly the sessions and failed-login counters past
//! their cutoffs, a batch at a time; `serve` runs it in the background and stops it with the server; one node
//! purges at a time; `crm-auth purge [--dry-run]` prints the counts; bad settings are refused.

use std::time::Duration;

use crm_auth_client::Credentials;
use crm_auth_core::AuthMethod;
use crm_auth_server::clock::Clock as _;
use crm_auth_server::db::login_failure::{self, LoginFailure};
use crm_auth_server::db::schema::{login_failures, sessions};
use crm_auth_server::db::session::{self, PastRetention, Session};
use crm_auth_server::db::{DbConnection, PURGE_BATCH};
use crm_auth_server::service::admin;
use crm_auth_server::service::retention::{self, Cutoffs, Outcome, PURGE_LOCK, Purged};
use crm_auth_server::settings::Settings;
use crm_auth_server::state::AppState;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

use crate::common::server::{crm_auth, run_with_stdin};
use crate::common::{Backend, ORG, TestApp, USER};

backend_tests!(
    a_purge_deletes_exactly_what_is_past_retention_in_batches,
    the_server_purges_in_the_background,
    the_background_purge_stops_with_its_server,
    one_node_purges_at_a_time,
    the_purge_command_counts_and_deletes,
);

/// A retention short enough to write rows around by hand.
const RETENTION: i64 = 3_600;

/// Starts a server whose own purge job never runs during the test (the tests run rounds themselves), with
/// [`RETENTION`].
async fn quiet_app(backend: &Backend) -> anyhow::Result<TestApp> {
    TestApp::start_with(backend, |s| {
        s.session.retention_seconds = RETENTION as u64;
        s.session.purge_interval_seconds = 86_400;
    })
    .await
}

/// A session row of alice in her main unit with these times; the caller sets `max_end_at` and `ended_at`.
fn row(app: &TestApp, conn: &mut DbConnection, now: i64) -> anyhow::Result<Session> {
    let org = admin::find_organisation(conn, ORG)?;
    let user = admin::find_user(conn, &org, USER)?;
    Ok(Session {
        id: String::new(),
        organisation_id: org.id,
        user_id: user.id,
        unit_id: app.main_unit_id.clone(),
        api_key_id: None,
        method: AuthMethod::Password,
        username: user.username,
        organisation_name: org.name,
        unit_name: "Main".into(),
        created_at: now,
        generation: 0,
        rotated_at: now,
        expires_at: now + 60,
        max_end_at: now + 86_400,
        ended_at: None,
        end_reason: None,
        refreshed_at: None,
        client: None,
        unit_code: Some("MN".into()),
    })
}

/// Inserts `count` copies of `template` with fresh ids, several rows per statement.
fn insert_sessions(conn: &mut DbConnection, template: &Session, count: usize) -> anyhow::Result<()> {
    let rows: Vec<Session> = (0..count)
        .map(|_| Session {
            id: crm_auth_core::new_session_id(),
            ..template.clone()
        })
        .collect();
    conn.transaction(|conn| {
        rows.chunks(500)
            .try_for_each(|chunk| session::create_batch(conn, chunk))
    })?;
    Ok(())
}

/// Inserts `count` failed-login counters last changed at `updated_at`, named `{prefix}{i}`.
fn insert_failures(
    conn: &mut DbConnection,
    prefix: &str,
    updated_at: i64,
    count: usize,
) -> anyhow::Result<()> {
    let rows: Vec<LoginFailure> = (0..count)
        .map(|i| LoginFailure {
            organisation_key: "acme".into(),
            username_key: format!("{prefix}{i}"),
            failures: 3,
            locked_until: 0,
            updated_at,
        })
        .collect();
    conn.transaction(|conn| {
        rows.chunks(500).try_for_each(|chunk| {
            match conn {
                DbConnection::Postgres(c) => diesel::insert_into(login_failures::table)
                    .values(chunk)
                    .execute(c),
                DbConnection::Sqlite(c) => diesel::insert_into(login_failures::table)
                    .values(chunk)
                    .execute(c),
            }
            .map(drop)
        })
    })?;
    Ok(())
}

/// What [`seed`] stored past retention and within it.
struct Seeded {
    /// Rows a purge at the seeding time must delete.
    doomed: Purged,
    /// Rows exactly at their cutoff, kept by a purge at the seeding time and deleted a second later.
    edge: Purged,
    /// Sessions it must keep.
    kept_sessions: i64,
    /// Counters it must keep.
    kept_failures: i64,
}

/// Stores sessions and counters on both sides of each cutoff at `now`, with more than a batch of each kind
/// past it. Each boundary row sits exactly at its cutoff, which is not yet past: "more than retention ago".
/// `tag` keeps the counters' names apart from an earlier seed's.
fn seed(app: &TestApp, now: i64, tag: &str) -> anyhow::Result<Seeded> {
    let conn = &mut *app.conn()?;
    let cutoffs = Cutoffs::at(&app.state.settings, now);
    let template = row(app, conn, now)?;
    let at = |max_end_at: i64, ended_at: Option<i64>| Session {
        max_end_at,
        ended_at,
        end_reason: ended_at.map(|_| session::EndReason::Released),
        ..template.clone()
    };
    let c = cutoffs.sessions;
    // Past their lifetime a second before the cutoff: never ended, or ended earlier still.
    insert_sessions(conn, &at(c - 1, None), 1_500)?;
    insert_sessions(conn, &at(c - 1, Some(c - 500)), 700)?;
    // Ended a second before the cutoff, while their lifetime runs on.
    insert_sessions(conn, &at(now + 3_600, Some(c - 1)), 1_200)?;
    // Kept: lifetime ending at the cutoff, ended at the cutoff, ended just now, live.
    insert_sessions(conn, &at(c, None), 3)?;
    insert_sessions(conn, &at(now + 3_600, Some(c)), 4)?;
    insert_sessions(conn, &at(now + 3_600, Some(now)), 5)?;
    insert_sessions(conn, &at(now + 3_600, None), 6)?;
    let f = cutoffs.login_failures;
    insert_failures(conn, &format!("{tag}old-"), f - 1, 1_300)?;
    insert_failures(conn, &format!("{tag}edge-"), f, 7)?;
    insert_failures(conn, &format!("{tag}new-"), now, 8)?;
    Ok(Seeded {
        doomed: Purged {
            sessions: 1_500 + 700 + 1_200,
            login_failures: 1_300,
        },
        edge: Purged {
            sessions: 3 + 4,
            login_failures: 7,
        },
        kept_sessions: 3 + 4 + 5 + 6,
        kept_failures: 7 + 8,
    })
}

fn counts(conn: &mut DbConnection) -> anyhow::Result<(i64, i64)> {
    Ok((
        sessions::table.count().get_result(conn)?,
        login_failures::table.count().get_result(conn)?,
    ))
}

/// One round of the server's purge, off the async runtime as the job runs it.
async fn round(state: &AppState) -> anyhow::Result<Outcome> {
    let state = state.clone();
    Ok(tokio::task::spawn_blocking(move || retention::purge_round(&state, || false)).await??)
}

/// Polls `done` every 50 ms for at most 20 s: a background job on real threads needs real time to run.
async fn eventually(what: &str, mut done: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    for _ in 0..400 {
        if done()? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{what}: not within 20 s")
}

async fn a_purge_deletes_exactly_what_is_past_retention_in_batches(backend: Backend) -> anyhow::Result<()> {
    let app = quiet_app(&backend).await?;
    let seeded = seed(&app, app.clock.now(), "")?;
    let cutoffs = Cutoffs::at(&app.state.settings, app.clock.now());
    {
        let conn = &mut *app.conn()?;
        assert_eq!(
            retention::count(conn, cutoffs)?,
            seeded.doomed,
            "a dry run counts"
        );
        // One statement deletes one batch, no more.
        let batch = usize::try_from(PURGE_BATCH)?;
        assert_eq!(
            session::delete_past_retention(conn, PastRetention::Lifetime, cutoffs.sessions)?,
            batch
        );
        assert_eq!(login_failure::delete_stale(conn, cutoffs.login_failures)?, batch);
    }
    let rest = Purged {
        sessions: seeded.doomed.sessions - 1_000,
        login_failures: seeded.doomed.login_failures - 1_000,
    };
    assert_eq!(round(&app.state).await?, Outcome::Done(rest));
    assert_eq!(app.state.metrics.sessions_purged_total(), rest.sessions);
    assert_eq!(
        counts(&mut *app.conn()?)?,
        (seeded.kept_sessions, seeded.kept_failures),
        "exactly the rows past their cutoff are gone"
    );
    assert_eq!(round(&app.state).await?, Outcome::Done(Purged::default()));

    // A second later the boundary rows are past it too; what remains is what is still within retention.
    app.clock.advance(1);
    assert_eq!(round(&app.state).await?, Outcome::Done(seeded.edge));
    // The session that ended just now stays for the whole retention, then goes.
    app.clock.advance(RETENTION);
    assert_eq!(round(&app.state).await?.purged().sessions, 5);
    assert_eq!(counts(&mut *app.conn()?)?, (6, 0));
    Ok(())
}

async fn the_server_purges_in_the_background(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| {
        s.session.retention_seconds = RETENTION as u64;
        s.session.max_lifetime_seconds = 7_200;
        s.session.purge_interval_seconds = 1;
    })
    .await?;
    let released = app.login().await?;
    app.client.release(released.as_str()).await?;
    let live = app.login().await?;
    assert!(
        app.client
            .token(&Credentials::password(USER, "wrong", ORG))
            .await
            .is_err()
    );
    let conn = &mut *app.conn()?;
    assert_eq!(counts(conn)?, (2, 1));

    // The released session goes a retention after its release; the live one stays.
    app.clock.advance(RETENTION + 1);
    // The failed-login counter goes in the same round: its lockout (900 s at most) ran out long ago.
    eventually("the released session purged", || {
        Ok(counts(conn)? == (1, 0) && app.state.metrics.sessions_purged_total() == 1)
    })
    .await?;
    assert!(session::find_by_id(conn, released.session_id())?.is_none());
    assert!(session::find_by_id(conn, live.session_id())?.is_some());

    // The live one goes a retention after its maximum lifetime, never refreshed or released.
    app.clock.advance(7_200);
    eventually("the expired session purged", || {
        Ok(counts(conn)? == (0, 0) && app.state.metrics.sessions_purged_total() == 2)
    })
    .await?;
    let metrics = reqwest::get(format!("{}/metrics", app.url)).await?.text().await?;
    assert!(metrics.contains("crm_auth_sessions_purged_total 2"), "{metrics}");
    Ok(())
}

async fn the_background_purge_stops_with_its_server(backend: Backend) -> anyhow::Result<()> {
    let app = quiet_app(&backend).await?;
    let node = app.node_with(|s| s.session.purge_interval_seconds = 1)?;
    let seeded = seed(&app, app.clock.now(), "a-")?;
    // The second node purges while it runs...
    eventually("the second node purges", || {
        Ok(counts(&mut *app.conn()?)? == (seeded.kept_sessions, seeded.kept_failures))
    })
    .await?;
    // ...and not once it has stopped: with a round a second, three seconds would see several.
    node.stop().await;
    seed(&app, app.clock.now(), "b-")?;
    let before = counts(&mut *app.conn()?)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(counts(&mut *app.conn()?)?, before);
    Ok(())
}

async fn one_node_purges_at_a_time(backend: Backend) -> anyhow::Result<()> {
    let app = quiet_app(&backend).await?;
    let other = AppState::build(
        (*app.state.settings).clone(),
        std::sync::Arc::new(app.clock.clone()),
    )?;
    if let Backend::Postgres(_) = backend {
        // Another node is in a purge batch: it holds the lock until its transaction ends.
        let mut holder = diesel::PgConnection::establish(app.state.settings.database.url.expose())?;
        holder.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({PURGE_LOCK});"))?;
        let seeded = seed(&app, app.clock.now(), "held-")?;
        let before = counts(&mut *app.conn()?)?;
        assert_eq!(round(&app.state).await?, Outcome::Busy(Purged::default()));
        assert_eq!(counts(&mut *app.conn()?)?, before, "the round was skipped");
        // A running node's job skips its rounds alike: a round a second, none deletes anything.
        let node = app.node_with(|s| s.session.purge_interval_seconds = 1)?;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        node.stop().await;
        assert_eq!(counts(&mut *app.conn()?)?, before, "the job skipped its rounds");
        // The command line, asked to purge now, waits for the lock instead.
        let cli = {
            let mut conn = app.state.store.pool().get()?;
            let cutoffs = Cutoffs::at(&app.state.settings, app.clock.now());
            std::thread::spawn(move || retention::purge(&mut conn, cutoffs, retention::Contention::Wait))
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!cli.is_finished(), "the command waits for the lock");
        holder.batch_execute("COMMIT")?;
        let outcome = cli
            .join()
            .map_err(|_| anyhow::anyhow!("the purge thread panicked"))??;
        assert_eq!(outcome, Outcome::Done(seeded.doomed));
    }
    // Two nodes' rounds at once: between them every row past retention goes once, and no round fails.
    let (sessions_before, failures_before) = counts(&mut *app.conn()?)?;
    let seeded = seed(&app, app.clock.now(), "both-")?;
    let (a, b) = tokio::join!(round(&app.state), round(&other));
    let (a, b) = (a?.purged(), b?.purged());
    assert_eq!(a.sessions + b.sessions, seeded.doomed.sessions);
    assert_eq!(a.login_failures + b.login_failures, seeded.doomed.login_failures);
    assert_eq!(
        counts(&mut *app.conn()?)?,
        (
            sessions_before + seeded.kept_sessions,
            failures_before + seeded.kept_failures
        )
    );
    Ok(())
}

async fn the_purge_command_counts_and_deletes(backend: Backend) -> anyhow::Result<()> {
    let app = quiet_app(&backend).await?;
    // The command reads the system clock, which the manual clock started from. Seeded as of two minutes
    // ago, the rows at the cutoffs are past them too by the time the command runs; the boundaries
    // themselves are the in-process test's.
    let seeded = seed(&app, app.clock.now() - 120, "")?;
    let settings = &app.state.settings;
    let purge = |args: &[&str]| -> anyhow::Result<String> {
        let mut command = crm_auth(&settings.data_dir, settings.database.url.expose());
        command
            .arg("purge")
            .args(args)
            .env("RUST_LOG", "warn")
            .env("CRM_AUTH__SESSION__RETENTION_SECONDS", RETENTION.to_string());
        let out = run_with_stdin(command, "")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "purge {args:?} failed: {stderr}");
        Ok(String::from_utf8(out.stdout)?)
    };
    let all = counts(&mut *app.conn()?)?;
    let expected = |verb: &str| {
        format!(
            "{verb} {} session(s) and {} failed-login record(s)",
            seeded.doomed.sessions + seeded.edge.sessions,
            seeded.doomed.login_failures + seeded.edge.login_failures
        )
    };
    let dry = purge(&["--dry-run"])?;
    assert!(dry.contains(&expected("would purge")), "{dry}");
    assert_eq!(counts(&mut *app.conn()?)?, all, "a dry run deletes nothing");
    let done = purge(&[])?;
    assert!(done.contains(&expected("purged")), "{done}");
    assert_eq!(
        counts(&mut *app.conn()?)?,
        (
            seeded.kept_sessions - i64::try_from(seeded.edge.sessions)?,
            seeded.kept_failures - i64::try_from(seeded.edge.login_failures)?
        )
    );
    let again = purge(&["--dry-run"])?;
    assert!(
        again.contains("would purge 0 session(s) and 0 failed-login record(s)"),
        "{again}"
    );

    // Bad settings stop the command with one line naming the key; the database is not touched.
    for (variable, value, key) in [
        (
            "CRM_AUTH__SESSION__RETENTION_SECONDS",
            "0",
            "session.retention_seconds",
        ),
        (
            "CRM_AUTH__SESSION__RETENTION_SECONDS",
            "-5",
            "session.retention_seconds",
        ),
        (
            "CRM_AUTH__SESSION__PURGE_INTERVAL_SECONDS",
            "0",
            "session.purge_interval_seconds",
        ),
        (
            "CRM_AUTH__SESSION__PURGE_INTERVAL_SECONDS",
            "-1",
            "session.purge_interval_seconds",
        ),
    ] {
        let mut command = crm_auth(&settings.data_dir, settings.database.url.expose());
        command.arg("purge").env(variable, value);
        let out = run_with_stdin(command, "")?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(!out.status.success(), "{variable}={value} was accepted");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key), "{variable}={value}: {stderr}");
    }
    Ok(())
}

/// The same refusals from a file, where TOML gives a negative number its own type.
#[test]
fn bad_retention_settings_name_their_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("c.toml");
    for (toml, key) in [
        ("retention_seconds = 0", "session.retention_seconds"),
        ("retention_seconds = -604800", "session.retention_seconds"),
        ("purge_interval_seconds = 0", "session.purge_interval_seconds"),
        ("purge_interval_seconds = -60", "session.purge_interval_seconds"),
        ("retention_seconds = \"a week\"", "session.retention_seconds"),
    ] {
        std::fs::write(&file, format!("[session]\n{toml}\n"))?;
        let err = Settings::load_from(Some(&file), Vec::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(key), "{toml}: {err:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let defaults = Settings::default().session;
    assert_eq!(
        (defaults.retention_seconds, defaults.purge_interval_seconds),
        (604_800, 60)
    );
    Ok(())
}
