//! Signing keys and the keyring: the first key signs, every key verifies, so keys rotate without downtime.
//!
//! A key is an HS256 secret or an EdDSA (Ed25519) or ES256 (ECDSA P-256) private key read from PKCS#8. The
//! asymmetric keys' public halves are published as a JWKS ([`Keyring::jwks`]), so that a verifier needs no
//! secret; a keyring of public keys alone is built from such a document by
//! [`Verifier::from_jwks`](super::Verifier::from_jwks).

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};

use super::claims::push_json_str;
use super::jwks::{Jwk, Jwks};

/// Fewest secret bytes a signing key may have: HS256 needs 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// The PEM label of a PKCS#8 private key.
const PKCS8_LABEL: &str = "PRIVATE KEY";

/// Length of an uncompressed SEC1 P-256 point: `0x04 || x || y`.
const P256_POINT_LEN: usize = 65;

/// Length of a P-256 coordinate and of an Ed25519 public key.
const COORDINATE_LEN: usize = 32;

/// Length of the longest signature (EdDSA, ES256) in bytes.
pub(crate) const MAX_SIGNATURE_LEN: usize = 64;

/// A signature, kept on the stack: the first `len` bytes of `bytes`.
pub(crate) struct Signature {
    bytes: [u8; MAX_SIGNATURE_LEN],
    len: usize,
}

impl Signature {
    fn of(signature: &[u8]) -> Signature {
        let mut bytes = [0u8; MAX_SIGNATURE_LEN];
        let len = signature.len().min(MAX_SIGNATURE_LEN);
        bytes[..len].copy_from_slice(&signature[..len]);
        Signature { bytes, len }
    }
}

impl AsRef<[u8]> for Signature {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A token signing algorithm: `alg` in the JWT header and the JWKS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret, CRM.COM's algorithm.
    #[default]
    #[serde(rename = "HS256")]
    Hs256,
    /// Ed25519 signatures (RFC 8037).
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// ECDSA on P-256 with SHA-256 (RFC 7518), signatures as `r || s`.
    #[serde(rename = "ES256")]
    Es256,
}

impl Algorithm {
    /// Every algorithm, HS256 first.
    pub const ALL: [Algorithm; 3] = [Algorithm::Hs256, Algorithm::EdDsa, Algorithm::Es256];

    /// The name written as `alg`: `HS256`, `EdDSA` or `ES256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Es256 => "ES256",
        }
    }

    /// The algorithm an `alg` names exactly, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// Whether keys of this algorithm have a public half (EdDSA, ES256).
    pub fn is_asymmetric(self) -> bool {
        self != Algorithm::Hs256
    }

    /// Length of a signature in bytes.
    pub(crate) fn signature_len(self) -> usize {
        match self {
            Algorithm::Hs256 => 32,
            Algorithm::EdDsa | Algorithm::Es256 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The prefix of an HS256 key file holding its secret in standard base64 (RFC 4648 section 4).
pub const SECRET_FILE_BASE64_PREFIX: &str = "base64:";

/// How a PKCS#8 PEM key file starts.
const PEM_START: &str = "-----BEGIN";

/// A key file could not be read, or holds no usable key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("signing key file {path}: {source}")]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: KeyringError,
    },
}

/// A signing key is unusable or a keyring is inconsistent. Messages name key ids, never secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// No key was configured.
    #[error("the keyring has no key")]
    Empty,
    /// A key has an empty id.
    #[error("a signing key has an empty id")]
    EmptyId,
    /// Two keys share an id, so `kid` could not tell them apart.
    #[error("signing key id {id:?} is used twice")]
    DuplicateId {
        /// The repeated id.
        id: String,
    },
    /// A secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("signing key {id:?} has a {len}-byte secret, at least 32 bytes are needed")]
    SecretTooShort {
        /// The key's id.
        id: String,
        /// The secret's length in bytes.
        len: usize,
    },
    /// A private key is not a PKCS#8 PEM Ed25519 or P-256 key.
    #[error(
        "signing key {id:?} is not a PKCS#8 PEM (\"BEGIN PRIVATE KEY\") Ed25519 or P-256 private key; a P-256 key \
         must include its public key, as OpenSSL writes it"
    )]
    BadPrivateKey {
        /// The key's id.
        id: String,
    },
    /// A JWKS entry of a supported type has a malformed public key.
    #[error("JWKS key {kid:?} is not a well-formed {alg} public key")]
    BadPublicKey {
        /// The key's `kid`.
        kid: String,
        /// The algorithm its type names.
        alg: Algorithm,
    },
    /// An HS256 key file starts with `base64:` but the rest is not standard base64.
    #[error("signing key {id:?}: the text after \"base64:\" is not standard base64")]
    BadSecretEncoding {
        /// The key's id.
        id: String,
    },
    /// Keys are generated only for EdDSA and ES256 here; an HS256 secret is plain random bytes.
    #[error("no key pair to generate for {0}")]
    NotAsymmetric(Algorithm),
    /// The OS random generator failed.
    #[error("the random generator failed")]
    Random,
}

