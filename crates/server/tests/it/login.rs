//! Getting a token by password and by Web API key, the envelope of every error, and lockout, through the
//! real server on SQLite and PostgreSQL.

use crate::common::{Backend, ORG, PASSWORD, TestApp, USER, header, post, test_keyring};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm_auth_client::Credentials;
use crm_auth_core::{ErrorCode, VerifyOptions, verify};
use crm_auth_server::clock::Clock as _;
use crm_auth_server::service::admin::Actor;
use serde_json::{Value, json};

backend_tests!(
    password_login_issues_a_token_with_the_contract_claims,
    names_match_case_insensitively_and_units_by_id_name_or_code,
    look_alike_spellings_log_into_one_account,
    unit_rules_answer_invalid_unit,
    every_credential_failure_looks_the_same,
    key_login_accepts_what_clients_send,
    key_login_rejects_bad_and_revoked_keys,
    an_expired_key_logs_in_as_an_unknown_key,
    malformed_requests_get_the_envelope,
    lockout_refuses_after_the_threshold_and_backs_off,
    string_dates_are_issued_and_accepted,
    rate_limit_trusts_forwarded_addresses_only_from_trusted_proxies,
);

/// A raw POST, returning status, Retry-After and the parsed envelope.
async fn envelope_of_post(
    url: &str,
    body: impl Into<reqwest::Body>,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    envelope(post(url, None, body).await?).await
}

async fn envelope(res: reqwest::Response) -> anyhow::Result<(u16, Option<String>, Value)> {
    let status = res.status().as_u16();
    let retry = header(&res, "retry-after");
    assert_eq!(header(&res, "content-type").as_deref(), Some("application/json"));
    let body: Value = serde_json::from_slice(&res.bytes().await?)?;
    Ok((status, retry, body))
}

fn code(body: &Value) -> &str {
    body["status"]["code"].as_str().unwrap_or("<none>")
}

