//! Argon2id password hashing on a bounded pool of threads that reuse their working memory.
//!
//! Hashing is the one CPU-heavy step of a login. It runs on `max_concurrent_hashes` dedicated threads, never
//! on the async workers; logins beyond that wait in the queue. Each thread keeps its Argon2 memory blocks
//! between hashes, which saves the 19 MiB allocation and page faults per hash.
//!
//! A stored hash that is not Argon2id at the configured parameters (a hash an import brought from another
//! system, see [`foreign`], or one made before `auth.argon2` changed) is verified by its scheme's library, and
//! after a match the same job hashes the password anew, so the login can store an Argon2id hash in its place.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::clock::Stopwatch;
use crate::settings::Argon2Settings;

pub mod foreign;

const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;

/// Hashing failures; none of them carries the password.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The configured parameters are outside Argon2's limits.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// The OS random generator failed.
    #[error("the random generator failed")]
    Random,
    /// The hashing threads are gone (the server is shutting down).
    #[error("the password hashing pool is closed")]
    Closed,
    /// Argon2 refused the input.
    #[error("argon2 failed: {0}")]
    Argon2(String),
}

enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<Result<String, HashError>>,
    },
    Verify {
        password: String,
        phc: Option<String>,
        reply: oneshot::Sender<Verdict>,
    },
}

/// What a password check found.
#[derive(Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the password matches.
    pub matches: bool,
    /// After a match against a hash that is not Argon2id at the configured parameters, the password hashed
    /// anew at them: the hash to store in place of the old one.
    pub rehashed: Option<String>,
}

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verdict")
            .field("matches", &self.matches)
            .field("rehashed", &self.rehashed.is_some())
            .finish()
    }
}

/// Observes the hashing pool (metrics hook up here).
pub trait HashObserver: Send + Sync + 'static {
    /// A job waited this long for a free thread.
    fn waited(&self, _wait: Duration) {}
    /// The number of hashes running changed by `delta`.
    fn in_flight(&self, _delta: i64) {}
}

/// Observes nothing.
pub struct NoObserver;
impl HashObserver for NoObserver {}

/// The hashing pool; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    jobs: mpsc::Sender<(Stopwatch, Job)>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

fn params(settings: &Argon2Settings) -> Result<Params, HashError> {
    Params::new(settings.m_kib, settings.t, settings.p, Some(OUTPUT_LEN))
        .map_err(|e| HashError::Params(e.to_string()))
}

impl PasswordHasher {
    /// Starts `threads` hashing threads with these parameters.
    pub fn start(
        settings: &Argon2Settings,
        threads: usize,
        observer: Arc<dyn HashObserver>,
    ) -> Result<PasswordHasher, HashError> {
        let params = params(settings)?;
        let (tx, rx) = mpsc::channel::<(Stopwatch, Job)>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let params = params.clone();
            let observer = Arc::clone(&observer);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&rx, &params, observer.as_ref()))
                .map_err(|e| HashError::Argon2(e.to_string()))?;
        }
        Ok(PasswordHasher { jobs: tx })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send((Stopwatch::start(), Job::Hash { password, reply }))
            .map_err(|_| HashError::Closed)?;
        rx.await.map_err(|_| HashError::Closed)?
    }

    /// Checks a password against a stored PHC string. With `None` (unknown organisation or user, or a
    /// user without a password) it still runs one hash and answers `false`, so timing tells nothing.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        Ok(self.check(password, phc).await?.matches)
    }

    /// [`PasswordHasher::verify`], which also gives, after a match against a hash that is not Argon2id at the
    /// configured parameters (a foreign hash), the Argon2id hash to replace it with.
    pub async fn check(&self, password: String, phc: Option<String>) -> Result<Verdict, HashError> {
        self.send_verify(password, phc)?
            .await
            .map_err(|_| HashError::Closed)
    }

    fn send_verify(
        &self,
        password: String,
        phc: Option<String>,
    ) -> Result<oneshot::Receiver<Verdict>, HashError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send((Stopwatch::start(), Job::Verify { password, phc, reply }))
            .map_err(|_| HashError::Closed)?;
        Ok(rx)
    }

    fn send_hash(&self, password: String) -> Result<oneshot::Receiver<Result<String, HashError>>, HashError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send((Stopwatch::start(), Job::Hash { password, reply }))
            .map_err(|_| HashError::Closed)?;
        Ok(rx)
    }

    /// Hashes every password on the pool's threads, in order, waiting on the calling thread: for work that
    /// runs outside the async runtime (an import, on a blocking thread or the command line). Never call it on
    /// an async worker.
    pub fn hash_all_blocking(&self, passwords: Vec<String>) -> Result<Vec<String>, HashError> {
        let pending = passwords
            .into_iter()
            .map(|password| self.send_hash(password))
            .collect::<Result<Vec<_>, _>>()?;
        pending
            .into_iter()
            .map(|rx| rx.blocking_recv().map_err(|_| HashError::Closed)?)
            .collect()
    }

    /// Checks each `(password, stored hash)` pair on the pool's threads, in order, waiting on the calling
    /// thread (see [`PasswordHasher::hash_all_blocking`]); whether each matches.
    pub fn verify_all_blocking(&self, pairs: Vec<(String, String)>) -> Result<Vec<bool>, HashError> {
        let pending = pairs
            .into_iter()
            .map(|(password, phc)| self.send_verify(password, Some(phc)))
            .collect::<Result<Vec<_>, _>>()?;
        pending
            .into_iter()
            .map(|rx| {
                rx.blocking_recv()
                    .map(|verdict| verdict.matches)
                    .map_err(|_| HashError::Closed)
            })
            .collect()
    }

    /// Hashes on the calling thread (for the command line, which has no runtime to wait on).
    pub fn hash_blocking(settings: &Argon2Settings, password: &str) -> Result<String, HashError> {
        hash_with(&params(settings)?, password, &mut Vec::new())
    }
}