/// The key material of one signing key.
#[derive(Clone)]
enum Material {
    Secret(Vec<u8>),
    Ed25519(Arc<Ed25519KeyPair>),
    Es256(Arc<EcdsaKeyPair>),
}

/// A signing key: an id (the tokens' `kid`), an HS256 secret of at least 32 bytes or an EdDSA/ES256 private
/// key, and optionally the time from which it signs. `Debug` hides the secret.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    material: Material,
    not_before: Option<i64>,
}

impl SigningKey {
    /// An HS256 key with this id and secret; fails when the id is empty or the secret shorter than 32 bytes.
    pub fn new(id: impl Into<String>, secret: Vec<u8>) -> Result<SigningKey, KeyringError> {
        let id = checked_id(id.into())?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyringError::SecretTooShort {
                id,
                len: secret.len(),
            });
        }
        Ok(SigningKey {
            id,
            material: Material::Secret(secret),
            not_before: None,
        })
    }

    /// An EdDSA or ES256 key from a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`); the algorithm is the
    /// key's own.
    pub fn from_pkcs8_pem(id: impl Into<String>, pem: &str) -> Result<SigningKey, KeyringError> {
        let id = checked_id(id.into())?;
        match pem_rfc7468::decode_vec(pem.trim().as_bytes()) {
            Ok((PKCS8_LABEL, der)) => SigningKey::from_pkcs8_der(id, &der),
            _ => Err(KeyringError::BadPrivateKey { id }),
        }
    }

    /// An EdDSA or ES256 key from a PKCS#8 DER document; the algorithm is the key's own.
    pub fn from_pkcs8_der(id: impl Into<String>, der: &[u8]) -> Result<SigningKey, KeyringError> {
        let id = checked_id(id.into())?;
        // OpenSSL writes Ed25519 keys as PKCS#8 v1 (without the public key), which ring's checked parser refuses.
        let material = if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            Material::Ed25519(Arc::new(pair))
        } else if let Ok(pair) =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
        {
            Material::Es256(Arc::new(pair))
        } else {
            return Err(KeyringError::BadPrivateKey { id });
        };
        Ok(SigningKey {
            id,
            material,
            not_before: None,
        })
    }

    /// The HS256 secret in the text of a secret file. One rule, for the server's `token.keys[].secret_file`,
    /// its generated `{data_dir}/signing-key` and [`Keyring::from_key_file`]:
    ///
    /// - `base64:` followed by standard base64 (padded, surrounding whitespace ignored): the decoded bytes.
    ///   The server writes its generated key this way, and this is the encoding to use for new files
    ///   (`printf 'base64:%s\n' "$(openssl rand -base64 32)" > secret`).
    /// - anything else: the file's bytes as they are, less trailing line breaks (`\r`, `\n`). A file written
    ///   without the prefix, `openssl rand -base64 32` output included, is therefore a secret of 44 text bytes,
    ///   not of the 32 bytes it encodes; this keeps every existing raw secret file verifying as before.
    pub fn secret_from_file_text(id: &str, text: &str) -> Result<Vec<u8>, KeyringError> {
        match text.trim_start().strip_prefix(SECRET_FILE_BASE64_PREFIX) {
            Some(encoded) => STANDARD
                .decode(encoded.trim())
                .map_err(|_| KeyringError::BadSecretEncoding { id: id.to_owned() }),
            None => Ok(text.trim_end_matches(['\r', '\n']).as_bytes().to_vec()),
        }
    }

    /// The key in the text of a key file: a PKCS#8 PEM private key (EdDSA or ES256) when the text starts
    /// with `-----BEGIN`, else an HS256 secret read as [`SigningKey::secret_from_file_text`] says.
    pub fn from_key_file_text(id: impl Into<String>, text: &str) -> Result<SigningKey, KeyringError> {
        let id = checked_id(id.into())?;
        if text.trim_start().starts_with(PEM_START) {
            SigningKey::from_pkcs8_pem(id, text)
        } else {
            let secret = SigningKey::secret_from_file_text(&id, text)?;
            SigningKey::new(id, secret)
        }
    }

    /// A new random EdDSA or ES256 private key as a PKCS#8 PEM document, for [`SigningKey::from_pkcs8_pem`].
    pub fn generate_pkcs8_pem(algorithm: Algorithm) -> Result<String, KeyringError> {
        let rng = SystemRandom::new();
        let document = match algorithm {
            Algorithm::Hs256 => return Err(KeyringError::NotAsymmetric(algorithm)),
            Algorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
            Algorithm::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
        }
        .map_err(|_| KeyringError::Random)?;
        pem_rfc7468::encode_string(PKCS8_LABEL, pem_rfc7468::LineEnding::LF, document.as_ref())
            .map_err(|_| KeyringError::Random)
    }

    /// This key signs only tokens issued at or after `not_before` (unix seconds); it verifies at once.
    pub fn with_not_before(mut self, not_before: i64) -> SigningKey {
        self.not_before = Some(not_before);
        self
    }

    /// The key id, written as `kid` into the header of the tokens it signs.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            Material::Secret(_) => Algorithm::Hs256,
            Material::Ed25519(_) => Algorithm::EdDsa,
            Material::Es256(_) => Algorithm::Es256,
        }
    }

    /// The time (unix seconds) from which the key signs, if it has one.
    pub fn not_before(&self) -> Option<i64> {
        self.not_before
    }
}

