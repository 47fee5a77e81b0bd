//! The signing keys: the keyring from `token.keys`, or the generated `{data_dir}/signing-key`, and its
//! replacement on SIGHUP.
//!
//! Requests read the keys through [`Keys`], an `ArcSwap`: each takes the current set in one atomic load and
//! keeps it for the whole request, while a reload builds and checks a new set aside and swaps it in whole.
//! No request waits for a reload or sees half of one, and a refused configuration leaves the old set serving.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm_auth_core::{Algorithm, Keyring, SECRET_FILE_BASE64_PREFIX, SigningKey};

use crate::settings::{Settings, SettingsError};

/// A configured secret needs at least this many distinct byte values.
pub const MIN_DISTINCT_SECRET_BYTES: usize = 16;

/// The id of the generated key.
pub const GENERATED_KEY_ID: &str = "generated";

/// How the generated key file starts when it holds an EdDSA or ES256 key.
const PEM_START: &str = "-----BEGIN";

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
    #[error("signing key file {0} is not a base64 key of 32 bytes or more, nor a PKCS#8 PEM key")]
    BadFile(PathBuf),
    /// The generated key file holds a key of another algorithm than `token.algorithm`.
    #[error(
        "signing key file {path} holds a {found} key but token.algorithm is {wanted}; move the file away to generate \
         a {wanted} key (tokens signed with the old one stop verifying), or configure token.keys"
    )]
    OtherAlgorithm {
        /// The file.
        path: PathBuf,
        /// What it holds.
        found: Algorithm,
        /// What is configured.
        wanted: Algorithm,
    },
    /// A key is unusable (too short, duplicate id, not a private key).
    #[error("token.keys: {0}")]
    Keyring(#[from] crm_auth_core::KeyringError),
    /// A configured secret repeats too few byte values to be a random key (a word, a row of one character).
    #[error(
        "token.keys: the secret of key {0:?} has fewer than {MIN_DISTINCT_SECRET_BYTES} distinct bytes; use a random key"
    )]
    WeakSecret(String),
    /// `token.algorithm` is set and the first key is of another algorithm.
    #[error("token.algorithm is {wanted} but the first of token.keys, {id:?}, is an {found} key")]
    FirstKeyAlgorithm {
        /// The first key's id.
        id: String,
        /// Its algorithm.
        found: Algorithm,
        /// `token.algorithm`.
        wanted: Algorithm,
    },
    /// Every key waits for its `not_before`, so nothing could sign now.
    #[error("token.keys: every key has a not_before in the future; one key must sign now")]
    NoSigner,
    /// A setting is invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The OS random generator failed.
    #[error("the random generator failed")]
    Random,
}

/// The signing keys in force, with their JWKS document serialised once.
#[derive(Debug)]
pub struct KeySet {
    /// Signs and verifies tokens.
    pub keyring: Keyring,
    /// `GET /.well-known/jwks.json`'s body.
    pub jwks_json: String,
}

impl KeySet {
    /// The set of this keyring.
    pub fn new(keyring: Keyring) -> KeySet {
        // Serialising strings and options cannot fail; an empty set is still a valid answer.
        let jwks_json =
            serde_json::to_string(&keyring.jwks()).unwrap_or_else(|_| r#"{"keys":[]}"#.to_owned());
        KeySet { keyring, jwks_json }
    }
}

/// The current [`KeySet`], replaced whole by [`Keys::reload`]; cheap to read from every request.
#[derive(Debug)]
pub struct Keys(ArcSwap<KeySet>);

impl Keys {
    /// The keys of `settings` at `now` (unix seconds).
    pub fn load(settings: &Settings, now: i64) -> Result<Keys, SigningError> {
        let (keyring, _) = load_keyring(settings, now)?;
        Ok(Keys(ArcSwap::from_pointee(KeySet::new(keyring))))
    }

    /// The keys in force; a request keeps the set it got even if a reload replaces it meanwhile.
    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.0.load()
    }

    /// Replaces the keys with those of `settings`' `token` section read against `running`'s data folder; on
    /// error the keys in force stay.
    pub fn reload(
        &self,
        running: &Settings,
        loaded: &Settings,
        now: i64,
    ) -> Result<Arc<KeySet>, SigningError> {
        let mut settings = running.clone();
        settings.token.algorithm = loaded.token.algorithm;
        settings.token.keys = loaded.token.keys.clone();
        let (keyring, _) = load_keyring(&settings, now)?;
        let set = Arc::new(KeySet::new(keyring));
        self.0.store(Arc::clone(&set));
        Ok(set)
    }
}

/// Reloads the keys from the configuration file `path` (and the environment) and logs the outcome in one line.
pub fn reload_from(keys: &Keys, running: &Settings, path: Option<&Path>, now: i64) {
    let outcome = Settings::load(path)
        .map_err(SigningError::from)
        .and_then(|loaded| keys.reload(running, &loaded, now));
    match outcome {
        Ok(set) => log::info!(
            keys:% = set.keyring.key_ids().collect::<Vec<_>>().join(","),
            signing_key = set.keyring.signing_key_id_at(now).unwrap_or("");
            "signing keys reloaded"
        ),
        Err(e) => log::error!(error:% = e; "signing keys not reloaded, the previous keys stay"),
    }
}

