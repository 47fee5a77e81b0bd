//! Signing algorithms and the JWKS: EdDSA and ES256 end to end beside HS256, the generated key of each
//! algorithm, the JWKS endpoint, forged tokens against a mixed keyring, a migration from HS256, reloads while
//! requests run (in process, and by SIGHUP to the real binary: a bad configuration keeps the old keys, and a
//! rotation on two nodes with a staged `not_before` key fails no request of a client caching the JWKS), and
//! verification by PyJWT from the JWKS alone.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_auth_client::{Client, Credentials, JwksVerifier};
use crm_auth_core::{Algorithm, ErrorCode, Jwks, SigningKey, Verifier, routes};
use crm_auth_server::clock::{Clock as _, SystemClock};
use crm_auth_server::settings::{KeySettings, Settings};
use crm_auth_server::signing::{self, SigningError};
use crm_auth_server::state::AppState;
use ring::hmac;
use serde_json::{Value, json};

use crate::common::server::{ServerProcess, crm_auth, free_port};
use crate::common::{Backend, ORG, PASSWORD, TestApp, TestDb, USER, code, header, seed};

backend_tests!(
    each_algorithm_works_end_to_end,
    forged_tokens_are_refused_by_a_mixed_keyring,
    a_migration_from_hs256_keeps_old_tokens_valid,
    reloads_under_load_fail_no_request,
    a_bad_reload_keeps_the_old_keys_serving,
    a_rotation_on_two_nodes_fails_nothing,
    pyjwt_verifies_tokens_from_the_jwks_alone,
    the_jwks_cache_refetches_sparingly_and_outlives_the_server,
);

/// A new PKCS#8 PEM private key of `alg` in `dir`, named after its id.
fn key_file(dir: &Path, id: &str, alg: Algorithm) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{id}.pem"));
    std::fs::write(&path, SigningKey::generate_pkcs8_pem(alg)?)?;
    Ok(path)
}

fn decode_part(token: &str, index: usize) -> anyhow::Result<Value> {
    let part = token.split('.').nth(index).unwrap_or_default();
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part)?)?)
}

/// The JWKS a server at `url` publishes, with its `Cache-Control`.
async fn jwks_of(url: &str) -> anyhow::Result<(Jwks, Option<String>)> {
    let res = reqwest::get(format!("{url}{}", routes::JWKS)).await?;
    anyhow::ensure!(res.status() == 200, "jwks answered {}", res.status());
    let cache = header(&res, "cache-control");
    Ok((Jwks::from_json(&res.bytes().await?)?, cache))
}

fn kids(jwks: &Jwks) -> Vec<String> {
    jwks.keys.iter().filter_map(|k| k.kid.clone()).collect()
}

