//! Timing does not tell who exists: failed logins for an unknown user or organisation take as long as a wrong
//! password for a real user, because each still costs one password hash.

#![expect(
    clippy::disallowed_methods,
    reason = "response times are what this test compares"
)]

use std::time::{Duration, Instant};

use crate::common::{Backend, ORG, TestApp, USER};
use crm_auth_server::settings::Argon2Settings;
use serde_json::json;

/// One test that measures SQLite and then PostgreSQL, never both at once: two servers hashing side by side on
/// a small machine would disturb each other's timings. (The nextest configuration also runs this binary alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_cost_as_much_as_wrong_passwords() -> anyhow::Result<()> {
    measure(Backend::Sqlite).await?;
    if let Some(postgres) = Backend::postgres() {
        measure(postgres).await?;
    }
    Ok(())
}

/// Samples of each kind, taken interleaved so that drift in the machine's load hits every kind alike.
const SAMPLES: usize = 40;

/// How far the median time ratio of another kind to a wrong password may be from 1.
const TOLERANCE: f64 = 0.20;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

async fn measure(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| {
        // The default 19 MiB, t=2 takes seconds per hash in a debug build; 4 MiB, t=1 keeps the hash the
        // dominant cost of a failed login while the test stays quick.
        s.auth.argon2 = Argon2Settings {
            m_kib: 4096,
            t: 1,
            p: 1,
        };
        // Every attempt must be checked, never refused by the lockout without a hash.
        s.auth.lockout.threshold = 100_000;
    })
    .await?;
    let url = app.api("/authentication/token");
    let http = reqwest::Client::new();
    let kinds = [
        (
            "wrong password",
            json!({"username": USER, "password": "wrong", "organisation": ORG}),
        ),
        (
            "unknown user",
            json!({"username": "nobody", "password": "wrong", "organisation": ORG}),
        ),
        (
            "unknown organisation",
            json!({"username": USER, "password": "wrong", "organisation": "Nowhere"}),
        ),
    ];
    // One row per round: the time of each kind, sent back to back.
    let mut rounds: Vec<Vec<Duration>> = Vec::new();
    // A few rounds of warm-up fill the pools (connections, hashing memory) before anything is measured.
    for round in 0..SAMPLES + 3 {
        let mut row = vec![Duration::ZERO; kinds.len()];
        for i in 0..kinds.len() {
            // Rotate the order each round so that no kind always follows another.
            let k = (i + round) % kinds.len();
            let (name, body) = &kinds[k];
            let started = Instant::now();
            let res = http.post(&url).json(body).send().await?;
            let status = res.status().as_u16();
            res.bytes().await?;
            row[k] = started.elapsed();
            anyhow::ensure!(status == 401, "{name}: status {status}");
        }
        if round >= 3 {
            rounds.push(row);
        }
    }
    let medians: Vec<Duration> = (0..kinds.len())
        .map(|k| median(rounds.iter().map(|row| row[k].as_secs_f64()).collect()))
        .map(Duration::from_secs_f64)
        .collect();
    for (k, (name, _)) in kinds.iter().enumerate().skip(1) {
        // Each round's time against the wrong-password time of the same round: load that comes and goes on a
        // busy machine slows both alike, so the ratio keeps what the server itself does.
        let ratio = median(
            rounds
                .iter()
                .map(|row| row[k].as_secs_f64() / row[0].as_secs_f64())
                .collect(),
        );
        assert!(
            (ratio - 1.0).abs() <= TOLERANCE,
            "{backend:?}: {name} logins take {:.0}% of the time of wrong passwords (medians: {:?} against {:?})",
            ratio * 100.0,
            medians[k],
            medians[0]
        );
    }
    Ok(())
}