fn checked_id(id: String) -> Result<String, KeyringError> {
    if id.is_empty() {
        return Err(KeyringError::EmptyId);
    }
    Ok(id)
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm())
            .field("secret", &format_args!("***"))
            .field("not_before", &self.not_before)
            .finish()
    }
}

/// How one key signs and verifies. A key from a JWKS has no signing half.
#[derive(Clone)]
pub(crate) enum KeyMaterial {
    Hmac(hmac::Key),
    Ed25519 {
        pair: Option<Arc<Ed25519KeyPair>>,
        public: Vec<u8>,
    },
    Es256 {
        pair: Option<Arc<EcdsaKeyPair>>,
        /// The uncompressed SEC1 point.
        public: Vec<u8>,
    },
}

/// One key ready for use: its material (an HMAC key with its padded states precomputed, or a key pair), and
/// the encoded header of the tokens it signs, which is the same for every token.
#[derive(Clone)]
pub(crate) struct KeyEntry {
    pub(crate) id: String,
    pub(crate) alg: Algorithm,
    pub(crate) header_b64: String,
    pub(crate) not_before: Option<i64>,
    pub(crate) material: KeyMaterial,
}

impl KeyEntry {
    fn new(key: &SigningKey) -> KeyEntry {
        let material = match &key.material {
            Material::Secret(secret) => KeyMaterial::Hmac(hmac::Key::new(hmac::HMAC_SHA256, secret)),
            Material::Ed25519(pair) => KeyMaterial::Ed25519 {
                public: pair.public_key().as_ref().to_vec(),
                pair: Some(Arc::clone(pair)),
            },
            Material::Es256(pair) => KeyMaterial::Es256 {
                public: pair.public_key().as_ref().to_vec(),
                pair: Some(Arc::clone(pair)),
            },
        };
        KeyEntry::with_material(&key.id, key.algorithm(), key.not_before, material)
    }