async fn each_algorithm_works_end_to_end(backend: Backend) -> anyhow::Result<()> {
    let keys = tempfile::tempdir()?;
    for alg in Algorithm::ALL {
        let configured = match alg {
            Algorithm::Hs256 => KeySettings::hs256("main", "hs256-secret-0123456789abcdefghijklmnop"),
            _ => KeySettings::private_key("main", &key_file(keys.path(), alg.name(), alg)?),
        };
        let app = TestApp::start_with(&backend, |s| {
            s.token.algorithm = Some(alg);
            s.token.keys = vec![configured];
        })
        .await?;
        let (jwks, cache) = jwks_of(&app.url).await?;
        assert_eq!(cache.as_deref(), Some("public, max-age=300"), "{alg}");
        let verifier = Verifier::from_jwks(&jwks, "crm-auth")?;

        for token in [
            app.login().await?,
            app.client.token(&Credentials::api_key(&app.key)).await?,
        ] {
            let header = decode_part(token.as_str(), 0)?;
            assert_eq!(header["alg"], alg.name(), "{alg}");
            assert_eq!(header["kid"], "main", "{alg}");
            assert_eq!(app.client.validate(token.as_str()).await?.username, USER);
            if alg.is_asymmetric() {
                assert_eq!(
                    verifier.verify(token.as_str(), app.clock.now())?.usr,
                    USER,
                    "{alg}"
                );
            } else {
                assert_eq!(jwks, Jwks::default(), "no secret is published");
            }
            let next = app.client.refresh(token.as_str()).await?;
            assert_eq!(decode_part(next.as_str(), 0)?["alg"], alg.name());
            assert_eq!(next.claims().r#gen, 1);
            assert_eq!(app.client.validate(next.as_str()).await?.username, USER);
            app.client.release(next.as_str()).await?;
            assert_eq!(
                code(app.client.validate(next.as_str()).await),
                Some(ErrorCode::SessionEnded),
                "{alg}"
            );
        }
        // The JWKS is at the root, not under the base path.
        let under_base = reqwest::get(app.api(routes::JWKS)).await?;
        assert_eq!(under_base.status(), 404);
    }
    Ok(())
}

#[test]
fn a_key_of_the_chosen_algorithm_is_generated_and_kept() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for alg in [Algorithm::EdDsa, Algorithm::Es256] {
        let dir = tempfile::tempdir()?;
        let mut settings = Settings::for_test(dir.path());
        settings.token.keys.clear();
        settings.token.algorithm = Some(alg);
        let (first, generated) = signing::load_keyring(&settings, 0)?;
        assert!(generated);
        let path = dir.path().join("signing-key");
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{alg}");
        assert!(std::fs::read_to_string(&path)?.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(first.algorithms().next().map(|(_, a)| a), Some(alg));
        // The next start reads the same key.
        let (again, _) = signing::load_keyring(&settings, 0)?;
        assert_eq!(again.jwks(), first.jwks());
        assert_eq!(first.jwks().keys.len(), 1);
        // Another algorithm on the same folder is refused, naming both, rather than replacing the key.
        let other = if alg == Algorithm::EdDsa {
            Algorithm::Es256
        } else {
            Algorithm::EdDsa
        };
        settings.token.algorithm = Some(other);
        let err = signing::load_keyring(&settings, 0).err();
        assert!(
            matches!(err, Some(SigningError::OtherAlgorithm { found, wanted, .. }) if found == alg && wanted == other),
            "{err:?}"
        );
        settings.token.algorithm = None;
        assert!(signing::load_keyring(&settings, 0).is_err(), "HS256 by default");
    }
    // HS256 stays the default, as a base64 secret.
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::for_test(dir.path());
    settings.token.keys.clear();
    let (ring, _) = signing::load_keyring(&settings, 0)?;
    assert_eq!(ring.algorithms().next(), Some(("generated", Algorithm::Hs256)));
    assert!(!std::fs::read_to_string(dir.path().join("signing-key"))?.starts_with("-----"));
    Ok(())
}

/// A key of `token.keys` read from `file`.
fn secret_file_key(id: &str, file: &Path) -> KeySettings {
    KeySettings {
        id: id.to_owned(),
        secret: None,
        secret_file: Some(file.to_owned()),
        private_key_file: None,
        not_before: None,
    }
}

#[test]
fn hs256_key_files_have_one_encoding_shared_with_downstream_services() -> anyhow::Result<()> {
    let claims = crm_auth_core::Claims::new(
        "EE63A82C4FEBE02FF34E90DD1EBA5ABE",
        "alice",
        "Acme",
        "HQ",
        1_700_000_000,
        1_700_007_200,
    )
    .issued_by("crm-auth");
    let verifies = |keyring: &crm_auth_core::Keyring, token: &str| {
        Verifier::new(keyring.clone(), "crm-auth")
            .verify(token, 1_700_000_100)
            .is_ok()
    };
    // The generated key is written with the prefix, and its token verifies with the file moved into
    // token.keys, and with the file read by a downstream service.
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::for_test(dir.path());
    settings.token.keys.clear();
    let (generated, _) = signing::load_keyring(&settings, 0)?;
    let token = crm_auth_core::issue(&generated, &claims, crm_auth_core::DateFormat::Numeric);
    let file = dir.path().join("signing-key");
    assert!(std::fs::read_to_string(&file)?.starts_with("base64:"));
    let moved = dir.path().join("moved-key");
    std::fs::rename(&file, &moved)?;
    settings.token.keys = vec![secret_file_key("generated", &moved)];
    let (configured, generated_used) = signing::load_keyring(&settings, 0)?;
    assert!(!generated_used);
    assert!(verifies(&configured, &token), "the moved file is the same key");
    assert!(verifies(
        &crm_auth_core::Keyring::from_key_file("generated", &moved)?,
        &token
    ));

    // A file of an earlier version (bare base64) still serves as the generated key.
    let old = tempfile::tempdir()?;
    let secret: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(37).wrapping_add(11)).collect();
    std::fs::write(
        old.path().join("signing-key"),
        format!("{}\n", base64::engine::general_purpose::STANDARD.encode(&secret)),
    )?;
    let mut settings = Settings::for_test(old.path());
    settings.token.keys.clear();
    let (from_old, _) = signing::load_keyring(&settings, 0)?;
    let raw = crm_auth_core::Keyring::new(vec![SigningKey::new("generated", secret.clone())?])?;
    let old_token = crm_auth_core::issue(&raw, &claims, crm_auth_core::DateFormat::Numeric);
    assert!(verifies(&from_old, &old_token));

    // A configured file without the prefix is its raw bytes, as it always was, base64-looking or not.
    let raw_file = old.path().join("raw-secret");
    let text = base64::engine::general_purpose::STANDARD.encode(&secret);
    std::fs::write(&raw_file, format!("{text}\r\n"))?;
    settings.token.keys = vec![secret_file_key("raw", &raw_file)];
    let (configured, _) = signing::load_keyring(&settings, 0)?;
    let raw = crm_auth_core::Keyring::new(vec![SigningKey::new("raw", text.into_bytes())?])?;
    let raw_token = crm_auth_core::issue(&raw, &claims, crm_auth_core::DateFormat::Numeric);
    assert!(verifies(&configured, &raw_token));
    assert!(verifies(
        &crm_auth_core::Keyring::from_key_file("raw", &raw_file)?,
        &raw_token
    ));

    // A prefixed file that is not base64 is refused, naming the key.
    std::fs::write(&raw_file, "base64:not base64!\n")?;
    let err = signing::load_keyring(&settings, 0).err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("\"raw\"") && e.contains("base64")),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn bad_key_settings_are_refused_naming_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ed = key_file(dir.path(), "ed", Algorithm::EdDsa)?;
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )?;
    let mut settings = Settings::for_test(dir.path());
    let cases: Vec<(Vec<KeySettings>, Option<Algorithm>, &str)> = vec![
        (
            vec![KeySettings::private_key("bad", &garbage)],
            None,
            "\"bad\" is not a PKCS#8",
        ),
        (
            vec![KeySettings::private_key("gone", &dir.path().join("missing.pem"))],
            None,
            "missing.pem",
        ),
        (
            vec![KeySettings::private_key("ed", &ed)],
            Some(Algorithm::Es256),
            "token.algorithm is ES256 but the first of token.keys, \"ed\", is an EdDSA key",
        ),
        (
            vec![KeySettings {
                not_before: Some("2999-01-01T00:00:00Z".into()),
                ..KeySettings::private_key("ed", &ed)
            }],
            None,
            "one key must sign now",
        ),
        (
            vec![KeySettings {
                not_before: Some("tomorrow".into()),
                ..KeySettings::private_key("ed", &ed)
            }],
            None,
            "not_before must be an RFC 3339 time",
        ),
    ];
    for (keys, algorithm, expected) in cases {
        settings.token.keys = keys;
        settings.token.algorithm = algorithm;
        let err = signing::load_keyring(&settings, SystemClock.now())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(expected), "{err:?} lacks {expected:?}");
    }
    // Exactly one source per key.
    settings.token.keys = vec![KeySettings {
        private_key_file: Some(ed),
        ..KeySettings::hs256("both", "hs256-secret-0123456789abcdefghijklmnop")
    }];
    let err = settings
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("exactly one of secret, secret_file, private_key_file"),
        "{err}"
    );
    Ok(())
}