async fn password_login_issues_a_token_with_the_contract_claims(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token = app.login().await?;
    let now = app.clock.now();
    let claims = verify(
        &test_keyring()?,
        token.as_str(),
        &VerifyOptions {
            now,
            leeway: 0,
            issuer: "crm-auth".into(),
            accept_legacy: false,
        },
    )?;
    assert_eq!(
        (claims.usr.as_str(), claims.org.as_str(), claims.oun.as_str()),
        (USER, ORG, "Main")
    );
    assert_eq!(claims.iat, now);
    assert_eq!(claims.exp, now + 7200);
    assert_eq!(claims.r#gen, 0);
    assert_eq!(claims.iss.as_deref(), Some("crm-auth"));
    assert_eq!(claims.jti.len(), 32);
    assert!(crm_auth_core::is_id(&claims.jti));
    // The header names the signing key and HS256, in CRM.COM's order.
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_str().split('.').next().unwrap_or(""))?;
    assert_eq!(
        std::str::from_utf8(&header)?,
        r#"{"typ":"JWT","alg":"HS256","kid":"test"}"#
    );
    // The raw envelope is exactly the contract's.
    let body = json!({"username": USER, "password": PASSWORD, "organisation": ORG, "extra": [1, 2]});
    let (status, _, env) = envelope_of_post(&app.api("/authentication/token"), body.to_string()).await?;
    assert_eq!(status, 200);
    assert_eq!(
        env["status"],
        json!({"code": "OK", "description": "", "message": ""})
    );
    assert!(
        env["data"]["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    Ok(())
}

async fn names_match_case_insensitively_and_units_by_id_name_or_code(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token = app
        .client
        .token(&Credentials::password("ALICE", PASSWORD, "aCmE"))
        .await?;
    // The claims carry the names as stored, not as typed.
    assert_eq!(
        (token.claims().usr.as_str(), token.claims().org.as_str()),
        (USER, ORG)
    );
    for unit in [app.main_unit_id.as_str(), "main", "MAIN", "mn"] {
        let token = app
            .client
            .token(&Credentials::password(USER, PASSWORD, ORG).unit(unit))
            .await?;
        assert_eq!(token.claims().oun, "Main", "unit {unit}");
    }
    let token = app
        .client
        .token(&Credentials::password(USER, PASSWORD, ORG).unit("sc"))
        .await?;
    assert_eq!(token.claims().oun, "Second");
    // Empty and null units mean the default.
    for unit in [json!(""), json!(null)] {
        let body = json!({"username": USER, "password": PASSWORD, "organisation": ORG, "unit": unit});
        let (status, _, env) = envelope_of_post(&app.api("/authentication/token"), body.to_string()).await?;
        assert_eq!((status, code(&env)), (200, "OK"));
    }
    Ok(())
}

/// NFKC and full case folding: what a keyboard, an input method or a copy-paste turns a name into still names
/// the same account, and the claims carry the names as created.
async fn look_alike_spellings_log_into_one_account(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    app.add_user("Straße", Some(PASSWORD), &["Main"])?;
    app.add_user("jos\u{e9}", Some(PASSWORD), &["Main"])?;
    app.add_user("admin", Some(PASSWORD), &["Main"])?;
    // Cyrillic `а`: another name under any folding, so another account with its own password.
    app.add_user("\u{430}dmin", Some("another password entirely"), &["Main"])?;
    let cases = [
        ("STRASSE", "Straße"),
        ("strasse", "Straße"),
        ("ＳＴＲＡßＥ", "Straße"),
        ("jose\u{301}", "jos\u{e9}"),
        ("JOSE\u{301}", "jos\u{e9}"),
        ("ａｄｍｉｎ", "admin"),
        ("ＡＤＭＩＮ", "admin"),
    ];
    for (typed, stored) in cases {
        for org in ["ACME", "ａｃｍｅ"] {
            let token = app
                .client
                .token(&Credentials::password(typed, PASSWORD, org).unit("ＭＡＩＮ"))
                .await?;
            assert_eq!(token.claims().usr, stored, "{typed} in {org}");
            assert_eq!(
                (token.claims().org.as_str(), token.claims().oun.as_str()),
                (ORG, "Main")
            );
        }
    }
    let err = app
        .client
        .token(&Credentials::password("\u{430}dmin", PASSWORD, ORG))
        .await
        .err();
    assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::InvalidCredentials));
    let cyrillic = app
        .client
        .token(&Credentials::password(
            "\u{430}DMIN",
            "another password entirely",
            ORG,
        ))
        .await?;
    assert_eq!(cyrillic.claims().usr, "\u{430}dmin");
    Ok(())
}

async fn unit_rules_answer_invalid_unit(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    for unit in ["Other", "Nowhere", "00000000000000000000000000000000"] {
        let err = app
            .client
            .token(&Credentials::password(USER, PASSWORD, ORG).unit(unit))
            .await
            .err();
        assert_eq!(
            err.and_then(|e| e.code()),
            Some(ErrorCode::InvalidUnit),
            "unit {unit}"
        );
    }
    let err = app
        .client
        .token(&Credentials::api_key(&app.key).unit("Other"))
        .await
        .err();
    assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::InvalidUnit));
    let (status, _, env) = envelope_of_post(
        &app.api("/authentication/token"),
        json!({"username": USER, "password": PASSWORD, "organisation": ORG, "unit": "Other"}).to_string(),
    )
    .await?;
    assert_eq!((status, code(&env)), (403, "INVALID_UNIT"));
    Ok(())
}

async fn every_credential_failure_looks_the_same(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    app.add_user("keyonly", None, &["Main"])?;
    let attempts = [
        json!({"username": USER, "password": "wrong", "organisation": ORG}),
        json!({"username": "nobody", "password": PASSWORD, "organisation": ORG}),
        json!({"username": USER, "password": PASSWORD, "organisation": "Nowhere"}),
        json!({"username": "keyonly", "password": "anything", "organisation": ORG}),
    ];
    let mut answers = Vec::new();
    for body in attempts {
        let (status, retry, env) =
            envelope_of_post(&app.api("/authentication/token"), body.to_string()).await?;
        assert_eq!(retry, None);
        answers.push((status, env));
    }
    assert_eq!(answers[0].0, 401);
    assert_eq!(code(&answers[0].1), "INVALID_CREDENTIALS");
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    // A disabled user gets the same answer even with the right password.
    {
        let conn = &mut *app.conn()?;
        let org = crm_auth_server::service::admin::find_organisation(conn, ORG)?;
        let user = crm_auth_server::service::admin::find_user(conn, &org, USER)?;
        crm_auth_server::service::admin::set_user_active(
            conn,
            &Actor::Cli,
            &org,
            &user,
            false,
            app.clock.now(),
        )?;
    }
    let err = app.login().await.err();
    assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::InvalidCredentials));
    let err = app.client.token(&Credentials::api_key(&app.key)).await.err();
    assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::InvalidCredentials));
    Ok(())
}

