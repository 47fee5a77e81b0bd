//! The session token: a compact JWT signed with HS256, issued and verified against a [`Keyring`].
//!
//! Header and claims are handled here rather than by a general JWT library, for reasons the contract imposes:
//! `iat`/`exp` may be JSON strings of digits (CRM.COM's own tokens carry them so), `alg` must be checked before
//! any key is touched, a token without `kid` must be tried against every key, and the header is fixed per key,
//! so it is encoded once and reused. The cryptography itself is ring's HMAC-SHA256, with each key's padded
//! states precomputed, and its constant-time tag comparison.

mod claims;
mod keyring;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::Deserialize;

use crate::envelope::ErrorCode;
use crate::limits::MAX_TOKEN_BYTES;

pub use claims::{Claims, DateFormat};
pub use keyring::{Keyring, KeyringError, MIN_SECRET_BYTES, SigningKey};

use keyring::KeyEntry;

/// Length of an HS256 signature in base64url without padding.
const SIGNATURE_B64_LEN: usize = 43;

/// Length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Why a token was refused. Messages never include any part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWT with a JSON header and well-formed claims, or longer than the limit.
    #[error("malformed token")]
    Malformed,
    /// The signature matches no key that could have made it.
    #[error("bad token signature")]
    BadSignature,
    /// The header names a key id that is not configured.
    #[error("unknown signing key")]
    UnknownKey,
    /// The header's `alg` is not `HS256`.
    #[error("unsupported token algorithm")]
    WrongAlgorithm,
    /// The token is past its `exp`, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// The token's `iat` lies in the future, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// The token's `iss` is not the configured issuer, or is absent while legacy tokens are not accepted.
    #[error("wrong token issuer")]
    WrongIssuer,
}

impl TokenError {
    /// The envelope code to answer with: `TOKEN_EXPIRED` for [`TokenError::Expired`], else `INVALID_TOKEN`.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::InvalidToken,
        }
    }
}

/// What [`verify`] checks a token against.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// The current time, unix seconds.
    pub now: i64,
    /// Seconds of clock skew tolerated on `exp` and `iat`.
    pub leeway: u64,
    /// The `iss` a token must carry.
    pub issuer: String,
    /// Whether a token without `iss` passes (tokens minted by a CRM.COM deployment sharing the secret).
    pub accept_legacy: bool,
}

/// Signs `claims` with the keyring's first key.
///
/// The header is `{"typ":"JWT","alg":"HS256","kid":"<key id>"}`; `iat`/`exp` are written per `format`. The
/// result depends only on its inputs, so the same claims and key always give the same token.
pub fn issue(keyring: &Keyring, claims: &Claims, format: DateFormat) -> String {
    let key = keyring.signer();
    let mut json = String::with_capacity(claims.json_capacity());
    claims.write_json(&mut json, format);
    let payload_len = json.len().div_ceil(3) * 4;
    let mut token = String::with_capacity(key.header_b64.len() + payload_len + SIGNATURE_B64_LEN + 2);
    token.push_str(&key.header_b64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(json.as_bytes(), &mut token);
    let tag = hmac::sign(&key.hmac, token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
    token
}

/// Verifies a token and returns its claims.
///
/// In this order: the shape (three segments, at most [`MAX_TOKEN_BYTES`]); the header (`alg` exactly `HS256`
/// before any key is used, `typ` if present `JWT`); the key (by `kid`, else every key is tried); the signature;
/// the claims; `exp` (expired when `now > exp + leeway`); `iat` (not after `now + leeway`); `iss`.
pub fn verify(keyring: &Keyring, token: &str, opts: &VerifyOptions) -> Result<Claims, TokenError> {
    check(keyring, token, &Checks::new(opts, true))
}

/// Every check of [`verify`] but the `exp` time comparison; `exp` must still be present and well-formed.
///
/// For releasing an expired token's session, and for refresh, which applies its own grace period.
pub fn verify_ignoring_expiry(
    keyring: &Keyring,
    token: &str,
    opts: &VerifyOptions,
) -> Result<Claims, TokenError> {
    check(keyring, token, &Checks::new(opts, false))
}

/// The claims of a token without checking its signature or times, for holders of no secret such as the SDK.
///
/// Still refuses what is not a compact JWT with a JSON header and well-formed claims.
pub fn decode_unverified(token: &str) -> Result<Claims, TokenError> {
    let parts = Parts::split(token)?;
    decode_header(parts.header)?;
    decode_claims(parts.payload)
}

/// Offline token verification for downstream services: a keyring and the checks to apply, set once.
#[derive(Clone, Debug)]
pub struct Verifier {
    keyring: Keyring,
    leeway: u64,
    issuer: String,
    accept_legacy: bool,
}

impl Verifier {
    /// A verifier of tokens signed by `keyring` for `issuer`, with no leeway and no legacy tokens.
    pub fn new(keyring: Keyring, issuer: impl Into<String>) -> Verifier {
        Verifier {
            keyring,
            leeway: 0,
            issuer: issuer.into(),
            accept_legacy: false,
        }
    }

    /// Tolerates this many seconds of clock skew on `exp` and `iat`.
    pub fn with_leeway(mut self, leeway: u64) -> Verifier {
        self.leeway = leeway;
        self
    }

    /// Whether tokens without `iss` pass.
    pub fn with_accept_legacy(mut self, accept_legacy: bool) -> Verifier {
        self.accept_legacy = accept_legacy;
        self
    }

    /// The keyring tokens are checked against.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Verifies `token` at time `now` (unix seconds), as [`verify`] does.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let checks = Checks {
            now,
            leeway: self.leeway,
            issuer: &self.issuer,
            accept_legacy: self.accept_legacy,
            check_exp: true,
        };
        check(&self.keyring, token, &checks)
    }
}