/// A token with this header over a genuine session's claims, signed by `sign` over the signing input.
fn forge(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

async fn forged_tokens_are_refused_by_a_mixed_keyring(backend: Backend) -> anyhow::Result<()> {
    let keys = tempfile::tempdir()?;
    let ed = key_file(keys.path(), "ed", Algorithm::EdDsa)?;
    let es = key_file(keys.path(), "es", Algorithm::Es256)?;
    let app = TestApp::start_with(&backend, |s| {
        s.token.keys = vec![
            KeySettings::private_key("ed", &ed),
            KeySettings::private_key("es", &es),
            KeySettings::hs256("hs", "hs256-secret-0123456789abcdefghijklmnop"),
        ]
    })
    .await?;
    let genuine = app.login().await?;
    let claims = decode_part(genuine.as_str(), 1)?;
    let (jwks, _) = jwks_of(&app.url).await?;
    assert_eq!(kids(&jwks), ["ed", "es"]);
    let ed_public = URL_SAFE_NO_PAD.decode(jwks.keys[0].x.clone().unwrap_or_default())?;
    let es_point = [
        &[4u8][..],
        &URL_SAFE_NO_PAD.decode(jwks.keys[1].x.clone().unwrap_or_default())?,
        &URL_SAFE_NO_PAD.decode(jwks.keys[1].y.clone().unwrap_or_default())?,
    ]
    .concat();

    let mut forged = Vec::new();
    for kid in ["ed", "es", "hs"] {
        forged.push(forge(&json!({"alg": "none", "kid": kid}), &claims, |_| {
            Vec::new()
        }));
        forged.push(forge(&json!({"alg": "none", "typ": "JWT"}), &claims, |_| {
            Vec::new()
        }));
    }
    // HS256 under the public keys' bytes, their JWK text, and the PEM-free base64: what a verifier that let the
    // token choose the algorithm would check the HMAC against.
    let secrets = [
        ed_public.clone(),
        es_point.clone(),
        serde_json::to_vec(&jwks.keys[0])?,
        jwks.keys[0].x.clone().unwrap_or_default().into_bytes(),
    ];
    for secret in &secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        for kid in [Some("ed"), Some("es"), None] {
            let header = match kid {
                Some(kid) => json!({"typ": "JWT", "alg": "HS256", "kid": kid}),
                None => json!({"typ": "JWT", "alg": "HS256"}),
            };
            forged.push(forge(&header, &claims, |input| {
                hmac::sign(&key, input).as_ref().to_vec()
            }));
        }
    }
    // A kid naming another algorithm's key: the genuine EdDSA signature under headers naming the others.
    let signature = genuine.as_str().rsplit('.').next().unwrap_or_default();
    let body = genuine.as_str().split('.').nth(1).unwrap_or_default();
    for header in [
        json!({"typ": "JWT", "alg": "EdDSA", "kid": "es"}),
        json!({"typ": "JWT", "alg": "EdDSA", "kid": "hs"}),
        json!({"typ": "JWT", "alg": "ES256", "kid": "ed"}),
        json!({"typ": "JWT", "alg": "EdDSA", "kid": "unknown"}),
        json!({"typ": "JWT", "alg": "RS256", "kid": "ed"}),
    ] {
        forged.push(format!(
            "{}.{body}.{signature}",
            URL_SAFE_NO_PAD.encode(header.to_string())
        ));
    }
    for token in &forged {
        let header = decode_part(token, 0)?;
        assert_eq!(
            code(app.client.validate(token).await),
            Some(ErrorCode::InvalidToken),
            "validate {header}"
        );
        assert_eq!(
            code(app.client.refresh(token).await),
            Some(ErrorCode::InvalidToken),
            "refresh {header}"
        );
    }
    // None of them touched the session.
    assert_eq!(app.client.validate(genuine.as_str()).await?.username, USER);
    Ok(())
}

