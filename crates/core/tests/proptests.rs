//! Properties over arbitrary input: tokens round-trip, any changed byte breaks them, parsers never panic.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use crm_auth_core::parse_basic_authorization;
use crm_auth_core::token::{
    Claims, DateFormat, Keyring, SigningKey, VerifyOptions, decode_unverified, issue, verify,
};
use proptest::prelude::*;

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
        .prop_map(|(jti, usr, org, oun, iat, ttl, iss, generation)| Claims {
            jti,
            usr,
            org,
            oun,
            iat,
            exp: iat + ttl,
            iss,
            r#gen: generation,
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
        let claims = Claims { usr: claims.usr.chars().take(20).collect(), ..claims };
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
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
        let token = format!("{header}.{}.{}", URL_SAFE_NO_PAD.encode(&bytes), "A".repeat(43));
        let _ = verify(&ring, &token, &opts);
        let _ = decode_unverified(&token);
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