    fn with_material(id: &str, alg: Algorithm, not_before: Option<i64>, material: KeyMaterial) -> KeyEntry {
        let mut header = String::with_capacity(40 + id.len());
        header.push_str(r#"{"typ":"JWT","alg":""#);
        header.push_str(alg.name());
        header.push_str(r#"","kid":"#);
        push_json_str(&mut header, id);
        header.push('}');
        KeyEntry {
            id: id.to_owned(),
            alg,
            header_b64: URL_SAFE_NO_PAD.encode(header),
            not_before,
            material,
        }
    }

    /// A verification-only key from a JWKS entry: `None` for entries of other types or uses, which a JWKS
    /// shared with other issuers may hold.
    pub(crate) fn from_jwk(jwk: &Jwk) -> Result<Option<KeyEntry>, KeyringError> {
        let Some(kid) = jwk.kid.as_deref().filter(|kid| !kid.is_empty()) else {
            return Ok(None);
        };
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let alg = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => Algorithm::EdDsa,
            ("EC", Some("P-256")) => Algorithm::Es256,
            _ => return Ok(None),
        };
        if jwk.alg.as_deref().is_some_and(|named| named != alg.name()) {
            return Ok(None);
        }
        let bad = || KeyringError::BadPublicKey {
            kid: kid.to_owned(),
            alg,
        };
        let coordinate = |value: Option<&String>| -> Result<Vec<u8>, KeyringError> {
            let bytes = URL_SAFE_NO_PAD
                .decode(value.ok_or_else(bad)?)
                .map_err(|_| bad())?;
            if bytes.len() != COORDINATE_LEN {
                return Err(bad());
            }
            Ok(bytes)
        };
        let material = match alg {
            Algorithm::EdDsa => KeyMaterial::Ed25519 {
                pair: None,
                public: coordinate(jwk.x.as_ref())?,
            },
            _ => {
                let mut public = Vec::with_capacity(P256_POINT_LEN);
                public.push(0x04);
                public.extend(coordinate(jwk.x.as_ref())?);
                public.extend(coordinate(jwk.y.as_ref())?);
                if !point_is_valid(&public) {
                    return Err(bad());
                }
                KeyMaterial::Es256 { pair: None, public }
            }
        };
        Ok(Some(KeyEntry::with_material(kid, alg, None, material)))
    }

    /// Whether this key may sign a token issued at `at`.
    fn signs_at(&self, at: i64) -> bool {
        let has_pair = match &self.material {
            KeyMaterial::Hmac(_) => true,
            KeyMaterial::Ed25519 { pair, .. } => pair.is_some(),
            KeyMaterial::Es256 { pair, .. } => pair.is_some(),
        };
        has_pair && self.not_before.is_none_or(|not_before| not_before <= at)
    }

    /// The signature of `input`. ES256 signatures are randomised, the others depend on the input alone.
    pub(crate) fn sign(&self, input: &[u8]) -> Signature {
        match &self.material {
            KeyMaterial::Hmac(key) => Signature::of(hmac::sign(key, input).as_ref()),
            KeyMaterial::Ed25519 { pair: Some(pair), .. } => Signature::of(pair.sign(input).as_ref()),
            KeyMaterial::Es256 { pair: Some(pair), .. } => match pair.sign(&SystemRandom::new(), input) {
                Ok(signature) => Signature::of(signature.as_ref()),
                // ring fails only when the OS random generator does; an empty signature verifies nowhere.
                Err(_) => Signature::of(&[]),
            },
            // Keyring::signer only picks keys with a private half.
            _ => Signature::of(&[]),
        }
    }

    /// Whether `signature` is this key's over `input`; HMAC tags are compared in constant time.
    pub(crate) fn verify(&self, input: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            KeyMaterial::Hmac(key) => hmac::verify(key, input, signature).is_ok(),
            KeyMaterial::Ed25519 { public, .. } => UnparsedPublicKey::new(&signature::ED25519, public)
                .verify(input, signature)
                .is_ok(),
            KeyMaterial::Es256 { public, .. } => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
                .verify(input, signature)
                .is_ok(),
        }
    }