fn worker(rx: &Mutex<mpsc::Receiver<(Stopwatch, Job)>>, params: &Params, observer: &dyn HashObserver) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok((queued, job)) = next else { return };
        observer.waited(queued.elapsed());
        observer.in_flight(1);
        match job {
            Job::Hash { password, reply } => {
                let _ = reply.send(hash_with(params, &password, &mut memory));
            }
            Job::Verify { password, phc, reply } => {
                let _ = reply.send(verify_with(params, &password, phc.as_deref(), &mut memory));
            }
        }
        observer.in_flight(-1);
    }
}

fn run(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), HashError> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
        .map_err(|e| HashError::Argon2(e.to_string()))
}

fn hash_with(params: &Params, password: &str, memory: &mut Vec<Block>) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|_| HashError::Random)?;
    let mut out = [0u8; OUTPUT_LEN];
    run(params, password.as_bytes(), &salt, &mut out, memory)?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    ))
}

/// Checks `password` against `phc`: an Argon2id hash at the configured parameters with the thread's memory;
/// any other hash with its scheme's library ([`foreign::verify`]), and after a match the password is hashed
/// anew. An absent or unusable hash still costs one hash at the configured parameters, so timing tells
/// nothing about who exists.
fn verify_with(configured: &Params, password: &str, phc: Option<&str>, memory: &mut Vec<Block>) -> Verdict {
    let no = Verdict {
        matches: false,
        rehashed: None,
    };
    if let Some(phc) = phc {
        if let Some((params, salt, expected)) = own_hash(configured, phc) {
            let mut out = vec![0u8; expected.len()];
            let matches = run(&params, password.as_bytes(), &salt, &mut out, memory).is_ok()
                && bool::from(out.ct_eq(&expected));
            return Verdict {
                matches,
                rehashed: None,
            };
        }
        // The library allocates a foreign Argon2 hash's memory for this check only, so the thread keeps no
        // more than its own hashes need.
        if foreign::check(phc).is_ok() {
            if !foreign::verify(password, phc) {
                return no;
            }
            return Verdict {
                matches: true,
                // A failed rehash only leaves the old hash in place; the password did match.
                rehashed: hash_with(configured, password, memory).ok(),
            };
        }
    }
    let mut out = [0u8; OUTPUT_LEN];
    let _ = run(
        configured,
        password.as_bytes(),
        &[0u8; SALT_LEN],
        &mut out,
        memory,
    );
    no
}

