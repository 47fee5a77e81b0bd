//! The session token: a compact JWT signed with HS256, EdDSA or ES256, issued and verified against a
//! [`Keyring`].
//!
//! Header and claims are handled here rather than by a general JWT library, for reasons the contract imposes:
//! `iat`/`exp` may be JSON strings of digits (CRM.COM's own tokens carry them so), `alg` must be checked
//! against the key `kid` names before the key is touched, a token without `kid` must be tried against every
//! key of its algorithm, and the header is fixed per key, so it is encoded once and reused. The cryptography
//! itself is ring's: HMAC-SHA256 with each key's padded states precomputed and its constant-time tag
//! comparison, Ed25519, and ECDSA P-256 with fixed-length (`r || s`) signatures as JWS wants them.

mod claims;
mod jwks;
mod keyring;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::envelope::ErrorCode;
use crate::limits::MAX_TOKEN_BYTES;

pub use claims::{Claims, DateFormat};
pub use jwks::{Jwk, Jwks};
pub use keyring::{
    Algorithm, KeyFileError, Keyring, KeyringError, MIN_SECRET_BYTES, SECRET_FILE_BASE64_PREFIX, SigningKey,
};

use keyring::{KeyEntry, MAX_SIGNATURE_LEN};

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
    /// The header's `alg` is none of ours, or not the algorithm of the key its `kid` names.
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

