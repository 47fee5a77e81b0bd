//! EdDSA and ES256 beside HS256: each algorithm signs and verifies, mixed keyrings verify every key's tokens,
//! a staged key waits for its `not_before`, the JWKS carries public keys only, a verifier built from it accepts
//! what the keyring signed, and no forged header gets a key of another algorithm to check its signature.

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_auth_core::token::{
    Algorithm, Claims, DateFormat, Jwks, Keyring, KeyringError, SigningKey, TokenError, Verifier,
    VerifyOptions, issue, verify,
};
use ring::hmac;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};

const SECRET: &[u8] = b"hs256-secret-0123456789abcdefghijklmnop";
const NOW: i64 = 1_750_000_000;
const ISSUER: &str = "crm-auth";

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

fn opts() -> VerifyOptions {
    VerifyOptions {
        now: NOW,
        leeway: 30,
        issuer: ISSUER.into(),
        accept_legacy: false,
    }
}

fn key(id: &str, alg: Algorithm) -> Result<SigningKey> {
    Ok(match alg {
        Algorithm::Hs256 => SigningKey::new(id, SECRET.to_vec())?,
        _ => SigningKey::from_pkcs8_pem(id, &SigningKey::generate_pkcs8_pem(alg)?)?,
    })
}

fn header_of(token: &str) -> Result<serde_json::Value> {
    let header = token.split('.').next().unwrap_or_default();
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header)?)?)
}