/// The parameters (with the stored output's length), salt and output of `phc` if it is an Argon2id hash of
/// version 19 at the configured memory, passes and lanes: one this pool made, checked with its own memory.
fn own_hash(configured: &Params, phc: &str) -> Option<(Params, Vec<u8>, Vec<u8>)> {
    let hash = PasswordHash::new(phc).ok()?;
    if hash.algorithm.as_str() != "argon2id" || hash.version.is_some_and(|v| v != 0x13) {
        return None;
    }
    let params = Params::try_from(&hash).ok()?;
    let same = (params.m_cost(), params.t_cost(), params.p_cost())
        == (configured.m_cost(), configured.t_cost(), configured.p_cost());
    if !same {
        return None;
    }
    let mut salt = [0u8; 64];
    let salt = hash.salt?.decode_b64(&mut salt).ok()?.to_vec();
    let expected = hash.hash?.as_bytes().to_vec();
    let params = Params::new(
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        Some(expected.len()),
    )
    .ok()?;
    Some((params, salt, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Argon2Settings {
        Argon2Settings {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    #[tokio::test]
    async fn hash_then_verify() -> anyhow::Result<()> {
        let hasher = PasswordHasher::start(&fast(), 2, Arc::new(NoObserver))?;
        let phc = hasher.hash("correct horse".into()).await?;
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!phc.contains("correct horse"));
        assert!(hasher.verify("correct horse".into(), Some(phc.clone())).await?);
        assert!(!hasher.verify("wrong horse".into(), Some(phc)).await?);
        // Unknown users and garbage hashes are refused, not errors.
        assert!(!hasher.verify("x".into(), None).await?);
        assert!(!hasher.verify("x".into(), Some("$argon2i$garbage".into())).await?);
        Ok(())
    }

    /// A foreign hash, or an Argon2id one at other parameters, matches through its library and comes back
    /// rehashed at the configured parameters; a hash at them, or a wrong password, does not.
    #[tokio::test]
    async fn a_foreign_hash_is_rehashed_after_a_match() -> anyhow::Result<()> {
        let hasher = PasswordHasher::start(&fast(), 1, Arc::new(NoObserver))?;
        let other_params = Argon2Settings { m_kib: 128, ..fast() };
        for old in [
            bcrypt::hash("pw", 4)?,
            PasswordHasher::hash_blocking(&other_params, "pw")?,
        ] {
            let wrong = hasher.check("pW".into(), Some(old.clone())).await?;
            assert!(!wrong.matches && wrong.rehashed.is_none());
            let verdict = hasher.check("pw".into(), Some(old)).await?;
            assert!(verdict.matches);
            let new = verdict.rehashed.unwrap_or_default();
            assert!(new.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{new}");
            let again = hasher.check("pw".into(), Some(new)).await?;
            assert!(again.matches && again.rehashed.is_none());
        }
        Ok(())
    }

    /// The import's bulk calls wait on a blocking thread and answer in order.
    #[tokio::test]
    async fn bulk_calls_answer_in_order() -> anyhow::Result<()> {
        let hasher = PasswordHasher::start(&fast(), 2, Arc::new(NoObserver))?;
        let passwords: Vec<String> = (0..8).map(|i| format!("pw{i}")).collect();
        let (hashes, matches) = tokio::task::spawn_blocking({
            let hasher = hasher.clone();
            move || -> Result<_, HashError> {
                let hashes = hasher.hash_all_blocking(passwords.clone())?;
                let mut swapped = hashes.clone();
                swapped.swap(0, 1);
                let pairs: Vec<(String, String)> = passwords.into_iter().zip(swapped).collect();
                Ok((hashes, hasher.verify_all_blocking(pairs)?))
            }
        })
        .await??;
        assert!(hasher.verify("pw3".into(), Some(hashes[3].clone())).await?);
        assert_eq!(matches, [false, false, true, true, true, true, true, true]);
        Ok(())
    }

    #[test]
    fn blocking_hash_verifies_with_the_pool() -> anyhow::Result<()> {
        let phc = PasswordHasher::hash_blocking(&fast(), "pw")?;
        assert!(verify_with(&params(&fast())?, "pw", Some(&phc), &mut Vec::new()).matches);
        Ok(())
    }
}