/// Registers SIGHUP (call it inside the runtime, before serving) and returns the task that reloads the keys at
/// each one, from the configuration file `config`, for as long as the runtime runs. It holds the keys, the
/// settings and the clock, not the whole state, so the state's threads still end with the server.
#[cfg(unix)]
pub fn reload_on_hangup(
    state: &crate::state::AppState,
    config: Option<PathBuf>,
) -> std::io::Result<impl Future<Output = ()> + use<>> {
    use actix_web::rt::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let keys = Arc::clone(&state.keys);
    let settings = Arc::clone(&state.settings);
    let clock = Arc::clone(&state.clock);
    Ok(async move {
        while hangup.recv().await.is_some() {
            reload_from(&keys, &settings, config.as_deref(), clock.now());
        }
    })
}

/// The keyring the settings describe at `now` (unix seconds). The flag tells whether the generated key was used.
pub fn load_keyring(settings: &Settings, now: i64) -> Result<(Keyring, bool), SigningError> {
    let wanted = settings.token.algorithm;
    if settings.token.keys.is_empty() {
        let key = generated_key(&settings.data_dir, wanted.unwrap_or_default())?;
        return Ok((Keyring::new(vec![key])?, true));
    }
    let mut keys = Vec::with_capacity(settings.token.keys.len());
    for key in &settings.token.keys {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|source| SigningError::Io {
                path: path.clone(),
                source,
            })
        };
        let mut signing_key = match (&key.secret, &key.secret_file, &key.private_key_file) {
            (_, _, Some(path)) => SigningKey::from_pkcs8_pem(key.id.clone(), &read(path)?)?,
            (secret, file, None) => {
                let secret = match (secret, file) {
                    (Some(secret), _) => secret.expose().as_bytes().to_vec(),
                    (None, Some(path)) => SigningKey::secret_from_file_text(&key.id, &read(path)?)?,
                    (None, None) => Vec::new(),
                };
                let distinct = secret.iter().collect::<std::collections::HashSet<_>>().len();
                // The length first: a short secret is refused as such, whatever its bytes.
                let signing_key = SigningKey::new(key.id.clone(), secret)?;
                if distinct < MIN_DISTINCT_SECRET_BYTES {
                    return Err(SigningError::WeakSecret(key.id.clone()));
                }
                signing_key
            }
        };
        if let Some(not_before) = key.not_before_seconds()? {
            signing_key = signing_key.with_not_before(not_before);
        }
        keys.push(signing_key);
    }
    if let (Some(wanted), Some(first)) = (wanted, keys.first())
        && first.algorithm() != wanted
    {
        return Err(SigningError::FirstKeyAlgorithm {
            id: first.id().to_owned(),
            found: first.algorithm(),
            wanted,
        });
    }
    let keyring = Keyring::new(keys)?;
    if keyring.signing_key_id_at(now).is_none() {
        return Err(SigningError::NoSigner);
    }
    Ok((keyring, false))
}

/// The key in `{data_dir}/signing-key`, created (0600) when missing: for HS256 a secret written as
/// `base64:<standard base64>`, the encoding [`SigningKey::secret_from_file_text`] reads, so that the file may be
/// moved into `token.keys[].secret_file` or read by [`Keyring::from_key_file`] as it is; for EdDSA and ES256 a
/// PKCS#8 PEM private key. A file written by earlier versions holds the base64 without the prefix, and is read
/// as such here, and only here: configured secret files without the prefix are raw bytes.
fn generated_key(data_dir: &Path, algorithm: Algorithm) -> Result<SigningKey, SigningError> {
    let path = data_dir.join("signing-key");
    let io = |source| SigningError::Io {
        path: path.clone(),
        source,
    };
    let other = |found| SigningError::OtherAlgorithm {
        path: path.clone(),
        found,
        wanted: algorithm,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim_start().starts_with(PEM_START) => {
            let key = SigningKey::from_pkcs8_pem(GENERATED_KEY_ID, &text)
                .map_err(|_| SigningError::BadFile(path.clone()))?;
            if key.algorithm() != algorithm {
                return Err(other(key.algorithm()));
            }
            Ok(key)
        }
        Ok(text) => {
            if algorithm != Algorithm::Hs256 {
                return Err(other(Algorithm::Hs256));
            }
            let secret = match text.trim_start().strip_prefix(SECRET_FILE_BASE64_PREFIX) {
                Some(encoded) => STANDARD.decode(encoded.trim()),
                None => {
                    log::warn!(
                        file:% = path.display();
                        "the generated signing key file has no \"{SECRET_FILE_BASE64_PREFIX}\" prefix (an earlier \
                         version wrote it); add the prefix before using it in token.keys or Keyring::from_key_file"
                    );
                    STANDARD.decode(text.trim())
                }
            }
            .map_err(|_| SigningError::BadFile(path.clone()))?;
            if secret.len() < 32 {
                return Err(SigningError::BadFile(path));
            }
            Ok(SigningKey::new(GENERATED_KEY_ID, secret)?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::files::create_private_dir(data_dir).map_err(io)?;
            let (contents, key) = if algorithm == Algorithm::Hs256 {
                let mut secret = vec![0u8; 32];
                getrandom::fill(&mut secret).map_err(|_| SigningError::Random)?;
                let contents = format!("{SECRET_FILE_BASE64_PREFIX}{}\n", STANDARD.encode(&secret));
                (contents, SigningKey::new(GENERATED_KEY_ID, secret)?)
            } else {
                let pem = SigningKey::generate_pkcs8_pem(algorithm)?;
                let key = SigningKey::from_pkcs8_pem(GENERATED_KEY_ID, &pem)?;
                (pem, key)
            };
            let mut file = crate::files::create_private_file(&path).map_err(io)?;
            file.write_all(contents.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            log::warn!(
                file:% = path.display(),
                algorithm = algorithm.name();
                "no token.keys configured: created a random signing key; configure token.keys to share a key \
                 between nodes"
            );
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}