async fn key_login_accepts_what_clients_send(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token = app.client.token(&Credentials::api_key(&app.key)).await?;
    assert_eq!(
        (token.claims().usr.as_str(), token.claims().oun.as_str()),
        (USER, "Main")
    );
    let url = app.api("/authentication/web_api_key/token");
    let with_colon = STANDARD.encode(format!("{}:", app.key));
    let without_colon = STANDARD.encode(&app.key);
    let http = reqwest::Client::new();
    let variants = [
        format!("Basic {with_colon}"),
        format!("basic {without_colon}"),
        format!("  BASIC   {with_colon}  "),
        format!("Basic {}", with_colon.trim_end_matches('=')),
    ];
    for auth in &variants {
        // POST without a body, with an empty body and a content type, and GET.
        let res = http.post(&url).header("authorization", auth).send().await?;
        assert_eq!(res.status().as_u16(), 200, "{auth}");
        let res = http
            .post(&url)
            .header("authorization", auth)
            .header("content-type", "text/plain")
            .body("")
            .send()
            .await?;
        assert_eq!(res.status().as_u16(), 200, "{auth}");
        let res = http.get(&url).header("authorization", auth).send().await?;
        assert_eq!(res.status().as_u16(), 200, "{auth}");
    }
    // The unit comes from the body on POST and from the query on GET.
    let auth = format!("Basic {with_colon}");
    let (_, _, env) = envelope(
        http.post(&url)
            .header("authorization", &auth)
            .body(r#"{"unit":"SC"}"#)
            .send()
            .await?,
    )
    .await?;
    let token = crm_auth_client::Token::parse(env["data"]["token"].as_str().unwrap_or_default())?;
    assert_eq!(token.claims().oun, "Second");
    let (_, _, env) = envelope(
        http.get(format!("{url}?unit=second"))
            .header("authorization", &auth)
            .send()
            .await?,
    )
    .await?;
    let token = crm_auth_client::Token::parse(env["data"]["token"].as_str().unwrap_or_default())?;
    assert_eq!(token.claims().oun, "Second");
    let token = app
        .client
        .token(&Credentials::api_key(&app.key).unit("Second"))
        .await?;
    assert_eq!(token.claims().oun, "Second");
    Ok(())
}

async fn key_login_rejects_bad_and_revoked_keys(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let url = app.api("/authentication/web_api_key/token");
    let http = reqwest::Client::new();
    let bad = [
        None,
        Some("Bearer abc".to_owned()),
        Some("Basic".to_owned()),
        Some("Basic !!!notbase64".to_owned()),
        Some(format!("Basic {}", STANDARD.encode(":"))),
        Some(format!(
            "Basic {}",
            STANDARD.encode("00000000000000000000000000000000:")
        )),
        Some(format!("Digest {}", STANDARD.encode(format!("{}:", app.key)))),
    ];
    for auth in bad {
        let mut req = http.post(&url);
        if let Some(auth) = &auth {
            req = req.header("authorization", auth);
        }
        let (status, _, env) = envelope(req.send().await?).await?;
        assert_eq!((status, code(&env)), (401, "INVALID_CREDENTIALS"), "{auth:?}");
        assert_eq!(env["data"], json!({}));
    }
    // Revoking the key ends its sessions and refuses it from then on.
    let token = app.client.token(&Credentials::api_key(&app.key)).await?;
    {
        let conn = &mut *app.conn()?;
        let org = crm_auth_server::service::admin::find_organisation(conn, ORG)?;
        let digest = crm_auth_core::digest_key(&app.key);
        let key = crm_auth_server::db::api_key::find_active_by_digest(conn, &digest)?
            .ok_or_else(|| anyhow::anyhow!("key"))?;
        assert_eq!(
            crm_auth_server::service::admin::revoke_key(conn, &Actor::Cli, &org, &key.id, app.clock.now())?,
            1
        );
    }
    let err = app.client.token(&Credentials::api_key(&app.key)).await.err();
    assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::InvalidCredentials));
    let err = app.client.validate(token.as_str()).await.err();
    assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::SessionEnded));
    Ok(())
}