async fn a_migration_from_hs256_keeps_old_tokens_valid(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let old = app.login().await?;
    assert_eq!(decode_part(old.as_str(), 0)?["alg"], "HS256");
    let keys = tempfile::tempdir()?;
    let ed = key_file(keys.path(), "ed", Algorithm::EdDsa)?;
    // The configuration of the migration: the EdDSA key first, the HS256 key kept for the tokens it signed.
    let migrated = app.node_with(|s| {
        s.token.algorithm = Some(Algorithm::EdDsa);
        s.token.keys.insert(0, KeySettings::private_key("ed", &ed));
    })?;
    let client = migrated.client()?;
    assert_eq!(client.validate(old.as_str()).await?.username, USER);
    let new = client.token(&Credentials::password(USER, PASSWORD, ORG)).await?;
    assert_eq!(decode_part(new.as_str(), 0)?["alg"], "EdDSA");
    let refreshed = client.refresh(old.as_str()).await?;
    assert_eq!(decode_part(refreshed.as_str(), 0)?["kid"], "ed");
    assert_eq!(client.validate(refreshed.as_str()).await?.username, USER);
    // The old node, still on HS256 alone, knows nothing of the new key.
    assert_eq!(
        code(app.client.validate(new.as_str()).await),
        Some(ErrorCode::InvalidToken)
    );
    Ok(())
}

