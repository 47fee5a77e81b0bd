//! Timings of issuing and verifying a realistic token, against raw HMAC-SHA256 over the same bytes as the floor.
//!
//! After the criterion groups, prints each operation's cost as a multiple of that floor, measured with a plain
//! timed loop so the ratio is stable from run to run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use crm_auth_core::token::{Claims, DateFormat, Keyring, SigningKey, VerifyOptions, issue, verify};
use ring::hmac;

const SECRET: &[u8] = b"bench-signing-secret-0123456789abcdefghijklmnop";
const OLD_SECRET: &[u8] = b"bench-old-signing-secret-0123456789abcdefghijkl";
const NOW: i64 = 1_750_000_000;
const ITERATIONS: u32 = 200_000;

struct Fixture {
    keyring: Keyring,
    claims: Claims,
    opts: VerifyOptions,
    numeric: String,
    string: String,
    hmac_key: hmac::Key,
    signing_input: Vec<u8>,
}

fn fixture() -> Fixture {
    let keys = vec![
        SigningKey::new("2025-06", SECRET.to_vec()),
        SigningKey::new("2025-01", OLD_SECRET.to_vec()),
    ];
    let keyring = match keys
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .and_then(Keyring::new)
    {
        Ok(keyring) => keyring,
        Err(e) => panic!("bench keyring: {e}"),
    };
    let claims = Claims {
        jti: "EE63A82C4FEBE02FF34E90DD1EBA5ABE".into(),
        usr: "integration.user@example.com".into(),
        org: "Acme Telecommunications".into(),
        oun: "Head Office".into(),
        iat: NOW,
        exp: NOW + 7200,
        iss: Some("crm-auth".into()),
        r#gen: 3,
    };
    let opts = VerifyOptions {
        now: NOW + 60,
        leeway: 30,
        issuer: "crm-auth".into(),
        accept_legacy: false,
    };
    let numeric = issue(&keyring, &claims, DateFormat::Numeric);
    let string = issue(&keyring, &claims, DateFormat::String);
    let signing_input = match numeric.rsplit_once('.') {
        Some((input, _)) => input.as_bytes().to_vec(),
        None => panic!("issued token has no signature segment"),
    };
    Fixture {
        keyring,
        claims,
        opts,
        numeric,
        string,
        hmac_key: hmac::Key::new(hmac::HMAC_SHA256, SECRET),
        signing_input,
    }
}

fn benches(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("token");
    group.bench_function("hmac_sha256_floor", |b| {
        b.iter(|| hmac::sign(&f.hmac_key, black_box(&f.signing_input)))
    });
    group.bench_function("issue", |b| {
        b.iter(|| issue(&f.keyring, black_box(&f.claims), DateFormat::Numeric))
    });
    group.bench_function("verify", |b| {
        b.iter(|| verify(&f.keyring, black_box(&f.numeric), &f.opts))
    });
    group.bench_function("verify_string_dates", |b| {
        b.iter(|| verify(&f.keyring, black_box(&f.string), &f.opts))
    });
    group.finish();
}

/// Mean time per call of `op` over a plain loop, after a short warm-up.
#[expect(clippy::disallowed_methods, reason = "a benchmark measures wall-clock time")]
fn time_per_op<T>(mut op: impl FnMut() -> T) -> Duration {
    for _ in 0..ITERATIONS / 10 {
        black_box(op());
    }
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        black_box(op());
    }
    start.elapsed() / ITERATIONS
}

fn print_ratios(f: &Fixture) {
    if verify(&f.keyring, &f.numeric, &f.opts).is_err() {
        panic!("the bench token does not verify");
    }
    let floor = time_per_op(|| hmac::sign(&f.hmac_key, black_box(&f.signing_input)));
    let ops = [
        (
            "issue",
            time_per_op(|| issue(&f.keyring, black_box(&f.claims), DateFormat::Numeric)),
            6.0,
        ),
        (
            "verify",
            time_per_op(|| verify(&f.keyring, black_box(&f.numeric), &f.opts)),
            14.0,
        ),
        (
            "verify_string_dates",
            time_per_op(|| verify(&f.keyring, black_box(&f.string), &f.opts)),
            14.0,
        ),
    ];
    println!(
        "hmac_sha256_floor: {:>8.0} ns/op over {} signing-input bytes",
        floor.as_nanos(),
        f.signing_input.len()
    );
    for (name, time, target) in ops {
        let ratio = time.as_secs_f64() / floor.as_secs_f64();
        let verdict = if ratio <= target { "ok" } else { "OVER TARGET" };
        println!(
            "{name:>19}: {:>8.0} ns/op = {ratio:5.2}x the HMAC floor (target {target}x: {verdict})",
            time.as_nanos()
        );
    }
}

fn main() {
    let f = fixture();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &f);
    c.final_summary();
    // Only a real bench run prints ratios; `cargo test --benches` just smoke-tests the groups above.
    if std::env::args().any(|a| a == "--bench") {
        print_ratios(&f);
    }
}