async fn malformed_requests_get_the_envelope(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token_url = app.api("/authentication/token");
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "INVALID_REQUEST"),
        ("[1,2]".into(), 400, "INVALID_REQUEST"),
        ("".into(), 400, "INVALID_REQUEST"),
        (
            json!({"password": PASSWORD, "organisation": ORG}).to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"username": "", "password": PASSWORD, "organisation": ORG}).to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"username": 5, "password": PASSWORD, "organisation": ORG}).to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"username": USER, "password": ["x"], "organisation": ORG}).to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"username": USER, "password": PASSWORD, "organisation": ORG, "unit": 7}).to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"username": "u".repeat(257), "password": PASSWORD, "organisation": ORG}).to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            json!({"username": USER, "password": "p".repeat(1025), "organisation": ORG}).to_string(),
            400,
            "INVALID_REQUEST",
        ),
        ("x".repeat(16 * 1024 + 1), 413, "PAYLOAD_TOO_LARGE"),
    ];
    for (body, want_status, want_code) in cases {
        let shown: String = body.chars().take(60).collect();
        let (status, _, env) = envelope_of_post(&token_url, body).await?;
        assert_eq!((status, code(&env)), (want_status, want_code), "{shown}");
        assert_eq!(env["data"], json!({}));
        assert!(env["status"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        // The description names the field but never echoes a value.
        assert!(!env.to_string().contains(PASSWORD));
    }
    // The password is never echoed, even when it is of the wrong type.
    let (_, _, env) = envelope_of_post(
        &token_url,
        json!({"username": USER, "password": 123456789, "organisation": ORG}).to_string(),
    )
    .await?;
    assert!(!env.to_string().contains("123456789"));
    let http = reqwest::Client::new();
    let routes = [
        (
            "unknown path",
            http.get(app.api("/no/such/path")),
            404,
            "NOT_FOUND",
        ),
        (
            "outside the base path",
            http.get(format!("{}/elsewhere", app.url)),
            404,
            "NOT_FOUND",
        ),
        ("GET token", http.get(&token_url), 405, "METHOD_NOT_ALLOWED"),
        (
            "DELETE validate",
            http.delete(app.api("/authentication/token/validate")),
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for (name, request, want_status, want_code) in routes {
        let (status, _, env) = envelope(request.send().await?).await?;
        assert_eq!((status, code(&env)), (want_status, want_code), "{name}");
    }
    // Nothing above created a session or a counter.
    let conn = &mut *app.conn()?;
    let org = crm_auth_server::service::admin::find_organisation(conn, ORG)?;
    assert!(crm_auth_server::service::admin::list_sessions(conn, &org, None, app.clock.now())?.is_empty());
    Ok(())
}

async fn lockout_refuses_after_the_threshold_and_backs_off(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let wrong = json!({"username": USER, "password": "wrong", "organisation": ORG}).to_string();
    let url = app.api("/authentication/token");
    for _ in 0..5 {
        let (status, _, env) = envelope_of_post(&url, wrong.clone()).await?;
        assert_eq!((status, code(&env)), (401, "INVALID_CREDENTIALS"));
    }
    // Locked: even the right password is refused, without being checked.
    let (status, retry, env) = envelope_of_post(
        &url,
        json!({"username": "ALICE", "password": PASSWORD, "organisation": ORG}).to_string(),
    )
    .await?;
    assert_eq!(
        (status, code(&env), retry.as_deref()),
        (429, "TOO_MANY_ATTEMPTS", Some("1"))
    );
    let err = app
        .login()
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("expected lockout"))?;
    assert_eq!(err.code(), Some(ErrorCode::TooManyAttempts));
    assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(1)));
    // After the delay one more attempt is checked; failing it doubles the delay.
    app.clock.advance(1);
    let (status, _, _) = envelope_of_post(&url, wrong.clone()).await?;
    assert_eq!(status, 401);
    let (status, retry, _) = envelope_of_post(&url, wrong.clone()).await?;
    assert_eq!((status, retry.as_deref()), (429, Some("2")));
    // Other usernames are not affected.
    let (status, _, _) = envelope_of_post(
        &url,
        json!({"username": "bob", "password": "x", "organisation": ORG}).to_string(),
    )
    .await?;
    assert_eq!(status, 401);
    // Success after the delay resets the count.
    app.clock.advance(2);
    app.login().await?;
    for _ in 0..4 {
        assert_eq!(envelope_of_post(&url, wrong.clone()).await?.0, 401);
    }
    app.login().await?;
    Ok(())
}