/// A token with this header over the claims, signed by `sign` over the signing input.
fn forge(header: &str, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<String> {
    let payload = serde_json::to_vec(&serde_json::json!({
        "jti": "EE63A82C4FEBE02FF34E90DD1EBA5ABE", "usr": "admin", "org": "demo", "oun": "HQ",
        "iat": NOW, "exp": NOW + 7200, "iss": ISSUER, "gen": 0
    }))?;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = sign(input.as_bytes());
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[test]
fn each_algorithm_signs_and_verifies_with_kid_and_alg_in_the_header() -> Result<()> {
    for alg in Algorithm::ALL {
        let ring = Keyring::new(vec![key("k1", alg)?])?;
        let token = issue(&ring, &claims(), DateFormat::Numeric);
        let header = header_of(&token)?;
        assert_eq!(header["alg"], alg.name(), "{alg}");
        assert_eq!(header["kid"], "k1", "{alg}");
        assert_eq!(header["typ"], "JWT", "{alg}");
        assert_eq!(verify(&ring, &token, &opts())?, claims(), "{alg}");
        // A flipped signature bit is caught by every algorithm.
        let (input, signature) = token.rsplit_once('.').unwrap_or_default();
        let mut bytes = URL_SAFE_NO_PAD.decode(signature)?;
        bytes[0] ^= 1;
        let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(
            verify(&ring, &tampered, &opts()),
            Err(TokenError::BadSignature),
            "{alg}"
        );
        // Another key of the same algorithm and id does not verify it.
        let other = Keyring::new(vec![match alg {
            Algorithm::Hs256 => SigningKey::new("k1", b"another-secret-0123456789abcdefghijklmn".to_vec())?,
            _ => key("k1", alg)?,
        }])?;
        assert_eq!(
            verify(&other, &token, &opts()),
            Err(TokenError::BadSignature),
            "{alg}"
        );
    }
    Ok(())
}

#[test]
fn hs256_tokens_are_unchanged_and_eddsa_is_deterministic() -> Result<()> {
    // The HS256 token of these claims under this key, as issued before asymmetric keys existed.
    let ring = Keyring::new(vec![SigningKey::new("k1", SECRET.to_vec())?])?;
    let token = issue(&ring, &claims(), DateFormat::Numeric);
    let (input, signature) = token.rsplit_once('.').unwrap_or_default();
    assert!(input.starts_with(&URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"HS256","kid":"k1"}"#)));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), input.as_bytes());
    assert_eq!(signature, URL_SAFE_NO_PAD.encode(tag.as_ref()));

    let ring = Keyring::new(vec![key("e", Algorithm::EdDsa)?])?;
    assert_eq!(
        issue(&ring, &claims(), DateFormat::Numeric),
        issue(&ring, &claims(), DateFormat::Numeric)
    );
    Ok(())
}

#[test]
fn signatures_are_the_raw_primitives_over_the_signing_input() -> Result<()> {
    for alg in [Algorithm::EdDsa, Algorithm::Es256] {
        let ring = Keyring::new(vec![key("k", alg)?])?;
        let token = issue(&ring, &claims(), DateFormat::Numeric);
        let (input, signature) = token.rsplit_once('.').unwrap_or_default();
        let signature = URL_SAFE_NO_PAD.decode(signature)?;
        assert_eq!(signature.len(), 64, "{alg}");
        let jwk = &ring.jwks().keys[0];
        let x = URL_SAFE_NO_PAD.decode(jwk.x.as_deref().unwrap_or_default())?;
        let ok = match alg {
            Algorithm::EdDsa => UnparsedPublicKey::new(&ED25519, &x)
                .verify(input.as_bytes(), &signature)
                .is_ok(),
            _ => {
                let y = URL_SAFE_NO_PAD.decode(jwk.y.as_deref().unwrap_or_default())?;
                let point = [&[4u8][..], &x, &y].concat();
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                    .verify(input.as_bytes(), &signature)
                    .is_ok()
            }
        };
        assert!(
            ok,
            "{alg}: the JWKS key verifies the signature by the standard's primitive"
        );
    }
    Ok(())
}

#[test]
fn a_mixed_keyring_signs_with_its_first_key_and_verifies_every_key() -> Result<()> {
    let hs = Keyring::new(vec![key("hs", Algorithm::Hs256)?])?;
    let ed = key("ed", Algorithm::EdDsa)?;
    let es = key("es", Algorithm::Es256)?;
    let old_token = issue(&hs, &claims(), DateFormat::Numeric);
    let ed_token = issue(&Keyring::new(vec![ed.clone()])?, &claims(), DateFormat::Numeric);
    let es_token = issue(&Keyring::new(vec![es.clone()])?, &claims(), DateFormat::Numeric);

    let mixed = Keyring::new(vec![ed, key("hs", Algorithm::Hs256)?, es])?;
    assert_eq!(
        header_of(&issue(&mixed, &claims(), DateFormat::Numeric))?["kid"],
        "ed"
    );
    for token in [&old_token, &ed_token, &es_token] {
        assert_eq!(verify(&mixed, token, &opts())?, claims());
    }
    // Only the public keys are published, in order; the HS256 secret never is.
    let jwks = mixed.jwks();
    let kids: Vec<_> = jwks
        .keys
        .iter()
        .map(|k| k.kid.clone().unwrap_or_default())
        .collect();
    assert_eq!(kids, ["ed", "es"]);
    assert_eq!(
        Keyring::new(vec![key("hs", Algorithm::Hs256)?])?.jwks(),
        Jwks::default()
    );
    Ok(())
}

#[test]
fn a_staged_key_signs_from_its_not_before_on() -> Result<()> {
    let ring = Keyring::new(vec![
        key("new", Algorithm::EdDsa)?.with_not_before(NOW + 100),
        key("old", Algorithm::Es256)?,
    ])?;
    let before = issue(&ring, &claims(), DateFormat::Numeric);
    assert_eq!(header_of(&before)?["kid"], "old");
    let later = {
        let mut c = claims();
        c.iat = NOW + 100;
        c.exp = NOW + 7300;
        c
    };
    let after = issue(&ring, &later, DateFormat::Numeric);
    assert_eq!(header_of(&after)?["kid"], "new");
    assert_eq!(ring.jwks().keys.len(), 2, "published before it signs");
    let at = VerifyOptions {
        now: NOW + 100,
        ..opts()
    };
    assert!(verify(&ring, &before, &at).is_ok());
    assert!(verify(&ring, &after, &at).is_ok());
    Ok(())
}

#[test]
fn the_jwks_has_the_standard_members() -> Result<()> {
    let ring = Keyring::new(vec![key("ed", Algorithm::EdDsa)?, key("es", Algorithm::Es256)?])?;
    let json = serde_json::to_value(ring.jwks())?;
    let keys = json["keys"].as_array().cloned().unwrap_or_default();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(keys[0]["kid"], "ed");
    assert_eq!(keys[0]["x"].as_str().map(str::len), Some(43));
    assert!(keys[0].get("y").is_none());
    assert!(keys[0].get("d").is_none(), "no private member");
    assert_eq!(keys[1]["kty"], "EC");
    assert_eq!(keys[1]["crv"], "P-256");
    assert_eq!(keys[1]["alg"], "ES256");
    assert_eq!(keys[1]["x"].as_str().map(str::len), Some(43));
    assert_eq!(keys[1]["y"].as_str().map(str::len), Some(43));
    Ok(())
}

#[test]
fn a_verifier_from_the_jwks_accepts_what_the_keyring_signed() -> Result<()> {
    let ed = key("ed", Algorithm::EdDsa)?;
    let es = key("es", Algorithm::Es256)?;
    let hs = key("hs", Algorithm::Hs256)?;
    let ring = Keyring::new(vec![ed.clone(), es.clone(), hs.clone()])?;
    let json = serde_json::to_vec(&ring.jwks())?;
    let verifier = Verifier::from_jwks(&Jwks::from_json(&json)?, ISSUER)?.with_leeway(30);
    assert_eq!(verifier.key_ids().collect::<Vec<_>>(), ["ed", "es"]);
    for signer in [ed, es] {
        let token = issue(&Keyring::new(vec![signer])?, &claims(), DateFormat::Numeric);
        assert_eq!(verifier.verify(&token, NOW)?, claims());
        assert_eq!(verifier.verify(&token, NOW + 7231), Err(TokenError::Expired));
        assert_eq!(
            Verifier::from_jwks(&ring.jwks(), "other")?.verify(&token, NOW),
            Err(TokenError::WrongIssuer)
        );
    }
    // The HS256 key is not in the JWKS, so its tokens name an unknown key.
    let hs_token = issue(&Keyring::new(vec![hs])?, &claims(), DateFormat::Numeric);
    assert_eq!(verifier.verify(&hs_token, NOW), Err(TokenError::UnknownKey));
    Ok(())
}

#[test]
fn jwks_keys_of_other_types_are_skipped_and_malformed_ones_refused() -> Result<()> {
    let json = br#"{"keys": [
        {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB", "alg": "RS256"},
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
        {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ok", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    ], "extra": true}"#;
    let verifier = Verifier::from_jwks(&Jwks::from_json(json)?, ISSUER)?;
    assert_eq!(verifier.key_ids().collect::<Vec<_>>(), ["ok"]);

    let short = br#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "a", "x": "AAAA"}]}"#;
    assert_eq!(
        Verifier::from_jwks(&Jwks::from_json(short)?, ISSUER).err(),
        Some(KeyringError::BadPublicKey {
            kid: "a".into(),
            alg: Algorithm::EdDsa
        })
    );
    let no_y = br#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "b", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    assert_eq!(
        Verifier::from_jwks(&Jwks::from_json(no_y)?, ISSUER).err(),
        Some(KeyringError::BadPublicKey {
            kid: "b".into(),
            alg: Algorithm::Es256
        })
    );
    let twice = br#"{"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "a", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "a", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    ]}"#;
    assert_eq!(
        Verifier::from_jwks(&Jwks::from_json(twice)?, ISSUER).err(),
        Some(KeyringError::DuplicateId { id: "a".into() })
    );
    // An empty set refuses everything.
    let empty = Verifier::from_jwks(&Jwks::default(), ISSUER)?;
    let token = issue(
        &Keyring::new(vec![key("ed", Algorithm::EdDsa)?])?,
        &claims(),
        DateFormat::Numeric,
    );
    assert_eq!(empty.verify(&token, NOW), Err(TokenError::UnknownKey));
    Ok(())
}

#[test]
fn forged_headers_never_reach_a_key_of_another_algorithm() -> Result<()> {
    let ed = key("ed", Algorithm::EdDsa)?;
    let es = key("es", Algorithm::Es256)?;
    let ring = Keyring::new(vec![ed, es, key("hs", Algorithm::Hs256)?])?;
    let jwks = ring.jwks();
    let ed_public = URL_SAFE_NO_PAD.decode(jwks.keys[0].x.as_deref().unwrap_or_default())?;
    let verifier = Verifier::from_jwks(&jwks, ISSUER)?;

    // alg none, with and without a signature.
    for kid in ["ed", "hs"] {
        let none = forge(&format!(r#"{{"alg":"none","kid":"{kid}"}}"#), |_| Vec::new())?;
        assert_eq!(verify(&ring, &none, &opts()), Err(TokenError::WrongAlgorithm));
        assert_eq!(verifier.verify(&none, NOW), Err(TokenError::WrongAlgorithm));
    }
    // HS256 with the public key's bytes (the JWKS's, or its JSON) as the HMAC secret, naming the EdDSA key.
    for secret in [ed_public.clone(), serde_json::to_vec(&jwks.keys[0])?] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        for header in [r#"{"alg":"HS256","kid":"ed"}"#, r#"{"alg":"HS256"}"#] {
            let forged = forge(header, |input| hmac::sign(&key, input).as_ref().to_vec())?;
            assert!(verify(&ring, &forged, &opts()).is_err(), "{header}");
            assert!(verifier.verify(&forged, NOW).is_err(), "{header}");
        }
        let forged = forge(r#"{"alg":"HS256","kid":"ed"}"#, |input| {
            hmac::sign(&key, input).as_ref().to_vec()
        })?;
        assert_eq!(verify(&ring, &forged, &opts()), Err(TokenError::WrongAlgorithm));
        assert_eq!(verifier.verify(&forged, NOW), Err(TokenError::WrongAlgorithm));
    }
    // A kid naming another algorithm's key: an EdDSA header naming the ES256 and the HS256 keys.
    let ed_alone = Keyring::new(vec![key("es", Algorithm::EdDsa)?])?;
    let relabelled = issue(&ed_alone, &claims(), DateFormat::Numeric);
    assert_eq!(
        verify(&ring, &relabelled, &opts()),
        Err(TokenError::WrongAlgorithm)
    );
    assert_eq!(verifier.verify(&relabelled, NOW), Err(TokenError::WrongAlgorithm));
    let ed_as_hs = issue(
        &Keyring::new(vec![key("hs", Algorithm::EdDsa)?])?,
        &claims(),
        DateFormat::Numeric,
    );
    assert_eq!(verify(&ring, &ed_as_hs, &opts()), Err(TokenError::WrongAlgorithm));
    // An unknown kid.
    let stranger = issue(
        &Keyring::new(vec![key("stranger", Algorithm::EdDsa)?])?,
        &claims(),
        DateFormat::Numeric,
    );
    assert_eq!(verify(&ring, &stranger, &opts()), Err(TokenError::UnknownKey));
    assert_eq!(verifier.verify(&stranger, NOW), Err(TokenError::UnknownKey));
    Ok(())
}

#[test]
fn key_file_text_is_pem_or_a_base64_prefixed_or_raw_secret() -> Result<()> {
    let token = issue(
        &Keyring::new(vec![SigningKey::new("k", SECRET.to_vec())?])?,
        &claims(),
        DateFormat::Numeric,
    );
    let verifies = |key: SigningKey| -> Result<bool> {
        Ok(Verifier::new(Keyring::new(vec![key])?, ISSUER)
            .verify(&token, NOW)
            .is_ok())
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET);
    assert!(verifies(SigningKey::from_key_file_text(
        "k",
        &format!("base64:{encoded}\n")
    )?)?);
    assert!(verifies(SigningKey::from_key_file_text(
        "k",
        &format!(" base64: {encoded} \r\n")
    )?)?);
    let raw = format!("{}\r\n", String::from_utf8_lossy(SECRET));
    assert!(verifies(SigningKey::from_key_file_text("k", &raw)?)?);
    // Without the prefix, base64 text is the secret itself, not what it encodes.
    assert!(!verifies(SigningKey::from_key_file_text("k", &encoded)?)?);
    assert_eq!(
        SigningKey::from_key_file_text("k", "base64:***").err(),
        Some(KeyringError::BadSecretEncoding { id: "k".into() })
    );
    assert_eq!(
        SigningKey::from_key_file_text("k", "base64:c2hvcnQ=").err(),
        Some(KeyringError::SecretTooShort {
            id: "k".into(),
            len: 5
        })
    );
    let pem = SigningKey::generate_pkcs8_pem(Algorithm::EdDsa)?;
    let key = SigningKey::from_key_file_text("ed", &pem)?;
    assert_eq!(key.algorithm(), Algorithm::EdDsa);
    assert_eq!(
        SigningKey::from_key_file_text("ed", "-----BEGIN PRIVATE KEY-----\nnope\n").err(),
        Some(KeyringError::BadPrivateKey { id: "ed".into() })
    );
    Ok(())
}