    /// The public key as a JWK, for asymmetric keys.
    fn jwk(&self) -> Option<Jwk> {
        let (kty, crv, x, y) = match &self.material {
            KeyMaterial::Hmac(_) => return None,
            KeyMaterial::Ed25519 { public, .. } => ("OKP", "Ed25519", public.as_slice(), None),
            KeyMaterial::Es256 { public, .. } => {
                let xy = public.get(1..)?;
                let (x, y) = xy.split_at(COORDINATE_LEN);
                ("EC", "P-256", x, Some(y))
            }
        };
        Some(Jwk {
            kty: kty.to_owned(),
            crv: Some(crv.to_owned()),
            x: Some(URL_SAFE_NO_PAD.encode(x)),
            y: y.map(|y| URL_SAFE_NO_PAD.encode(y)),
            kid: Some(self.id.clone()),
            alg: Some(self.alg.name().to_owned()),
            use_: Some("sig".to_owned()),
        })
    }
}

/// Whether a SEC1 P-256 point has the uncompressed form; whether it lies on the curve ring checks at each
/// verification, refusing every signature for a point that does not.
fn point_is_valid(public: &[u8]) -> bool {
    public.len() == P256_POINT_LEN && public.first() == Some(&0x04)
}

/// The configured signing keys. The first key that may sign at a token's `iat` signs it (a key with
/// `not_before` waits until then); all of them verify, so a key is rotated by putting the new one first and
/// dropping the old one a token lifetime later. `Debug` prints key ids only.
#[derive(Clone)]
pub struct Keyring {
    entries: Vec<KeyEntry>,
}

