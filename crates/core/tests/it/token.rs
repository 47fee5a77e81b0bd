//! Issuing and verifying tokens: every reason a token is refused, key rotation and CRM.COM's own tokens.

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_auth_core::token::{
    Claims, DateFormat, Keyring, SigningKey, TokenError, Verifier, VerifyOptions, decode_unverified, issue,
    verify, verify_ignoring_expiry,
};
use crm_auth_core::{ErrorCode, MAX_TOKEN_BYTES};
use ring::hmac;

const SECRET_1: &[u8] = b"first-secret-0123456789abcdefghijklmnop";
const SECRET_2: &[u8] = b"second-secret-0123456789abcdefghijklmno";
const NOW: i64 = 1_750_000_000;
const ISSUER: &str = "crm-auth";

/// CRM.COM's published sample token (string dates, no `kid`, no `iss`, no `gen`).
const CRM_SAMPLE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJ1c3IiOiJNUEFkbWluaXN0cmF0b3IiLCJvcmciOiJwc19yMTNxYSIsIm91biI6IjEiLCJleHAiOiIxNDk1NzIwNTgyIiwiaWF0IjoiMTQ5NTcxMzM4MiIsImp0aSI6IkM5NzI5NDlFOEZGMTRFMjI5RjU4MjkxQUJFM0MyNjYzIn0.6-9y-NTFoxjYDcnZb_Z6gVgFwPdvV82nIpuGTQ3v0wQ";