/// Signs `claims` with the keyring's first key that may sign at the claims' `iat` (a key with `not_before`
/// waits until then).
///
/// The header is `{"typ":"JWT","alg":"<HS256|EdDSA|ES256>","kid":"<key id>"}`; `iat`/`exp` are written per
/// `format`. With HS256 and EdDSA the result depends only on its inputs, so the same claims and key always give
/// the same token; ES256 signatures are randomised.
pub fn issue(keyring: &Keyring, claims: &Claims, format: DateFormat) -> String {
    let key = keyring.signer(claims.iat);
    let mut json = String::with_capacity(claims.json_capacity());
    claims.write_json(&mut json, format);
    let payload_len = json.len().div_ceil(3) * 4;
    let signature_len = (4 * key.alg.signature_len()).div_ceil(3);
    let mut token = String::with_capacity(key.header_b64.len() + payload_len + signature_len + 2);
    token.push_str(&key.header_b64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(json.as_bytes(), &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

/// Verifies a token and returns its claims.
///
/// In this order: the shape (three segments, at most [`MAX_TOKEN_BYTES`]); the header (`alg` one of `HS256`,
/// `EdDSA`, `ES256`, `typ` if present `JWT`); the key (by `kid`, whose algorithm must be the header's `alg`
/// before the key is used; without `kid`, every key of that algorithm is tried); the signature; the claims;
/// `exp` (expired when `now > exp + leeway`); `iat` (not after `now + leeway`); `iss`.
pub fn verify(keyring: &Keyring, token: &str, opts: &VerifyOptions) -> Result<Claims, TokenError> {
    check(keyring.keys(), token, &Checks::new(opts, true))
}

/// Every check of [`verify`] but the `exp` time comparison; `exp` must still be present and well-formed.
///
/// For releasing an expired token's session, and for refresh, which applies its own grace period.
pub fn verify_ignoring_expiry(
    keyring: &Keyring,
    token: &str,
    opts: &VerifyOptions,
) -> Result<Claims, TokenError> {
    check(keyring.keys(), token, &Checks::new(opts, false))
}

/// The claims of a token without checking its signature or times, for holders of no secret such as the SDK.
///
/// Still refuses what is not a compact JWT with a JSON header and well-formed claims.
pub fn decode_unverified(token: &str) -> Result<Claims, TokenError> {
    let parts = Parts::split(token)?;
    decode_header(parts.header)?;
    decode_claims(parts.payload)
}

/// Offline token verification for downstream services: the keys and the checks to apply, set once.
///
/// The keys are a [`Keyring`] (HS256 services sharing the secret) or the public keys of a JWKS document
/// ([`Verifier::from_jwks`]), which needs no secret.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<KeyEntry>,
    leeway: u64,
    issuer: String,
    accept_legacy: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .field("leeway", &self.leeway)
            .field("issuer", &self.issuer)
            .field("accept_legacy", &self.accept_legacy)
            .finish()
    }
}

impl Verifier {
    /// A verifier of tokens signed by `keyring` for `issuer`, with no leeway and no legacy tokens.
    pub fn new(keyring: Keyring, issuer: impl Into<String>) -> Verifier {
        Verifier {
            keys: keyring.into_entries(),
            leeway: 0,
            issuer: issuer.into(),
            accept_legacy: false,
        }
    }

    /// A verifier of tokens signed by the keys of a JWKS document for `issuer`, with no leeway and no legacy
    /// tokens. Ed25519 (`OKP`) and P-256 (`EC`) keys with a `kid` are taken; keys of other types, curves or
    /// uses (a JWKS shared with other issuers) are skipped, so the set may be empty and refuse every token.
    /// Fails on a malformed key of a supported type or a repeated `kid`.
    pub fn from_jwks(jwks: &Jwks, issuer: impl Into<String>) -> Result<Verifier, KeyringError> {
        let mut keys: Vec<KeyEntry> = Vec::with_capacity(jwks.keys.len());
        for jwk in &jwks.keys {
            if let Some(entry) = KeyEntry::from_jwk(jwk)? {
                if keys.iter().any(|k| k.id == entry.id) {
                    return Err(KeyringError::DuplicateId { id: entry.id });
                }
                keys.push(entry);
            }
        }
        Ok(Verifier {
            keys,
            leeway: 0,
            issuer: issuer.into(),
            accept_legacy: false,
        })
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

    /// The ids of the keys tokens are checked against.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Whether a key with this id is known, so that a JWKS cache can tell a token of a new key from a forgery
    /// without verifying it.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.id == kid)
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
        check(&self.keys, token, &checks)
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

/// The `kid` of a token's header, if it has one, without checking anything else; for a JWKS cache deciding
/// whether to refetch. `None` for a token that is not a JWT.
pub fn header_kid(token: &str) -> Option<String> {
    let parts = Parts::split(token).ok()?;
    decode_header(parts.header).ok()?.kid
}

/// Which keys may have signed a token.
enum Candidates<'a> {
    One(&'a KeyEntry),
    /// No `kid`: every key of this algorithm.
    All(Algorithm),
}

fn select_key<'k>(keys: &'k [KeyEntry], header_b64: &str) -> Result<Candidates<'k>, TokenError> {
    // A header byte for byte the one a configured key writes needs no decoding: its `alg`, `typ` and `kid`
    // are known. This is the common case and saves a base64 and a JSON pass.
    if let Some(entry) = keys.iter().find(|e| e.header_b64 == header_b64) {
        return Ok(Candidates::One(entry));
    }
    let header = decode_header(header_b64)?;
    let alg = header
        .alg
        .as_deref()
        .and_then(Algorithm::from_name)
        .ok_or(TokenError::WrongAlgorithm)?;
    if let Some(typ) = &header.typ
        && !typ.eq_ignore_ascii_case("JWT")
    {
        return Err(TokenError::Malformed);
    }
    match &header.kid {
        Some(kid) => {
            let entry = keys.iter().find(|e| e.id == *kid).ok_or(TokenError::UnknownKey)?;
            // The key decides the algorithm, never the token: an HS256 header naming an EdDSA key would
            // otherwise have its HMAC checked against the public key's bytes.
            if entry.alg != alg {
                return Err(TokenError::WrongAlgorithm);
            }
            Ok(Candidates::One(entry))
        }
        None => Ok(Candidates::All(alg)),
    }
}

fn check(keys: &[KeyEntry], token: &str, checks: &Checks<'_>) -> Result<Claims, TokenError> {
    let parts = Parts::split(token)?;
    let candidates = select_key(keys, parts.header)?;
    let alg = match &candidates {
        Candidates::One(entry) => entry.alg,
        Candidates::All(alg) => *alg,
    };

    let len = alg.signature_len();
    let mut buffer = [0u8; MAX_SIGNATURE_LEN];
    if parts.signature.len() != (4 * len).div_ceil(3)
        || URL_SAFE_NO_PAD.decode_slice(parts.signature, &mut buffer) != Ok(len)
    {
        return Err(TokenError::BadSignature);
    }
    let signature = &buffer[..len];
    let input = parts.signing_input.as_bytes();
    let signed = match candidates {
        Candidates::One(entry) => entry.verify(input, signature),
        Candidates::All(alg) => keys
            .iter()
            .filter(|entry| entry.alg == alg)
            .any(|entry| entry.verify(input, signature)),
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