async fn string_dates_are_issued_and_accepted(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| {
        s.token.date_format = crm_auth_core::DateFormat::String
    })
    .await?;
    let token = app.login().await?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_str().split('.').nth(1).unwrap_or(""))?;
    let payload: Value = serde_json::from_slice(&payload)?;
    assert!(
        payload["exp"].is_string() && payload["iat"].is_string(),
        "{payload}"
    );
    assert_eq!(
        payload["exp"].as_str().map(str::parse::<i64>).transpose()?,
        Some(token.expires_at())
    );
    let session = app.client.validate(token.as_str()).await?;
    assert_eq!(session.expires_at, token.expires_at());
    let refreshed = app.client.refresh(token.as_str()).await?;
    assert_eq!(refreshed.claims().r#gen, 1);
    Ok(())
}

/// Sends key logins from "addresses" named in X-Forwarded-For; returns how many were rate limited.
async fn limited_count(app: &TestApp, forwarded: &[&str]) -> anyhow::Result<usize> {
    let http = reqwest::Client::new();
    let auth = format!("Basic {}", STANDARD.encode(format!("{}:", app.key)));
    let mut limited = 0;
    for addr in forwarded {
        let res = http
            .post(app.api("/authentication/web_api_key/token"))
            .header("authorization", &auth)
            .header("x-forwarded-for", *addr)
            .send()
            .await?;
        let (status, retry, env) = envelope(res).await?;
        match status {
            200 => {}
            429 => {
                assert_eq!(code(&env), "RATE_LIMITED");
                assert!(retry.is_some());
                limited += 1;
            }
            other => anyhow::bail!("unexpected {other}: {env}"),
        }
    }
    Ok(limited)
}

