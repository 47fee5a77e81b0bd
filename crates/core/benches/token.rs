//! Timings of issuing and verifying a realistic token, against raw HMAC-SHA256 over the same bytes as the floor;
//! and for EdDSA and ES256, issuing and verifying against ring's raw Ed25519 and ECDSA P-256 sign and verify
//! over the same signing input.
//!
//! After the criterion groups, prints each operation's cost as a multiple of its floor, measured with a plain
//! timed loop so the ratio is stable from run to run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use crm_auth_core::token::{
    Algorithm, Claims, DateFormat, Keyring, SigningKey, VerifyOptions, issue, verify,
};
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, UnparsedPublicKey,
};

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
    let claims = Claims::new(
        "EE63A82C4FEBE02FF34E90DD1EBA5ABE",
        "integration.user@example.com",
        "Acme Telecommunications",
        "Head Office",
        NOW,
        NOW + 7200,
    )
    .issued_by("crm-auth")
    .at_generation(3);
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

/// An EdDSA or ES256 key as core uses it and as ring's raw primitive, with a token it signed.
struct Asymmetric {
    alg: Algorithm,
    keyring: Keyring,
    token: String,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    raw: Raw,
}

enum Raw {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair, SystemRandom),
}

impl Raw {
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Raw::Ed25519(pair) => pair.sign(input).as_ref().to_vec(),
            Raw::Es256(pair, rng) => match pair.sign(rng, input) {
                Ok(signature) => signature.as_ref().to_vec(),
                Err(_) => panic!("ECDSA signing failed"),
            },
        }
    }

    fn verify(&self, input: &[u8], signature: &[u8]) -> bool {
        match self {
            Raw::Ed25519(pair) => UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref())
                .verify(input, signature)
                .is_ok(),
            Raw::Es256(pair, _) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
                    .verify(input, signature)
                    .is_ok()
            }
        }
    }
}

fn asymmetric(alg: Algorithm, claims: &Claims) -> Asymmetric {
    let pem = match SigningKey::generate_pkcs8_pem(alg) {
        Ok(pem) => pem,
        Err(e) => panic!("bench key: {e}"),
    };
    let der = match pem_rfc7468::decode_vec(pem.as_bytes()) {
        Ok((_, der)) => der,
        Err(e) => panic!("bench key PEM: {e}"),
    };
    let raw = match alg {
        Algorithm::EdDsa => Ed25519KeyPair::from_pkcs8(&der).map(Raw::Ed25519).ok(),
        _ => {
            let rng = SystemRandom::new();
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
                .map(|pair| Raw::Es256(pair, rng))
                .ok()
        }
    };
    let Some(raw) = raw else {
        panic!("ring refused the bench key");
    };
    let keyring = match SigningKey::from_pkcs8_pem("2025-06", &pem)
        .and_then(|key| Keyring::new(vec![key, SigningKey::new("2025-01", OLD_SECRET.to_vec())?]))
    {
        Ok(keyring) => keyring,
        Err(e) => panic!("bench keyring: {e}"),
    };
    let token = issue(&keyring, claims, DateFormat::Numeric);
    let Some((input, signature)) = token.rsplit_once('.') else {
        panic!("issued token has no signature segment");
    };
    let signature = match base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
    {
        Ok(signature) => signature,
        Err(e) => panic!("issued signature: {e}"),
    };
    Asymmetric {
        alg,
        keyring,
        signing_input: input.as_bytes().to_vec(),
        token,
        signature,
        raw,
    }
}

fn asymmetric_benches(c: &mut Criterion, f: &Fixture, keys: &[Asymmetric]) {
    for a in keys {
        let mut group = c.benchmark_group(format!("token_{}", a.alg.name().to_lowercase()));
        group.bench_function("raw_sign_floor", |b| {
            b.iter(|| a.raw.sign(black_box(&a.signing_input)))
        });
        group.bench_function("issue", |b| {
            b.iter(|| issue(&a.keyring, black_box(&f.claims), DateFormat::Numeric))
        });
        group.bench_function("raw_verify_floor", |b| {
            b.iter(|| a.raw.verify(black_box(&a.signing_input), black_box(&a.signature)))
        });
        group.bench_function("verify", |b| {
            b.iter(|| verify(&a.keyring, black_box(&a.token), &f.opts))
        });
        group.finish();
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

/// Each asymmetric operation against its raw primitive: the JWT framing (base64, JSON, the key's lookup)
/// should cost little beside the signature itself.
fn print_asymmetric_ratios(f: &Fixture, keys: &[Asymmetric]) {
    for a in keys {
        if verify(&a.keyring, &a.token, &f.opts).is_err() || !a.raw.verify(&a.signing_input, &a.signature) {
            panic!("the {} bench token does not verify", a.alg);
        }
        let sign_floor = time_per_op(|| a.raw.sign(black_box(&a.signing_input)));
        let verify_floor = time_per_op(|| a.raw.verify(black_box(&a.signing_input), black_box(&a.signature)));
        let issue_time = time_per_op(|| issue(&a.keyring, black_box(&f.claims), DateFormat::Numeric));
        let verify_time = time_per_op(|| verify(&a.keyring, black_box(&a.token), &f.opts));
        for (name, time, floor) in [
            ("issue", issue_time, sign_floor),
            ("verify", verify_time, verify_floor),
        ] {
            println!(
                "{:>5} {name:>6}: {:>8.0} ns/op = {:5.2}x the raw {} ({:.0} ns/op)",
                a.alg.name(),
                time.as_nanos(),
                time.as_secs_f64() / floor.as_secs_f64(),
                if name == "issue" { "sign" } else { "verify" },
                floor.as_nanos()
            );
        }
    }
}

fn main() {
    let f = fixture();
    let keys = [
        asymmetric(Algorithm::EdDsa, &f.claims),
        asymmetric(Algorithm::Es256, &f.claims),
    ];
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &f);
    asymmetric_benches(&mut c, &f, &keys);
    c.final_summary();
    // Only a real bench run prints ratios; `cargo test --benches` just smoke-tests the groups above.
    if std::env::args().any(|a| a == "--bench") {
        print_ratios(&f);
        print_asymmetric_ratios(&f, &keys);
    }
}