impl Keyring {
    /// A keyring of these keys, the first of which signs. Fails on an empty list or a repeated id.
    pub fn new(keys: Vec<SigningKey>) -> Result<Keyring, KeyringError> {
        let mut entries: Vec<KeyEntry> = Vec::with_capacity(keys.len());
        for key in &keys {
            if entries.iter().any(|e| e.id == key.id) {
                return Err(KeyringError::DuplicateId { id: key.id.clone() });
            }
            entries.push(KeyEntry::new(key));
        }
        if entries.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring { entries })
    }

    /// The id of the first key, which signs unless it waits for its `not_before`.
    pub fn signing_key_id(&self) -> &str {
        self.entries.first().map_or("", |e| e.id.as_str())
    }

    /// A keyring of the one key in the file at `path`, named `id`: the key id the server gives it, `generated`
    /// for its generated `{data_dir}/signing-key`, else the `id` of its `token.keys` entry. The file is read as
    /// [`SigningKey::from_key_file_text`] says: PKCS#8 PEM for EdDSA and ES256, else an HS256 secret,
    /// `base64:`-prefixed or raw. For EdDSA and ES256, a verifier needs no private key: prefer
    /// [`Verifier::from_jwks`](super::Verifier::from_jwks) on the server's JWKS.
    ///
    /// This is the one function of the crate that does I/O.
    pub fn from_key_file(
        id: impl Into<String>,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Keyring, KeyFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        SigningKey::from_key_file_text(id, &text)
            .and_then(|key| Keyring::new(vec![key]))
            .map_err(|source| KeyFileError::Key {
                path: path.to_owned(),
                source,
            })
    }

    /// The id of the key that signs tokens issued at `at` (unix seconds), if any may.
    pub fn signing_key_id_at(&self, at: i64) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.signs_at(at))
            .map(|e| e.id.as_str())
    }

    /// The ids of every key, the first key first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.entries().map(|e| e.id.as_str())
    }

    /// Every key's id and algorithm, in order.
    pub fn algorithms(&self) -> impl Iterator<Item = (&str, Algorithm)> {
        self.entries().map(|e| (e.id.as_str(), e.alg))
    }

    /// How many keys there are (at least one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always `false`: a keyring has at least one key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every asymmetric key's public half, in order; HS256 secrets are never included.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.entries().filter_map(KeyEntry::jwk).collect(),
        }
    }

    /// The key that signs a token issued at `at`: the first that may, else the first of all (a keyring whose
    /// keys all wait is refused by the server's configuration check).
    pub(crate) fn signer(&self, at: i64) -> &KeyEntry {
        self.entries
            .iter()
            .find(|e| e.signs_at(at))
            .unwrap_or(&self.entries[0])
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &KeyEntry> {
        self.entries.iter()
    }

    pub(crate) fn keys(&self) -> &[KeyEntry] {
        &self.entries
    }

    pub(crate) fn into_entries(self) -> Vec<KeyEntry> {
        self.entries
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_secrets_and_empty_ids() {
        assert_eq!(
            SigningKey::new("k1", vec![7; 31]).err(),
            Some(KeyringError::SecretTooShort {
                id: "k1".into(),
                len: 31
            })
        );
        assert_eq!(
            SigningKey::new("", vec![7; 32]).err(),
            Some(KeyringError::EmptyId)
        );
        assert!(SigningKey::new("k1", vec![7; 32]).is_ok());
    }

    #[test]
    fn rejects_empty_and_duplicate() -> Result<(), KeyringError> {
        assert_eq!(Keyring::new(vec![]).err(), Some(KeyringError::Empty));
        let a = SigningKey::new("a", vec![1; 32])?;
        let b = SigningKey::new("b", vec![2; 32])?;
        let a2 = SigningKey::new("a", vec![3; 32])?;
        assert_eq!(
            Keyring::new(vec![a.clone(), b.clone(), a2]).err(),
            Some(KeyringError::DuplicateId { id: "a".into() })
        );
        let ring = Keyring::new(vec![b, a])?;
        assert_eq!(ring.signing_key_id(), "b");
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["b", "a"]);
        Ok(())
    }

    #[test]
    fn header_is_exact() -> Result<(), Box<dyn std::error::Error>> {
        let ring = Keyring::new(vec![SigningKey::new("k\"1", vec![1; 32])?])?;
        let header = URL_SAFE_NO_PAD.decode(&ring.signer(0).header_b64)?;
        assert_eq!(
            std::str::from_utf8(&header)?,
            r#"{"typ":"JWT","alg":"HS256","kid":"k\"1"}"#
        );
        let pem = SigningKey::generate_pkcs8_pem(Algorithm::EdDsa)?;
        let ring = Keyring::new(vec![SigningKey::from_pkcs8_pem("e", &pem)?])?;
        let header = URL_SAFE_NO_PAD.decode(&ring.signer(0).header_b64)?;
        assert_eq!(
            std::str::from_utf8(&header)?,
            r#"{"typ":"JWT","alg":"EdDSA","kid":"e"}"#
        );
        Ok(())
    }

    #[test]
    fn debug_shows_ids_only() -> Result<(), KeyringError> {
        let key = SigningKey::new("main", b"0123456789abcdefghijklmnopqrstuvwxyz".to_vec())?;
        assert_eq!(
            format!("{key:?}"),
            r#"SigningKey { id: "main", algorithm: Hs256, secret: ***, not_before: None }"#
        );
        let ring = Keyring::new(vec![key])?;
        assert_eq!(format!("{ring:?}"), r#"Keyring { key_ids: ["main"] }"#);
        Ok(())
    }

    #[test]
    fn not_before_defers_signing_only() -> Result<(), KeyringError> {
        let pem = SigningKey::generate_pkcs8_pem(Algorithm::Es256)?;
        let new = SigningKey::from_pkcs8_pem("new", &pem)?.with_not_before(1_000);
        let old = SigningKey::new("old", vec![9; 32])?;
        let ring = Keyring::new(vec![new, old])?;
        assert_eq!(ring.signing_key_id_at(999), Some("old"));
        assert_eq!(ring.signing_key_id_at(1_000), Some("new"));
        // Published at once, so that caches know it before its first token.
        assert_eq!(ring.jwks().keys.len(), 1);
        Ok(())
    }

    #[test]
    fn generated_keys_have_their_algorithm() -> Result<(), KeyringError> {
        for alg in [Algorithm::EdDsa, Algorithm::Es256] {
            let pem = SigningKey::generate_pkcs8_pem(alg)?;
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            assert_eq!(SigningKey::from_pkcs8_pem("k", &pem)?.algorithm(), alg);
        }
        assert_eq!(
            SigningKey::generate_pkcs8_pem(Algorithm::Hs256).err(),
            Some(KeyringError::NotAsymmetric(Algorithm::Hs256))
        );
        assert_eq!(
            SigningKey::from_pkcs8_pem(
                "k",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .err(),
            Some(KeyringError::BadPrivateKey { id: "k".into() })
        );
        Ok(())
    }
}
