//! Argon2id password hashing on a bounded pool of threads that reuse their working memory.
//!
//! Hashing is the one CPU-heavy step of a login. It runs on `max_concurrent_hashes` dedicated threads, never
//! on the async workers; logins beyond that wait in the queue. Each thread keeps its Argon2 memory blocks
//! between hashes, which saves the 19 MiB allocation and page faults per hash.

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
        reply: oneshot::Sender<bool>,
    },
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
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send((Stopwatch::start(), Job::Verify { password, phc, reply }))
            .map_err(|_| HashError::Closed)?;
        rx.await.map_err(|_| HashError::Closed)
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

fn verify_with(dummy: &Params, password: &str, phc: Option<&str>, memory: &mut Vec<Block>) -> bool {
    let parsed = phc.and_then(|phc| {
        let hash = PasswordHash::new(phc).ok()?;
        if hash.algorithm.as_str() != "argon2id" {
            return None;
        }
        let params = Params::try_from(&hash).ok()?;
        let mut salt = [0u8; 64];
        let salt = hash.salt?.decode_b64(&mut salt).ok()?.to_vec();
        let expected = hash.hash?.as_bytes().to_vec();
        Some((params, salt, expected))
    });
    match parsed {
        Some((params, salt, expected)) => {
            let mut out = vec![0u8; expected.len()];
            let Ok(params) = Params::new(
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                Some(expected.len()),
            ) else {
                return false;
            };
            run(&params, password.as_bytes(), &salt, &mut out, memory).is_ok()
                && bool::from(out.ct_eq(&expected))
        }
        None => {
            // Unknown user or unusable hash: still one full hash at the configured cost, so timing tells
            // nothing about who exists.
            let mut out = [0u8; OUTPUT_LEN];
            let _ = run(dummy, password.as_bytes(), &[0u8; SALT_LEN], &mut out, memory);
            false
        }
    }
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

    #[test]
    fn blocking_hash_verifies_with_the_pool() -> anyhow::Result<()> {
        let phc = PasswordHasher::hash_blocking(&fast(), "pw")?;
        assert!(verify_with(&params(&fast())?, "pw", Some(&phc), &mut Vec::new()));
        Ok(())
    }
}
