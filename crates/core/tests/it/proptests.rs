//! Properties over arbitrary input: tokens round-trip, any changed byte breaks them, parsers never panic, the
//! three ways of reading a token agree, and request and response bodies decode without panicking.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use crm_auth_core::token::{
    Claims, DateFormat, Keyring, SigningKey, TokenError, VerifyOptions, decode_unverified, issue, verify,
    verify_ignoring_expiry,
};
use crm_auth_core::{
    ApiKeyTokenRequest, Empty, Envelope, PasswordTokenRequest, Status, TokenRequest, TokenResponse,
    ValidateResponse, parse_basic_authorization,
};
use proptest::prelude::*;
use ring::hmac;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn keyring() -> Keyring {
    let keys = vec![
        SigningKey::new("k1", vec![0x11; 32]),
        SigningKey::new("k2", vec![0x22; 48]),
    ];
    match keys
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .and_then(Keyring::new)
    {
        Ok(ring) => ring,
        Err(e) => panic!("test keyring: {e}"),
    }
}

fn arb_claims() -> impl Strategy<Value = Claims> {
    (
        "[0-9A-F]{32}",
        any::<String>(),
        any::<String>(),
        any::<String>(),
        0..=i64::MAX / 2,
        0..=i64::MAX / 2,
        proptest::option::of(any::<String>()),
        any::<u64>(),
    )
        .prop_map(|(jti, usr, org, oun, iat, ttl, iss, generation)| {
            let mut claims = Claims::new(jti, usr, org, oun, iat, iat + ttl).at_generation(generation);
            claims.iss = iss;
            claims
        })
}

fn arb_format() -> impl Strategy<Value = DateFormat> {
    prop_oneof![Just(DateFormat::Numeric), Just(DateFormat::String)]
}

fn opts_for(claims: &Claims) -> VerifyOptions {
    VerifyOptions {
        now: claims.iat,
        leeway: 0,
        issuer: claims.iss.clone().unwrap_or_else(|| "crm-auth".into()),
        accept_legacy: claims.iss.is_none(),
    }
}

/// `base64url(header).base64url(payload).signature` under k2's secret: a genuine signature whatever the
/// header and payload hold, so verification gets past the signature to the claims.
fn signed(header: &str, payload: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &[0x22; 48]);
    let tag = hmac::sign(&key, token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
    token
}