async fn reloads_under_load_fail_no_request(backend: Backend) -> anyhow::Result<()> {
    let keys = tempfile::tempdir()?;
    let a = key_file(keys.path(), "a", Algorithm::EdDsa)?;
    let b = key_file(keys.path(), "b", Algorithm::Es256)?;
    let app = TestApp::start_with(&backend, |s| {
        s.token.keys = vec![KeySettings::private_key("a", &a)]
    })
    .await?;
    let token = app.login().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, token) = (app.client.clone(), token.as_str().to_owned());
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if client.validate(&token).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Keys swapped back and forth while validations run; `a` stays configured throughout.
    let settings = (*app.state.settings).clone();
    let with_b = Settings {
        token: crm_auth_server::settings::TokenSettings {
            keys: vec![
                KeySettings::private_key("b", &b),
                KeySettings::private_key("a", &a),
            ],
            ..settings.token.clone()
        },
        ..settings.clone()
    };
    for round in 0..200 {
        let loaded = if round % 2 == 0 { &with_b } else { &settings };
        app.state
            .keys
            .reload(&app.state.settings, loaded, app.clock.now())?;
        tokio::task::yield_now().await;
    }
    while done.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    Ok(())
}

/// The real binary with a configuration file, on a database seeded in this process; its log on stderr is
/// read when it is stopped.
struct Binary {
    server: ServerProcess,
    url: String,
    client: Client,
}

impl Binary {
    async fn start(db: &TestDb, config: &Path) -> anyhow::Result<Binary> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut command = crm_auth(db.dir.path(), &db.url);
        command
            .arg("serve")
            .env("CRM_AUTH_CONFIG", config)
            .env("RUST_LOG", "warn,crm_auth_server::signing=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut server = ServerProcess::spawn(command, port)?;
        let client = Client::builder().base_url(&url).build()?;
        server.wait_ready(&client).await?;
        Ok(Binary { server, url, client })
    }

