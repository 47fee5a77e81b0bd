//! The JSON Web Key Set (RFC 7517) the server publishes at `/.well-known/jwks.json`: the public halves of its
//! EdDSA and ES256 keys, from which any verifier checks tokens without a secret.

use serde::{Deserialize, Serialize};

/// A JSON Web Key Set: `{"keys": [...]}`. Members other than `keys` are ignored when read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwks {
    /// The keys; empty when no asymmetric key is configured.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Reads a JWKS document; keys of types this crate does not verify are kept here and skipped by
    /// [`Verifier::from_jwks`](super::Verifier::from_jwks).
    pub fn from_json(json: &[u8]) -> Result<Jwks, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// One public key. Written for Ed25519 (`kty: OKP`, `crv: Ed25519`, `x`) and P-256 (`kty: EC`, `crv: P-256`,
/// `x`, `y`); other members of keys read from elsewhere (an RSA key's `n`, `e`) are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwk {
    /// The key type: `OKP` (Ed25519) or `EC` (P-256).
    #[cfg_attr(feature = "openapi", schema(example = "OKP"))]
    pub kty: String,
    /// The curve: `Ed25519` or `P-256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "Ed25519"))]
    pub crv: Option<String>,
    /// The public key (Ed25519) or its x coordinate (P-256), base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// The y coordinate (P-256 only), base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The key id, as in the `kid` of the tokens it signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The algorithm: `EdDSA` or `ES256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "EdDSA"))]
    pub alg: Option<String>,
    /// What the key is for: always `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "sig"))]
    pub use_: Option<String>,
}