struct Checks<'a> {
    now: i64,
    leeway: u64,
    issuer: &'a str,
    accept_legacy: bool,
    check_exp: bool,
}

impl<'a> Checks<'a> {
    fn new(opts: &'a VerifyOptions, check_exp: bool) -> Checks<'a> {
        Checks {
            now: opts.now,
            leeway: opts.leeway,
            issuer: &opts.issuer,
            accept_legacy: opts.accept_legacy,
            check_exp,
        }
    }
}

/// The three segments of a compact JWT.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`: the bytes the signature covers.
    signing_input: &'a str,
}

impl<'a> Parts<'a> {
    fn split(token: &'a str) -> Result<Parts<'a>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        // An empty signature is left to the signature check, so `alg: none` tokens report the algorithm.
        if header.is_empty() || payload.is_empty() || payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        Ok(Parts {
            header,
            payload,
            signature,
            signing_input,
        })
    }
}

/// The header members verification looks at; others are ignored.
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
}

fn decode_header(header_b64: &str) -> Result<Header, TokenError> {
    let json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| TokenError::Malformed)?;
    parse_object::<Header>(&json)
}

fn decode_claims(payload_b64: &str) -> Result<Claims, TokenError> {
    let json = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| TokenError::Malformed)?;
    parse_object::<Claims>(&json)
}

/// Parses a JSON object, refusing arrays that serde would otherwise map onto a struct.
fn parse_object<'de, T: Deserialize<'de>>(json: &'de [u8]) -> Result<T, TokenError> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(TokenError::Malformed);
    }
    serde_json::from_slice(json).map_err(|_| TokenError::Malformed)
}

/// Which keys may have signed a token.
enum Candidates<'a> {
    One(&'a KeyEntry),
    All,
}

fn select_key<'k>(keyring: &'k Keyring, header_b64: &str) -> Result<Candidates<'k>, TokenError> {
    // A header byte for byte the one a configured key writes needs no decoding: its `alg`, `typ` and `kid`
    // are known. This is the common case and saves a base64 and a JSON pass.
    if let Some(entry) = keyring.entries().find(|e| e.header_b64 == header_b64) {
        return Ok(Candidates::One(entry));
    }
    let header = decode_header(header_b64)?;
    if header.alg.as_deref() != Some("HS256") {
        return Err(TokenError::WrongAlgorithm);
    }
    if let Some(typ) = &header.typ
        && !typ.eq_ignore_ascii_case("JWT")
    {
        return Err(TokenError::Malformed);
    }
    match &header.kid {
        Some(kid) => keyring
            .find(kid)
            .map(Candidates::One)
            .ok_or(TokenError::UnknownKey),
        None => Ok(Candidates::All),
    }
}

fn check(keyring: &Keyring, token: &str, checks: &Checks<'_>) -> Result<Claims, TokenError> {
    let parts = Parts::split(token)?;
    let candidates = select_key(keyring, parts.header)?;

    let mut tag = [0u8; TAG_LEN];
    if parts.signature.len() != SIGNATURE_B64_LEN
        || URL_SAFE_NO_PAD.decode_slice(parts.signature, &mut tag) != Ok(TAG_LEN)
    {
        return Err(TokenError::BadSignature);
    }
    let input = parts.signing_input.as_bytes();
    let signed = match candidates {
        Candidates::One(entry) => hmac::verify(&entry.hmac, input, &tag).is_ok(),
        Candidates::All => keyring
            .entries()
            .any(|entry| hmac::verify(&entry.hmac, input, &tag).is_ok()),
    };
    if !signed {
        return Err(TokenError::BadSignature);
    }

    let claims = decode_claims(parts.payload)?;
    let now = i128::from(checks.now);
    let leeway = i128::from(checks.leeway);
    if checks.check_exp && now > i128::from(claims.exp) + leeway {
        return Err(TokenError::Expired);
    }
    if i128::from(claims.iat) > now + leeway {
        return Err(TokenError::NotYetValid);
    }
    match &claims.iss {
        Some(iss) if iss == checks.issuer => {}
        None if checks.accept_legacy => {}
        _ => return Err(TokenError::WrongIssuer),
    }
    Ok(claims)
}