    /// Sends SIGHUP and waits until the JWKS lists `kids`.
    async fn reload(&self, kids_expected: &[&str]) -> anyhow::Result<()> {
        self.server.signal("HUP")?;
        for _ in 0..200 {
            if kids(&jwks_of(&self.url).await?.0) == kids_expected {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("the JWKS did not become {kids_expected:?}")
    }

    /// Stops the server and returns its log.
    fn stop(mut self) -> anyhow::Result<String> {
        self.server.kill()?;
        let mut log = String::new();
        if let Some(mut stderr) = self.server.child.stderr.take() {
            stderr.read_to_string(&mut log)?;
        }
        Ok(log)
    }
}

/// A configuration file of `[[token.keys]]` entries (id, file, optional not_before) and a few token settings.
fn write_config(path: &Path, keys: &[(&str, &Path, Option<i64>)], token: &str) -> anyhow::Result<()> {
    let mut text = format!("[token]\n{token}\n");
    for (id, file, not_before) in keys {
        text.push_str(&format!(
            "[[token.keys]]\nid = \"{id}\"\nprivate_key_file = \"{}\"\n",
            file.display()
        ));
        if let Some(at) = not_before {
            let at = jiff::Timestamp::from_second(*at)?;
            text.push_str(&format!("not_before = \"{at}\"\n"));
        }
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// A database of its own, seeded; returns it with alice's key.
fn seeded(backend: &Backend) -> anyhow::Result<(TestDb, String)> {
    let db = TestDb::new(backend)?;
    let key = {
        let state = AppState::build(db.settings(), Arc::new(SystemClock))?;
        seed(&state, SystemClock.now())?.0
    };
    Ok((db, key))
}

async fn a_bad_reload_keeps_the_old_keys_serving(backend: Backend) -> anyhow::Result<()> {
    let (db, key) = seeded(&backend)?;
    let dir = db.dir.path();
    let ed = key_file(dir, "ed", Algorithm::EdDsa)?;
    let config = dir.join("crm-auth.toml");
    write_config(&config, &[("ed", &ed, None)], "")?;
    let server = Binary::start(&db, &config).await?;
    let token = server.client.token(&Credentials::api_key(&key)).await?;
    let before = jwks_of(&server.url).await?.0;

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key")?;
    let bad_configs: [&dyn Fn() -> anyhow::Result<()>; 3] = [
        &|| write_config(&config, &[("bad", &garbage, None), ("ed", &ed, None)], ""),
        &|| write_config(&config, &[("ed", &ed, Some(SystemClock.now() + 86_400))], ""),
        &|| Ok(std::fs::write(&config, "[token]\nunknown_key = 1\n")?),
    ];
    for write in bad_configs {
        write()?;
        server.server.signal("HUP")?;
        // Served all along with the old keys.
        for _ in 0..20 {
            assert_eq!(server.client.validate(token.as_str()).await?.username, USER);
            assert_eq!(jwks_of(&server.url).await?.0, before);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let fresh = server.client.token(&Credentials::api_key(&key)).await?;
        assert_eq!(decode_part(fresh.as_str(), 0)?["kid"], "ed");
    }
    let log = server.stop()?;
    let refusals = log
        .lines()
        .filter(|l| l.contains("signing keys not reloaded"))
        .count();
    assert_eq!(refusals, 3, "one line per refused reload:\n{log}");
    let pem = std::fs::read_to_string(&ed)?;
    let material = pem.lines().nth(1).unwrap_or("-");
    assert!(!log.contains(material), "no key material in the log");
    Ok(())
}

/// What the rotation's clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    kids: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// Logs in on one node, validates on the other and offline through the caching verifier, refreshes, and
/// validates the refreshed token likewise, until `stop`.
async fn rotation_client(
    nodes: [Client; 2],
    key: String,
    verifier: JwksVerifier,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        let (a, b) = (&nodes[turn % 2], &nodes[(turn + 1) % 2]);
        let outcome: anyhow::Result<()> = async {
            let token = a.token(&Credentials::api_key(&key)).await?;
            b.validate(token.as_str()).await?;
            verifier.verify(token.as_str()).await?;
            let next = b.refresh(token.as_str()).await?;
            a.validate(next.as_str()).await?;
            verifier.verify(next.as_str()).await?;
            let kid = decode_part(next.as_str(), 0)?["kid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            tally
                .kids
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .insert(kid);
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                eprintln!("rotation client: {e}");
                tally.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

async fn a_rotation_on_two_nodes_fails_nothing(backend: Backend) -> anyhow::Result<()> {
    const TTL: i64 = 3;
    let (db, key) = seeded(&backend)?;
    let dir = db.dir.path();
    let old = key_file(dir, "old", Algorithm::Es256)?;
    let new = key_file(dir, "new", Algorithm::EdDsa)?;
    let token_settings = format!("ttl_seconds = {TTL}\nleeway_seconds = 0");
    let config = dir.join("crm-auth.toml");
    write_config(&config, &[("old", &old, None)], &token_settings)?;
    let nodes = [
        Binary::start(&db, &config).await?,
        Binary::start(&db, &config).await?,
    ];

    // A downstream service caching the JWKS (one node's; they publish the same set), renewed by age well
    // within the staging time, as `max-age=300` is within a staging of more than five minutes in production.
    let verifier = JwksVerifier::for_server(&nodes[0].url)
        .max_age(Duration::from_millis(500))
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients = [nodes[0].client.clone(), nodes[1].client.clone()];
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(rotation_client(
                clients.clone(),
                key.clone(),
                verifier.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. The new key is staged: published at once, signing two seconds later.
    let not_before = SystemClock.now() + 2;
    write_config(
        &config,
        &[("new", &new, Some(not_before)), ("old", &old, None)],
        &token_settings,
    )?;
    for node in &nodes {
        node.reload(&["new", "old"]).await?;
    }
    // 2. Once it signs and a token lifetime has passed, the old key goes.
    while SystemClock.now() <= not_before + TTL {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    write_config(&config, &[("new", &new, Some(not_before))], &token_settings)?;
    for node in &nodes {
        node.reload(&["new"]).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }

    let fresh = nodes[1].client.token(&Credentials::api_key(&key)).await?;
    assert_eq!(decode_part(fresh.as_str(), 0)?["alg"], "EdDSA");
    let seen = tally
        .kids
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["new", "old"]);
    assert!(tally.ok.load(Ordering::Relaxed) > 10, "the clients ran");
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "no failed validation or refresh"
    );
    for node in nodes {
        let log = node.stop()?;
        assert_eq!(log.matches("signing keys reloaded").count(), 2, "{log}");
    }
    Ok(())
}

/// The folder holding PyJWT with `cryptography`, installed under the target folder when missing (`.ci/run`
/// installs it beforehand).
fn pyjwt_path() -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("pyjwt");
    let probe = |dir: &Path| {
        std::process::Command::new("python3")
            .args(["-c", "import jwt, cryptography"])
            .env("PYTHONPATH", dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !probe(&dir) {
        let status = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .arg(PYJWT)
            .status()?;
        anyhow::ensure!(status.success(), "pip could not install {PYJWT}");
    }
    anyhow::ensure!(probe(&dir), "PyJWT does not import from {}", dir.display());
    Ok(dir)
}

/// The PyJWT release the test verifies with; `.ci/run` installs the same.
const PYJWT: &str = "pyjwt[crypto]==2.10.1";

/// Verifies each token with PyJWT's `PyJWKClient` from the JWKS URL alone and prints its `usr` claims.
const PYJWT_SCRIPT: &str = r#"
import sys, jwt
client = jwt.PyJWKClient(sys.argv[1])
for token in sys.argv[2:]:
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["EdDSA", "ES256"], issuer="crm-auth",
                        options={"require": ["exp", "iat", "iss"]})
    print(jwt.get_unverified_header(token)["alg"], claims["usr"])
try:
    jwt.decode(sys.argv[2][:-4] + "AAAA", client.get_signing_key_from_jwt(sys.argv[2]).key,
               algorithms=["EdDSA", "ES256"], issuer="crm-auth")
    print("forgery accepted")
except jwt.InvalidSignatureError:
    print("forgery refused")
"#;

/// Writes an Ed25519 and a P-256 private key as PyCA's `cryptography` writes PKCS#8 PEM (an Ed25519 key without
/// its public half, as OpenSSL writes it too), so the server is shown to read keys it did not make.
const PYCA_KEYS_SCRIPT: &str = r#"
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
pem = lambda key: key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
open(sys.argv[1], "wb").write(pem(ed25519.Ed25519PrivateKey.generate()))
open(sys.argv[2], "wb").write(pem(ec.generate_private_key(ec.SECP256R1())))
"#;

async fn pyjwt_verifies_tokens_from_the_jwks_alone(backend: Backend) -> anyhow::Result<()> {
    let python_path = pyjwt_path()?;
    let keys = tempfile::tempdir()?;
    let (ed, es) = (keys.path().join("ed.pem"), keys.path().join("es.pem"));
    let made = std::process::Command::new("python3")
        .args(["-c", PYCA_KEYS_SCRIPT])
        .args([&ed, &es])
        .env("PYTHONPATH", &python_path)
        .output()?;
    anyhow::ensure!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let app = TestApp::start_with(&backend, |s| {
        s.token.keys = vec![
            KeySettings::private_key("ed", &ed),
            KeySettings::private_key("es", &es),
        ]
    })
    .await?;
    let ed_token = app.login().await?;
    // The same database behind a node signing with the ES256 key.
    let es_node = app.node_with(|s| s.token.keys.reverse())?;
    let es_token = es_node
        .client()?
        .token(&Credentials::password(USER, PASSWORD, ORG))
        .await?;
    // PyJWT checks `exp` and `iat` against the real clock.
    let (ed_token, es_token) = (ed_token.as_str().to_owned(), es_token.as_str().to_owned());
    let url = format!("{}{}", app.url, routes::JWKS);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", PYJWT_SCRIPT, &url, &ed_token, &es_token])
            .env("PYTHONPATH", python_path)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout, format!("EdDSA {USER}\nES256 {USER}\nforgery refused\n"));
    Ok(())
}

async fn the_jwks_cache_refetches_sparingly_and_outlives_the_server(backend: Backend) -> anyhow::Result<()> {
    let keys = tempfile::tempdir()?;
    let ed = key_file(keys.path(), "ed", Algorithm::EdDsa)?;
    let app = TestApp::start_with(&backend, |s| {
        s.token.keys = vec![KeySettings::private_key("ed", &ed)]
    })
    .await?;
    let token = app.login().await?;
    let stranger = crm_auth_core::issue(
        &crm_auth_core::Keyring::new(vec![SigningKey::from_pkcs8_pem(
            "stranger",
            &SigningKey::generate_pkcs8_pem(Algorithm::EdDsa)?,
        )?])?,
        token.claims(),
        crm_auth_core::DateFormat::Numeric,
    );

    // Default intervals: one fetch, then unknown kids are refused from the set held, without a request each.
    let verifier = JwksVerifier::for_server(&app.url).build()?;
    assert_eq!(verifier.verify(token.as_str()).await?.usr, USER);
    for _ in 0..20 {
        let refused = verifier.verify(&stranger).await.err();
        assert_eq!(refused.map(|e| e.code()), Some(ErrorCode::InvalidToken));
    }
    assert_eq!(verifier.fetch_count().await, 1);

    // Past the interval an unknown kid fetches again, once for a burst of them.
    let eager = JwksVerifier::for_server(&app.url)
        .refetch_interval(Duration::from_millis(300))
        .build()?;
    eager.verify(token.as_str()).await?;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let burst: Vec<_> = (0..8).map(|_| eager.verify(&stranger)).collect();
    for result in futures_util::future::join_all(burst).await {
        assert!(result.is_err());
    }
    assert_eq!(eager.fetch_count().await, 2);

    // The server gone, the last good set still verifies, even once it is past its age.
    let aging = JwksVerifier::for_server(&app.url)
        .max_age(Duration::from_millis(100))
        .refetch_interval(Duration::from_millis(100))
        .fetch_timeout(Duration::from_millis(300))
        .build()?;
    aging.verify(token.as_str()).await?;
    let url = app.url.clone();
    drop(app);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        reqwest::get(format!("{url}{}", routes::JWKS)).await.is_err(),
        "the server is down"
    );
    assert_eq!(aging.verify(token.as_str()).await?.usr, USER);
    assert!(aging.fetch_count().await >= 2, "it tried again");

    // A server that accepts and never answers costs one bounded wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let never = JwksVerifier::for_server(&format!("http://{}", silent.local_addr()?))
        .fetch_timeout(Duration::from_millis(300))
        .build()?;
    let started = tokio::time::Instant::now();
    let err = never.verify(token.as_str()).await.err();
    assert_eq!(err.map(|e| e.code()), Some(ErrorCode::Unavailable));
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}