async fn rate_limit_trusts_forwarded_addresses_only_from_trusted_proxies(
    backend: Backend,
) -> anyhow::Result<()> {
    let spread: Vec<String> = (0..8).map(|i| format!("203.0.113.{i}")).collect();
    let spread: Vec<&str> = spread.iter().map(String::as_str).collect();
    // Untrusted peer: X-Forwarded-For is ignored, so eight "different" clients share one bucket of 3 (the
    // test's clock stands still, so the bucket does not refill).
    let app = TestApp::start_with(&backend, |s| {
        s.http.rate_limit.per_second = 1;
        s.http.rate_limit.burst = 3;
    })
    .await?;
    assert_eq!(limited_count(&app, &spread).await?, 5);
    // A second later one more request passes.
    app.clock.advance(1);
    assert_eq!(limited_count(&app, &spread[..2]).await?, 1);
    // Behind a trusted proxy each forwarded address has its own bucket.
    let app = TestApp::start_with(&backend, |s| {
        s.http.rate_limit.per_second = 1;
        s.http.rate_limit.burst = 3;
        s.http.trusted_proxies = vec![[127, 0, 0, 1].into()];
    })
    .await?;
    assert_eq!(limited_count(&app, &spread).await?, 0);
    // A forged hop before the proxy's own cannot escape: the nearest untrusted hop counts.
    let forged: Vec<String> = (0..8).map(|i| format!("198.51.100.{i}, 203.0.113.200")).collect();
    let forged: Vec<&str> = forged.iter().map(String::as_str).collect();
    assert_eq!(limited_count(&app, &forged).await?, 5);
    // Nor can a garbled hop: it is never read, so it does not move the client into the proxy's bucket (which
    // let 6 of 6 attempts through a burst of 3 when one bad entry discarded the whole header).
    let garbled = [
        "203.0.113.201",
        "203.0.113.201",
        "203.0.113.201",
        "junk, 203.0.113.201",
        "203.0.113.201:1, 203.0.113.201",
        "\u{e9}, 203.0.113.201",
    ];
    assert_eq!(limited_count(&app, &garbled).await?, 3);
    // An entry with a port is its address: eight clients behind port-writing proxies are eight buckets.
    let ported: Vec<String> = (0..8).map(|i| format!("192.0.2.{i}:443")).collect();
    let ported: Vec<&str> = ported.iter().map(String::as_str).collect();
    assert_eq!(limited_count(&app, &ported).await?, 0);
    let ported: Vec<String> = (0..8).map(|i| format!("[2001:db8:{i}::1]:443")).collect();
    let ported: Vec<&str> = ported.iter().map(String::as_str).collect();
    assert_eq!(limited_count(&app, &ported).await?, 0);
    // ... and the same client with its ports, and written as IPv4-mapped IPv6, is one bucket.
    let one = [
        "192.0.2.100:1",
        "192.0.2.100:2",
        "::ffff:192.0.2.100",
        "[::ffff:192.0.2.100]:3",
        "192.0.2.100",
        "[::ffff:c000:264]:4",
    ];
    assert_eq!(limited_count(&app, &one).await?, 3);
    // IPv6 clients are one bucket per /64, however many addresses of it they use.
    let rotated: Vec<String> = (1..=8).map(|i| format!("2001:db8:ff:ff::{i:x}")).collect();
    let rotated: Vec<&str> = rotated.iter().map(String::as_str).collect();
    assert_eq!(limited_count(&app, &rotated).await?, 5);
    // An unparsable entry the proxy itself wrote leaves the proxy as the client: one bucket, whatever follows.
    let unknown = ["unknown", "1.2.3.4, unknown", "", "5.6.7.8, "];
    assert_eq!(limited_count(&app, &unknown).await?, 1);
    Ok(())
}

/// A key whose expiry has come gets exactly the answer an unknown key gets (nothing tells an expired key from
/// a wrong one); until then it logs in. The expiry is read from the injected clock.
async fn an_expired_key_logs_in_as_an_unknown_key(backend: Backend) -> anyhow::Result<()> {
    use crm_auth_server::service::admin;
    let app = TestApp::start(&backend).await?;
    let now = app.clock.now();
    let key = {
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, ORG)?;
        let user = admin::find_user(conn, &org, USER)?;
        let details = (Some("expiring"), Some(now + 60));
        admin::create_key(conn, &Actor::Cli, &org, &user, details, now)?.1
    };
    app.client.token(&Credentials::api_key(key.expose())).await?;
    app.clock.advance(59);
    app.client.token(&Credentials::api_key(key.expose())).await?;
    app.clock.advance(1);
    let unknown = crm_auth_core::ApiKey::generate()?;
    let mut answers = Vec::new();
    for presented in [key.expose(), unknown.expose()] {
        let auth = format!("Basic {}", STANDARD.encode(format!("{presented}:")));
        let res = reqwest::Client::new()
            .post(app.api("/authentication/web_api_key/token"))
            .header("authorization", auth)
            .send()
            .await?;
        let (status, _, env) = envelope(res).await?;
        answers.push((status, env));
    }
    assert_eq!(answers[0].0, 401);
    assert_eq!(code(&answers[0].1), "INVALID_CREDENTIALS");
    assert_eq!(answers[0], answers[1], "an expired key answers as an unknown key");
    let err = app.client.token(&Credentials::api_key(key.expose())).await.err();
    assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::InvalidCredentials));
    Ok(())
}