fn ring_of(keys: &[(&str, &[u8])]) -> Result<Keyring> {
    let keys = keys
        .iter()
        .map(|(id, secret)| SigningKey::new(*id, secret.to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Keyring::new(keys)?)
}

fn keyring() -> Result<Keyring> {
    ring_of(&[("k1", SECRET_1)])
}

fn claims() -> Claims {
    Claims::new(
        "EE63A82C4FEBE02FF34E90DD1EBA5ABE",
        "admin",
        "demo",
        "HQ",
        NOW,
        NOW + 7200,
    )
    .issued_by(ISSUER)
}

fn opts(now: i64) -> VerifyOptions {
    VerifyOptions {
        now,
        leeway: 30,
        issuer: ISSUER.into(),
        accept_legacy: false,
    }
}

fn legacy_opts(now: i64) -> VerifyOptions {
    VerifyOptions {
        accept_legacy: true,
        ..opts(now)
    }
}

/// A token with exactly this header and payload JSON, signed with HMAC-SHA256 under `secret`.
fn craft(header: &str, payload: &str, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

const HEADER_K1: &str = r#"{"typ":"JWT","alg":"HS256","kid":"k1"}"#;

fn payload(iat: &str, exp: &str) -> String {
    format!(
        r#"{{"jti":"EE63A82C4FEBE02FF34E90DD1EBA5ABE","usr":"admin","org":"demo","oun":"HQ","iat":{iat},"exp":{exp},"iss":"crm-auth","gen":0}}"#
    )
}

fn segment(token: &str, i: usize) -> Result<String> {
    let seg = token
        .split('.')
        .nth(i)
        .ok_or_else(|| anyhow::anyhow!("no segment {i}"))?;
    Ok(String::from_utf8(URL_SAFE_NO_PAD.decode(seg)?)?)
}

#[test]
fn round_trips_in_both_date_formats() -> Result<()> {
    let ring = keyring()?;
    for format in [DateFormat::Numeric, DateFormat::String] {
        let token = issue(&ring, &claims(), format);
        assert_eq!(verify(&ring, &token, &opts(NOW))?, claims());
        assert_eq!(decode_unverified(&token)?, claims());
    }
    Ok(())
}

#[test]
fn header_and_payload_are_exact() -> Result<()> {
    let ring = keyring()?;
    let numeric = issue(&ring, &claims(), DateFormat::Numeric);
    assert_eq!(segment(&numeric, 0)?, HEADER_K1);
    assert_eq!(
        segment(&numeric, 1)?,
        payload(&NOW.to_string(), &(NOW + 7200).to_string())
    );
    let string = issue(&ring, &claims(), DateFormat::String);
    assert_eq!(
        segment(&string, 1)?,
        payload(&format!("\"{NOW}\""), &format!("\"{}\"", NOW + 7200))
    );
    Ok(())
}

#[test]
fn issue_matches_an_independent_hs256() -> Result<()> {
    let ring = keyring()?;
    let expected = craft(HEADER_K1, &claims().to_json(DateFormat::Numeric), SECRET_1);
    assert_eq!(issue(&ring, &claims(), DateFormat::Numeric), expected);
    Ok(())
}

#[test]
fn issue_is_deterministic_and_gen_makes_tokens_distinct() -> Result<()> {
    // Concurrent refreshes must be handed the very same token.
    let ring = keyring()?;
    let a = issue(&ring, &claims(), DateFormat::Numeric);
    assert_eq!(a, issue(&ring, &claims(), DateFormat::Numeric));
    let next = {
        let mut c = claims();
        c.r#gen = 1;
        c
    };
    assert_ne!(a, issue(&ring, &next, DateFormat::Numeric));
    Ok(())
}

#[test]
fn rejects_other_algorithms_before_touching_a_key() -> Result<()> {
    let ring = keyring()?;
    let body = payload(&NOW.to_string(), &(NOW + 60).to_string());
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(&body)
    );
    assert_eq!(
        verify(&ring, &unsigned, &opts(NOW)),
        Err(TokenError::WrongAlgorithm)
    );
    for header in [
        r#"{"typ":"JWT","alg":"none"}"#,
        r#"{"typ":"JWT","alg":"HS512","kid":"k1"}"#,
        r#"{"typ":"JWT","alg":"RS256","kid":"k1"}"#,
        r#"{"typ":"JWT","alg":"hs256","kid":"k1"}"#,
        r#"{"typ":"JWT","alg":"HS256 ","kid":"k1"}"#,
        r#"{"typ":"JWT","kid":"k1"}"#,
        r#"{"typ":"JWT","alg":null}"#,
        // The unknown kid is not looked at: the algorithm is refused first.
        r#"{"typ":"JWT","alg":"HS384","kid":"nope"}"#,
    ] {
        // Signed with the right secret, so only the algorithm is wrong.
        let token = craft(header, &body, SECRET_1);
        assert_eq!(
            verify(&ring, &token, &legacy_opts(NOW)),
            Err(TokenError::WrongAlgorithm),
            "{header}"
        );
    }
    Ok(())
}

#[test]
fn typ_if_present_must_be_jwt() -> Result<()> {
    let ring = keyring()?;
    let body = payload(&NOW.to_string(), &(NOW + 60).to_string());
    let lower = craft(r#"{"typ":"jwt","alg":"HS256","kid":"k1"}"#, &body, SECRET_1);
    assert!(verify(&ring, &lower, &opts(NOW)).is_ok());
    let absent = craft(r#"{"alg":"HS256","kid":"k1"}"#, &body, SECRET_1);
    assert!(verify(&ring, &absent, &opts(NOW)).is_ok());
    let other = craft(r#"{"typ":"JWE","alg":"HS256","kid":"k1"}"#, &body, SECRET_1);
    assert_eq!(verify(&ring, &other, &opts(NOW)), Err(TokenError::Malformed));
    Ok(())
}

#[test]
fn rejects_a_token_signed_with_another_secret() -> Result<()> {
    let ring = keyring()?;
    let forged = ring_of(&[("k1", SECRET_2)])?;
    let token = issue(&forged, &claims(), DateFormat::Numeric);
    assert_eq!(verify(&ring, &token, &opts(NOW)), Err(TokenError::BadSignature));
    Ok(())
}

#[test]
fn rejects_tampering() -> Result<()> {
    let ring = keyring()?;
    let token = issue(&ring, &claims(), DateFormat::Numeric);
    let parts: Vec<&str> = token.split('.').collect();

    let admin = {
        let mut c = claims();
        c.usr = "root".into();
        c
    };
    let payload = URL_SAFE_NO_PAD.encode(admin.to_json(DateFormat::Numeric));
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"HS256","kid":"k1","x":1}"#);
    for (name, tampered) in [
        ("payload", format!("{}.{payload}.{}", parts[0], parts[2])),
        ("header", format!("{header}.{}.{}", parts[1], parts[2])),
        ("no signature", format!("{}.{}.", parts[0], parts[1])),
        (
            "short signature",
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..42]),
        ),
        (
            "long signature",
            format!("{}.{}.{}A", parts[0], parts[1], parts[2]),
        ),
    ] {
        assert_eq!(
            verify(&ring, &tampered, &opts(NOW)),
            Err(TokenError::BadSignature),
            "{name}"
        );
    }
    Ok(())
}

#[test]
fn rejects_missing_or_ill_typed_dates_even_when_signed() -> Result<()> {
    let ring = keyring()?;
    let now = NOW.to_string();
    let later = (NOW + 60).to_string();
    let missing_exp = r#"{"jti":"J","usr":"U","org":"O","oun":"N","iat":1,"iss":"crm-auth"}"#.to_owned();
    let missing_iat = r#"{"jti":"J","usr":"U","org":"O","oun":"N","exp":1,"iss":"crm-auth"}"#.to_owned();
    let mut bodies = vec![missing_exp, missing_iat];
    for bad in [
        "1.75e9",
        "1750000060.0",
        "-1",
        r#""-1""#,
        r#""17500000x0""#,
        r#""""#,
        "null",
        "true",
    ] {
        bodies.push(payload(&now, bad));
        bodies.push(payload(bad, &later));
    }
    for body in bodies {
        let token = craft(HEADER_K1, &body, SECRET_1);
        assert_eq!(
            verify(&ring, &token, &opts(NOW)),
            Err(TokenError::Malformed),
            "{body}"
        );
        assert_eq!(
            verify_ignoring_expiry(&ring, &token, &opts(NOW)),
            Err(TokenError::Malformed),
            "{body}"
        );
        assert_eq!(decode_unverified(&token), Err(TokenError::Malformed), "{body}");
    }
    Ok(())
}

#[test]
fn rejects_claims_that_are_not_an_object() -> Result<()> {
    let ring = keyring()?;
    for body in [
        "[]",
        r#"["J","U","O","N",1,2,"crm-auth",0]"#,
        "null",
        "{",
        "",
        "{}",
    ] {
        let token = craft(HEADER_K1, body, SECRET_1);
        assert_eq!(
            verify(&ring, &token, &opts(NOW)),
            Err(TokenError::Malformed),
            "{body}"
        );
    }
    Ok(())
}

#[test]
fn expiry_honours_the_leeway() -> Result<()> {
    let ring = keyring()?;
    let c = claims();
    let token = issue(&ring, &c, DateFormat::Numeric);
    // Within the leeway: up to and including exp + leeway.
    assert!(verify(&ring, &token, &opts(c.exp)).is_ok());
    assert!(verify(&ring, &token, &opts(c.exp + 30)).is_ok());
    assert_eq!(verify(&ring, &token, &opts(c.exp + 31)), Err(TokenError::Expired));
    let strict = VerifyOptions {
        leeway: 0,
        ..opts(c.exp + 1)
    };
    assert_eq!(verify(&ring, &token, &strict), Err(TokenError::Expired));
    // Release and refresh still see the claims.
    assert_eq!(verify_ignoring_expiry(&ring, &token, &opts(c.exp + 100_000))?, c);
    Ok(())
}

#[test]
fn expired_is_reported_before_the_issuer() -> Result<()> {
    let ring = keyring()?;
    let c = {
        let mut c = claims();
        c.iss = Some("other".into());
        c
    };
    let token = issue(&ring, &c, DateFormat::Numeric);
    assert_eq!(verify(&ring, &token, &opts(c.exp + 31)), Err(TokenError::Expired));
    assert_eq!(
        verify_ignoring_expiry(&ring, &token, &opts(c.exp + 31)),
        Err(TokenError::WrongIssuer)
    );
    Ok(())
}

#[test]
fn iat_may_not_lie_in_the_future() -> Result<()> {
    let ring = keyring()?;
    let token = issue(&ring, &claims(), DateFormat::Numeric);
    assert!(verify(&ring, &token, &opts(NOW - 30)).is_ok());
    assert_eq!(
        verify(&ring, &token, &opts(NOW - 31)),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        verify_ignoring_expiry(&ring, &token, &opts(NOW - 31)),
        Err(TokenError::NotYetValid)
    );
    Ok(())
}

#[test]
fn extreme_times_do_not_overflow() -> Result<()> {
    let ring = keyring()?;
    let c = {
        let mut c = claims();
        c.iat = 0;
        c.exp = i64::MAX;
        c
    };
    let token = issue(&ring, &c, DateFormat::String);
    let far = VerifyOptions {
        leeway: u64::MAX,
        ..opts(i64::MAX)
    };
    assert_eq!(verify(&ring, &token, &far)?, c);
    assert!(verify(&ring, &token, &opts(i64::MIN)).is_err());
    Ok(())
}

#[test]
fn issuer_must_match() -> Result<()> {
    let ring = keyring()?;
    let other = {
        let mut c = claims();
        c.iss = Some("someone-else".into());
        c
    };
    let token = issue(&ring, &other, DateFormat::Numeric);
    assert_eq!(verify(&ring, &token, &opts(NOW)), Err(TokenError::WrongIssuer));
    // accept_legacy concerns tokens without iss, not tokens of another issuer.
    assert_eq!(
        verify(&ring, &token, &legacy_opts(NOW)),
        Err(TokenError::WrongIssuer)
    );
    Ok(())
}

#[test]
fn missing_issuer_passes_only_as_legacy() -> Result<()> {
    let ring = keyring()?;
    let legacy = {
        let mut c = claims();
        c.iss = None;
        c
    };
    let token = issue(&ring, &legacy, DateFormat::String);
    assert_eq!(verify(&ring, &token, &opts(NOW)), Err(TokenError::WrongIssuer));
    assert_eq!(verify(&ring, &token, &legacy_opts(NOW))?, legacy);
    Ok(())
}

#[test]
fn unknown_kid_is_refused() -> Result<()> {
    let ring = keyring()?;
    let body = payload(&NOW.to_string(), &(NOW + 60).to_string());
    let token = craft(r#"{"typ":"JWT","alg":"HS256","kid":"k9"}"#, &body, SECRET_1);
    assert_eq!(verify(&ring, &token, &opts(NOW)), Err(TokenError::UnknownKey));
    Ok(())
}

#[test]
fn kidless_tokens_are_tried_against_every_key() -> Result<()> {
    // A CRM.COM deployment sharing the secret writes no kid; its secret may be any key of the ring.
    let ring = ring_of(&[("k1", SECRET_1), ("k2", SECRET_2)])?;
    let body = r#"{"usr":"MPAdministrator","org":"ps_r13qa","oun":"1","exp":"1750000600","iat":"1750000000","jti":"C972949E8FF14E229F58291ABE3C2663"}"#;
    let token = craft(r#"{"typ":"JWT","alg":"HS256"}"#, body, SECRET_2);
    let c = verify(&ring, &token, &legacy_opts(NOW))?;
    assert_eq!(
        (c.usr.as_str(), c.exp, c.r#gen, c.iss),
        ("MPAdministrator", 1_750_000_600, 0, None)
    );

    let stranger = craft(
        r#"{"typ":"JWT","alg":"HS256"}"#,
        body,
        b"some-other-secret-0123456789abcdefgh",
    );
    assert_eq!(
        verify(&ring, &stranger, &legacy_opts(NOW)),
        Err(TokenError::BadSignature)
    );
    Ok(())
}

#[test]
fn rotation_keeps_old_tokens_valid() -> Result<()> {
    let before = ring_of(&[("old", SECRET_1)])?;
    let after = ring_of(&[("new", SECRET_2), ("old", SECRET_1)])?;
    let old_token = issue(&before, &claims(), DateFormat::Numeric);
    assert_eq!(verify(&after, &old_token, &opts(NOW))?, claims());
    let new_token = issue(&after, &claims(), DateFormat::Numeric);
    assert!(segment(&new_token, 0)?.contains(r#""kid":"new""#));
    assert_eq!(verify(&after, &new_token, &opts(NOW))?, claims());
    // Once the old key is dropped its tokens stop verifying.
    let dropped = ring_of(&[("new", SECRET_2)])?;
    assert_eq!(
        verify(&dropped, &old_token, &opts(NOW)),
        Err(TokenError::UnknownKey)
    );
    // The old ring never knew the new key.
    assert_eq!(
        verify(&before, &new_token, &opts(NOW)),
        Err(TokenError::UnknownKey)
    );
    Ok(())
}

#[test]
fn decodes_crm_com_sample_token() -> Result<()> {
    let c = decode_unverified(CRM_SAMPLE)?;
    assert_eq!(
        c,
        Claims::new(
            "C972949E8FF14E229F58291ABE3C2663",
            "MPAdministrator",
            "ps_r13qa",
            "1",
            1495713382,
            1495720582
        )
    );
    Ok(())
}

#[test]
fn crm_com_sample_does_not_verify_with_our_keys() -> Result<()> {
    let ring = ring_of(&[("k1", SECRET_1), ("k2", SECRET_2)])?;
    let at_issue = legacy_opts(1495713382);
    assert_eq!(
        verify(&ring, CRM_SAMPLE, &at_issue),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        verify_ignoring_expiry(&ring, CRM_SAMPLE, &legacy_opts(NOW)),
        Err(TokenError::BadSignature)
    );
    Ok(())
}

#[test]
fn rejects_malformed_shapes() -> Result<()> {
    let ring = keyring()?;
    let good = issue(&ring, &claims(), DateFormat::Numeric);
    let parts: Vec<&str> = good.split('.').collect();
    let bad_header = URL_SAFE_NO_PAD.encode("not json");
    let array_header = URL_SAFE_NO_PAD.encode(r#"["HS256"]"#);
    for token in [
        String::new(),
        ".".into(),
        "..".into(),
        "abc".into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.{}", parts[2]),
        format!(".{}.{}", parts[1], parts[2]),
        format!("{}..{}", parts[0], parts[2]),
        format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{bad_header}.{}.{}", parts[1], parts[2]),
        format!("{array_header}.{}.{}", parts[1], parts[2]),
        format!(" {good}"),
    ] {
        assert_eq!(
            verify(&ring, &token, &opts(NOW)),
            Err(TokenError::Malformed),
            "{token}"
        );
        assert_eq!(decode_unverified(&token), Err(TokenError::Malformed), "{token}");
    }
    Ok(())
}

#[test]
fn caps_token_length_before_any_work() -> Result<()> {
    let ring = keyring()?;
    let big = {
        let mut c = claims();
        c.usr = "u".repeat(MAX_TOKEN_BYTES);
        c
    };
    let token = issue(&ring, &big, DateFormat::Numeric);
    assert!(token.len() > MAX_TOKEN_BYTES);
    assert_eq!(verify(&ring, &token, &opts(NOW)), Err(TokenError::Malformed));
    assert_eq!(decode_unverified(&token), Err(TokenError::Malformed));
    // Just under the cap still verifies.
    let fits = {
        let mut c = claims();
        c.usr = "u".repeat(5000);
        c
    };
    let token = issue(&ring, &fits, DateFormat::Numeric);
    assert!(token.len() <= MAX_TOKEN_BYTES);
    assert_eq!(verify(&ring, &token, &opts(NOW))?, fits);
    Ok(())
}

#[test]
fn error_codes_and_messages() -> Result<()> {
    let all = [
        TokenError::Malformed,
        TokenError::BadSignature,
        TokenError::UnknownKey,
        TokenError::WrongAlgorithm,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::WrongIssuer,
    ];
    for e in all {
        let expected = if e == TokenError::Expired {
            ErrorCode::TokenExpired
        } else {
            ErrorCode::InvalidToken
        };
        assert_eq!(e.code(), expected, "{e:?}");
        let message = e.to_string();
        assert!(!message.is_empty() && !message.ends_with('.'), "{message}");
        assert_eq!(message, message.to_lowercase(), "{e:?}");
    }
    Ok(())
}

#[test]
fn verifier_applies_its_settings() -> Result<()> {
    let ring = keyring()?;
    let c = claims();
    let token = issue(&ring, &c, DateFormat::Numeric);
    let strict = Verifier::new(ring.clone(), ISSUER);
    assert_eq!(strict.verify(&token, NOW)?, c);
    assert_eq!(strict.verify(&token, c.exp + 1), Err(TokenError::Expired));
    let lenient = Verifier::new(ring.clone(), ISSUER).with_leeway(60);
    assert_eq!(lenient.verify(&token, c.exp + 60)?, c);
    assert_eq!(
        Verifier::new(ring.clone(), "other").verify(&token, NOW),
        Err(TokenError::WrongIssuer)
    );

    let legacy = issue(
        &ring,
        &{
            let mut c = claims();
            c.iss = None;
            c
        },
        DateFormat::String,
    );
    assert_eq!(strict.verify(&legacy, NOW), Err(TokenError::WrongIssuer));
    let accepting = strict.clone().with_accept_legacy(true);
    assert!(accepting.verify(&legacy, NOW).is_ok());
    assert_eq!(accepting.key_ids().collect::<Vec<_>>(), ["k1"]);
    Ok(())
}
