//! What the fuzz targets share: a fixed keyring, fixed verification options, and a signer that lets a target
//! put arbitrary bytes behind a valid signature so that the claims parser is reached at all.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_auth_core::token::{Claims, Keyring, SigningKey, TokenError, VerifyOptions};
use crm_auth_core::{decode_unverified, verify, verify_ignoring_expiry};
use ring::hmac;

/// The secret of `k1`, the key that signs; the seed tokens in `fuzz/seeds/` were made with it.
pub const K1_SECRET: [u8; 32] = [0x11; 32];

/// The secret of `k2`, a second key that only verifies.
pub const K2_SECRET: [u8; 48] = [0x22; 48];

/// The time the targets verify at, unix seconds; the seed tokens are live at this instant.
pub const NOW: i64 = 1_700_000_000;

/// Leeway of the verification options, as the server's default.
pub const LEEWAY: u64 = 30;

/// The issuer the verification options require.
pub const ISSUER: &str = "crm-auth";

/// Keys `k1` (signs) and `k2`, as a rotation would leave them.
pub fn keyring() -> &'static Keyring {
    static KEYRING: LazyLock<Keyring> = LazyLock::new(|| {
        let keys = [("k1", K1_SECRET.to_vec()), ("k2", K2_SECRET.to_vec())]
            .into_iter()
            .map(|(id, secret)| SigningKey::new(id, secret))
            .collect::<Result<Vec<_>, _>>();
        match keys.and_then(Keyring::new) {
            Ok(keyring) => keyring,
            Err(e) => panic!("the fuzz keyring is invalid: {e}"),
        }
    });
    &KEYRING
}

/// Verification at [`NOW`] with [`LEEWAY`] for [`ISSUER`]; `accept_legacy` as given.
pub fn options(accept_legacy: bool) -> VerifyOptions {
    VerifyOptions {
        now: NOW,
        leeway: LEEWAY,
        issuer: ISSUER.to_owned(),
        accept_legacy,
    }
}

/// `base64url(header).base64url(payload).signature`, signed with `secret`: a token whose signature is right
/// whatever the header and payload hold.
pub fn signed_token(secret: &[u8], header: &[u8], payload: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
    token
}

/// Runs `verify`, `verify_ignoring_expiry` and `decode_unverified` on one token, with and without legacy
/// tokens, and checks that their answers agree with each other:
///
/// - whatever `verify` accepts, `verify_ignoring_expiry` and `decode_unverified` accept with the same claims;
/// - whatever `verify_ignoring_expiry` accepts, `decode_unverified` accepts with the same claims, and
///   `verify` either accepts too or says `Expired`; otherwise both fail alike, except that an expired token's
///   later faults (`iat`, `iss`) show only when expiry is ignored;
/// - accepted claims are unexpired (for `verify`), not issued in the future, and carry the issuer (or none,
///   only when legacy tokens are accepted);
/// - accepting legacy tokens never turns an acceptance into a refusal.
///
/// Returns what `verify` answered with `accept_legacy = true`.
pub fn check_token(token: &str) -> Result<Claims, TokenError> {
    let keyring = keyring();
    let unverified = decode_unverified(token);
    let mut answers = Vec::with_capacity(2);
    for accept_legacy in [false, true] {
        let opts = options(accept_legacy);
        let verified = verify(keyring, token, &opts);
        let ignoring_expiry = verify_ignoring_expiry(keyring, token, &opts);
        match (&verified, &ignoring_expiry) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "verify and verify_ignoring_expiry disagree"),
            // `exp` is checked before `iat` and `iss`, so those checks speak only when expiry is ignored.
            (Err(TokenError::Expired), Ok(_) | Err(TokenError::NotYetValid | TokenError::WrongIssuer)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b, "the two verifications fail differently"),
            (a, b) => panic!("verify gave {a:?}, verify_ignoring_expiry gave {b:?}"),
        }
        if let Ok(claims) = &ignoring_expiry {
            assert_eq!(
                unverified.as_ref(),
                Ok(claims),
                "a verified token does not decode"
            );
            assert!(
                i128::from(claims.iat) <= i128::from(NOW) + i128::from(LEEWAY),
                "iat in the future"
            );
            match claims.iss.as_deref() {
                Some(iss) => assert_eq!(iss, ISSUER, "a foreign issuer passed"),
                None => assert!(accept_legacy, "a token without iss passed without accept_legacy"),
            }
        }
        if let Ok(claims) = &verified {
            assert!(
                i128::from(claims.exp) + i128::from(LEEWAY) >= i128::from(NOW),
                "an expired token passed"
            );
        }
        answers.push(verified);
    }
    if let [strict, legacy] = answers.as_slice()
        && let Ok(claims) = strict
    {
        assert_eq!(
            legacy.as_ref(),
            Ok(claims),
            "accept_legacy refused what the strict check accepts"
        );
    }
    answers.pop().unwrap_or(Err(TokenError::Malformed))
}
