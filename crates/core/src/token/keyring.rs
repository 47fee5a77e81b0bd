//! Signing keys and the keyring: the first key signs, every key verifies, so keys rotate without downtime.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use super::claims::push_json_str;

/// Fewest secret bytes a signing key may have: HS256 needs 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

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
}

/// An HS256 signing key: an id (the tokens' `kid`) and a secret of at least 32 bytes. `Debug` hides the secret.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    secret: Vec<u8>,
}

impl SigningKey {
    /// A key with this id and secret; fails when the id is empty or the secret shorter than 32 bytes.
    pub fn new(id: impl Into<String>, secret: Vec<u8>) -> Result<SigningKey, KeyringError> {
        let id = id.into();
        if id.is_empty() {
            return Err(KeyringError::EmptyId);
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyringError::SecretTooShort {
                id,
                len: secret.len(),
            });
        }
        Ok(SigningKey { id, secret })
    }

    /// The key id, written as `kid` into the header of the tokens it signs.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("secret", &format_args!("***"))
            .finish()
    }
}

/// One key ready for use: the HMAC key with its padded states precomputed, and the encoded header of the
/// tokens it signs, which is the same for every token.
#[derive(Clone)]
pub(crate) struct KeyEntry {
    pub(crate) id: String,
    pub(crate) hmac: hmac::Key,
    pub(crate) header_b64: String,
}

impl KeyEntry {
    fn new(key: &SigningKey) -> KeyEntry {
        let mut header = String::with_capacity(40 + key.id.len());
        header.push_str(r#"{"typ":"JWT","alg":"HS256","kid":"#);
        push_json_str(&mut header, &key.id);
        header.push('}');
        KeyEntry {
            id: key.id.clone(),
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &key.secret),
            header_b64: URL_SAFE_NO_PAD.encode(header),
        }
    }
}

/// The configured signing keys. The first signs new tokens; all of them verify, so a key is rotated by putting
/// the new one first and dropping the old one a token lifetime later. `Debug` prints key ids only.
#[derive(Clone)]
pub struct Keyring {
    signer: KeyEntry,
    others: Vec<KeyEntry>,
}

impl Keyring {
    /// A keyring of these keys, the first of which signs. Fails on an empty list or a repeated id.
    pub fn new(keys: Vec<SigningKey>) -> Result<Keyring, KeyringError> {
        let mut entries = Vec::with_capacity(keys.len());
        for key in &keys {
            if entries.iter().any(|e: &KeyEntry| e.id == key.id) {
                return Err(KeyringError::DuplicateId { id: key.id.clone() });
            }
            entries.push(KeyEntry::new(key));
        }
        let mut entries = entries.into_iter();
        let signer = entries.next().ok_or(KeyringError::Empty)?;
        Ok(Keyring {
            signer,
            others: entries.collect(),
        })
    }

    /// The id of the key that signs new tokens.
    pub fn signing_key_id(&self) -> &str {
        &self.signer.id
    }

    /// The ids of every key, the signing key first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.entries().map(|e| e.id.as_str())
    }

    /// How many keys there are (at least one).
    pub fn len(&self) -> usize {
        1 + self.others.len()
    }

    /// Always `false`: a keyring has at least one key.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub(crate) fn signer(&self) -> &KeyEntry {
        &self.signer
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &KeyEntry> {
        std::iter::once(&self.signer).chain(&self.others)
    }

    pub(crate) fn find(&self, kid: &str) -> Option<&KeyEntry> {
        self.entries().find(|e| e.id == kid)
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
        let header = URL_SAFE_NO_PAD.decode(&ring.signer().header_b64)?;
        assert_eq!(
            std::str::from_utf8(&header)?,
            r#"{"typ":"JWT","alg":"HS256","kid":"k\"1"}"#
        );
        Ok(())
    }

    #[test]
    fn debug_shows_ids_only() -> Result<(), KeyringError> {
        let key = SigningKey::new("main", b"0123456789abcdefghijklmnopqrstuvwxyz".to_vec())?;
        assert_eq!(format!("{key:?}"), r#"SigningKey { id: "main", secret: *** }"#);
        let ring = Keyring::new(vec![key])?;
        assert_eq!(format!("{ring:?}"), r#"Keyring { key_ids: ["main"] }"#);
        Ok(())
    }
}