/// Arbitrary JSON, its object keys mostly the member names of the wire types and claims, so that decoding
/// gets past the first member.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "username",
            "password",
            "organisation",
            "unit",
            "token",
            "data",
            "status",
            "code",
            "description",
            "message",
            "session",
            "id",
            "method",
            "issued_at",
            "expires_at",
            "jti",
            "usr",
            "org",
            "oun",
            "iat",
            "exp",
            "iss",
            "gen",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
        prop::sample::select(vec![
            "OK",
            "INVALID_TOKEN",
            "password",
            "web_api_key",
            "1495713382",
            ""
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Decodes `json` as `T`; when that works, `T`'s own JSON must decode to the same value (compared through
/// `key`, since not every wire type has `PartialEq`).
fn decodes_and_round_trips<T, K>(json: &[u8], key: impl Fn(&T) -> K) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned,
    K: PartialEq + std::fmt::Debug,
{
    let Ok(value) = serde_json::from_slice::<T>(json) else {
        return Ok(());
    };
    let encoded = serde_json::to_vec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let again = serde_json::from_slice::<T>(&encoded).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(key(&again), key(&value));
    Ok(())
}

/// Every wire body, decoded from `json` as the server and the client decode it.
fn every_wire_type(json: &[u8]) -> Result<(), TestCaseError> {
    decodes_and_round_trips(json, |r: &PasswordTokenRequest| {
        (
            r.username.clone(),
            r.password.clone(),
            r.organisation.clone(),
            r.unit.clone(),
        )
    })?;
    decodes_and_round_trips(json, ApiKeyTokenRequest::clone)?;
    decodes_and_round_trips(json, TokenRequest::clone)?;
    decodes_and_round_trips(json, TokenResponse::clone)?;
    decodes_and_round_trips(json, ValidateResponse::clone)?;
    decodes_and_round_trips(json, Status::clone)?;
    decodes_and_round_trips(json, Envelope::<TokenResponse>::clone)?;
    decodes_and_round_trips(json, Envelope::<ValidateResponse>::clone)?;
    decodes_and_round_trips(json, Envelope::<Empty>::clone)?;
    decodes_and_round_trips(json, Claims::clone)
}

/// A key that is not blank-padded and not a colon, as clients would send.
fn arb_key() -> impl Strategy<Value = String> {
    "[!-9;-~][ -9;-~]{0,200}[!-9;-~]|[!-9;-~]"
}

proptest! {
    #[test]
    fn sign_then_verify_round_trips(claims in arb_claims(), format in arb_format()) {
        let ring = keyring();
        let token = issue(&ring, &claims, format);
        prop_assert_eq!(verify(&ring, &token, &opts_for(&claims)), Ok(claims.clone()));
        prop_assert_eq!(decode_unverified(&token), Ok(claims));
    }

    #[test]
    fn any_changed_byte_breaks_the_token(
        claims in arb_claims(),
        format in arb_format(),
        index in any::<prop::sample::Index>(),
        replacement in any::<char>(),
    ) {
        let ring = keyring();
        let mut claims = claims;
        claims.usr = claims.usr.chars().take(20).collect();
        let token = issue(&ring, &claims, format);
        // The token is ASCII, so a byte index is a char index.
        let i = index.index(token.len());
        let original = char::from(token.as_bytes()[i]);
        prop_assume!(replacement != original);
        let mut changed = token.clone();
        changed.replace_range(i..=i, replacement.encode_utf8(&mut [0; 4]));
        prop_assert!(verify(&ring, &changed, &opts_for(&claims)).is_err(), "{} verified", changed);
    }

    #[test]
    fn verify_never_panics(token in "[A-Za-z0-9_.=-]{0,300}|\\PC{0,300}") {
        let ring = keyring();
        let opts = VerifyOptions { now: 0, leeway: 30, issuer: "crm-auth".into(), accept_legacy: true };
        let _ = verify(&ring, &token, &opts);
        let _ = decode_unverified(&token);
    }

    #[test]
    fn claims_deserialiser_never_panics(json in "\\PC{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = serde_json::from_str::<Claims>(&json);
        let _ = serde_json::from_slice::<Claims>(&bytes);
        // Also through a token, signed so the claims are actually parsed.
        let ring = keyring();
        let opts = VerifyOptions { now: 0, leeway: 30, issuer: "crm-auth".into(), accept_legacy: true };
        for payload in [json.as_bytes(), &bytes] {
            let token = signed(r#"{"alg":"HS256"}"#, payload);
            let _ = verify(&ring, &token, &opts);
            let _ = verify_ignoring_expiry(&ring, &token, &opts);
            let _ = decode_unverified(&token);
        }
    }

    #[test]
    fn claims_deserialiser_never_panics_on_near_misses(
        iat in "-?[0-9]{0,22}(\\.[0-9]{0,3})?|\"[0-9a-z+ -]{0,22}\"|null|true|\\[\\]|\\{\\}",
        exp in "-?[0-9]{0,22}(\\.[0-9]{0,3})?|\"[0-9a-z+ -]{0,22}\"|null|true|\\[\\]|\\{\\}",
        generation in "-?[0-9]{0,22}|\"[0-9]{0,5}\"|null",
    ) {
        let json = format!(
            r#"{{"jti":"J","usr":"U","org":"O","oun":"N","iat":{iat},"exp":{exp},"gen":{generation}}}"#
        );
        if let Ok(c) = serde_json::from_str::<Claims>(&json) {
            prop_assert!(c.iat >= 0 && c.exp >= 0);
        }
    }

    #[test]
    fn basic_parser_never_panics(header in "\\PC{0,300}|[bB][aA][sS][iI][cC][ \t]{1,3}[A-Za-z0-9+/=]{0,100}") {
        if let Some(key) = parse_basic_authorization(&header) {
            prop_assert!(!key.expose().is_empty());
            prop_assert!(key.expose().chars().count() <= 256);
            prop_assert!(!key.expose().chars().any(char::is_control));
        }
    }

    #[test]
    fn basic_parser_accepts_what_clients_send(
        key in arb_key(),
        scheme in "[bB][aA][sS][iI][cC]",
        lead in "[ \t]{0,3}",
        gap in "[ \t]{1,3}",
        trail in "[ \t]{0,3}",
        colon in any::<bool>(),
        padded in any::<bool>(),
    ) {
        let user = if colon { format!("{key}:") } else { key.clone() };
        let payload = if padded { STANDARD.encode(&user) } else { STANDARD_NO_PAD.encode(&user) };
        let header = format!("{lead}{scheme}{gap}{payload}{trail}");
        let parsed = parse_basic_authorization(&header);
        prop_assert_eq!(parsed.as_ref().map(|k| k.expose()), Some(key.as_str()), "{}", header);
    }
}

proptest! {
    /// `verify`, `verify_ignoring_expiry` and `decode_unverified` read one token alike: what `verify` accepts
    /// the other two accept with the same claims; `verify_ignoring_expiry` differs from `verify` only where
    /// `verify` says `Expired`. The payload is signed, so every check really runs.
    #[test]
    fn the_three_readings_agree(
        claims in arb_claims(),
        format in arb_format(),
        near_exp in any::<bool>(),
        skew in -60i64..60,
        legacy in any::<bool>(),
        raw in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..120)),
    ) {
        // Around `iat` or `exp`, so that every outcome comes up: valid, expired, not yet valid.
        let now = if near_exp { claims.exp } else { claims.iat }.saturating_add(skew);
        let ring = keyring();
        let token = match &raw {
            Some(payload) => signed(r#"{"typ":"JWT","alg":"HS256"}"#, payload),
            None => issue(&ring, &claims, format),
        };
        let opts = VerifyOptions { now, leeway: 30, issuer: "crm-auth".into(), accept_legacy: legacy };
        let strict = verify(&ring, &token, &opts);
        let lenient = verify_ignoring_expiry(&ring, &token, &opts);
        let unverified = decode_unverified(&token);
        match (&strict, &lenient) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(TokenError::Expired), _) => {}
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "verify: {:?}, verify_ignoring_expiry: {:?}", a, b),
        }
        if let Ok(claims) = &lenient {
            prop_assert_eq!(unverified.as_ref(), Ok(claims));
            prop_assert!(i128::from(claims.iat) <= i128::from(now) + 30);
        }
        if let Ok(claims) = &strict {
            prop_assert!(i128::from(claims.exp) + 30 >= i128::from(now));
        }
    }

    /// Request and response bodies, as JSON of the right shape and as arbitrary bytes, decode into every wire
    /// type without a panic, and whatever decodes encodes back to itself.
    #[test]
    fn wire_bodies_decode_without_panic(
        value in arb_json(),
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let json = serde_json::to_vec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        every_wire_type(&json)?;
        every_wire_type(&bytes)?;
    }
}
