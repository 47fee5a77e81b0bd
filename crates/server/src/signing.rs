//! Loads the signing keyring from configuration, or creates and reuses `{data_dir}/signing-key`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm_auth_core::{Keyring, SigningKey};

use crate::settings::Settings;

/// A configured secret needs at least this many distinct byte values.
pub const MIN_DISTINCT_SECRET_BYTES: usize = 16;

/// The id of the generated key.
pub const GENERATED_KEY_ID: &str = "generated";

/// Why the keyring cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A secret file could not be read or written.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The generated key file holds something else than a key.
    #[error("signing key file {0} is not a base64 key of 32 bytes or more")]
    BadFile(PathBuf),
    /// A key is unusable (too short, duplicate id).
    #[error("token.keys: {0}")]
    Keyring(#[from] crm_auth_core::KeyringError),
    /// A configured secret repeats too few byte values to be a random key (a word, a row of one character).
    #[error(
        "token.keys: the secret of key {0:?} has fewer than {MIN_DISTINCT_SECRET_BYTES} distinct bytes; use a random key"
    )]
    WeakSecret(String),
    /// The OS random generator failed.
    #[error("the random generator failed")]
    Random,
}

/// The keyring the settings describe. The flag tells whether the generated key was used.
pub fn load_keyring(settings: &Settings) -> Result<(Keyring, bool), SigningError> {
    if settings.token.keys.is_empty() {
        let secret = generated_secret(&settings.data_dir)?;
        return Ok((
            Keyring::new(vec![SigningKey::new(GENERATED_KEY_ID, secret)?])?,
            true,
        ));
    }
    let mut keys = Vec::with_capacity(settings.token.keys.len());
    for key in &settings.token.keys {
        let secret = match (&key.secret, &key.secret_file) {
            (Some(secret), _) => secret.expose().as_bytes().to_vec(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| SigningError::Io {
                    path: path.clone(),
                    source,
                })?;
                text.trim_end_matches(['\r', '\n']).as_bytes().to_vec()
            }
            (None, None) => Vec::new(),
        };
        let distinct = secret.iter().collect::<std::collections::HashSet<_>>().len();
        // The length first: a short secret is refused as such, whatever its bytes.
        keys.push(SigningKey::new(key.id.clone(), secret)?);
        if distinct < MIN_DISTINCT_SECRET_BYTES {
            return Err(SigningError::WeakSecret(key.id.clone()));
        }
    }
    Ok((Keyring::new(keys)?, false))
}

fn generated_secret(data_dir: &Path) -> Result<Vec<u8>, SigningError> {
    let path = data_dir.join("signing-key");
    let io = |source| SigningError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = STANDARD
                .decode(text.trim())
                .map_err(|_| SigningError::BadFile(path.clone()))?;
            if secret.len() < 32 {
                return Err(SigningError::BadFile(path));
            }
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::files::create_private_dir(data_dir).map_err(io)?;
            let mut secret = vec![0u8; 32];
            getrandom::fill(&mut secret).map_err(|_| SigningError::Random)?;
            let mut file = crate::files::create_private_file(&path).map_err(io)?;
            file.write_all(format!("{}\n", STANDARD.encode(&secret)).as_bytes())
                .map_err(io)?;
            file.sync_all().map_err(io)?;
            log::warn!(
                file:% = path.display();
                "no token.keys configured: created a random signing key; configure token.keys to share a key \
                 between nodes"
            );
            Ok(secret)
        }
        Err(e) => Err(io(e)),
    }
}
