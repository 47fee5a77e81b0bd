//! Arbitrary bytes as a token's claims JSON, directly through the claims deserialiser and as the payload of
//! a correctly signed token, so that `verify` gets past the signature and really parses them:
//!
//! - nothing panics;
//! - `decode_unverified` and `verify_ignoring_expiry` accept the claims exactly when the deserialiser does on
//!   a JSON object (and a wrong issuer, a future `iat` are the only other refusals);
//! - accepted claims have non-negative `iat`/`exp` and survive `Claims::to_json` in both date formats.

#![no_main]

use crm_auth_core::limits::MAX_TOKEN_BYTES;
use crm_auth_core::token::{Claims, DateFormat, TokenError};
use crm_auth_core::verify_ignoring_expiry;
use crm_auth_fuzz::{K1_SECRET, K2_SECRET, check_token, keyring, options, signed_token};
use libfuzzer_sys::fuzz_target;

/// The headers `k1` writes and one without `kid`, which is tried against every key.
const HEADERS: [(&[u8], &[u8]); 2] = [
    (br#"{"typ":"JWT","alg":"HS256","kid":"k1"}"#, &K1_SECRET),
    (br#"{"alg":"HS256"}"#, &K2_SECRET),
];

fuzz_target!(|data: &[u8]| {
    let parsed = serde_json::from_slice::<Claims>(data);
    let is_object = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if let Ok(claims) = &parsed {
        assert!(claims.iat >= 0 && claims.exp >= 0, "negative date accepted");
        for format in [DateFormat::Numeric, DateFormat::String] {
            let json = claims.to_json(format);
            let again = serde_json::from_str::<Claims>(&json).ok();
            assert_eq!(again.as_ref(), Some(claims), "{json} does not parse back");
        }
    }

    for (header, secret) in HEADERS {
        let token = signed_token(secret, header, data);
        let _ = check_token(&token);
        let answer = verify_ignoring_expiry(keyring(), &token, &options(true));
        match (&parsed, answer) {
            (Ok(claims), Ok(verified)) => {
                assert!(is_object, "claims that are not an object verified");
                assert_eq!(claims, &verified);
            }
            (Ok(_), Err(TokenError::WrongIssuer | TokenError::NotYetValid)) => {}
            // Over the token size limit, or leading bytes that the object check refuses.
            (Ok(_), Err(TokenError::Malformed)) => {
                assert!(
                    !is_object || token.len() > MAX_TOKEN_BYTES,
                    "parsable claims refused as malformed"
                );
            }
            (Err(_), Err(TokenError::Malformed)) => {}
            (parsed, answer) => panic!("deserialiser said {parsed:?}, verification said {answer:?}"),
        }
    }
});
