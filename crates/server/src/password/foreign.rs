//! Password hashes made by other systems, which an import stores as they are: which schemes are accepted,
//! within which costs, and their verification, always by the scheme's own library (`bcrypt`, `argon2`,
//! `scrypt`, `pbkdf2`), never by code of ours.
//!
//! The costs are bounded because a stored hash decides what a login costs: one hash over the bounds would let
//! a single login hold a hashing thread for minutes, or take gigabytes. Each bound admits the strongest
//! settings in common use (OWASP's 2023 recommendations, the defaults of Django, passlib, argon2-cffi and
//! RustCrypto) and stops at a few seconds of one core and 256 MiB per check: on a 2-core test machine,
//! OpenSSL took 1.5 s for a million PBKDF2-SHA256 rounds and 2.3 s for scrypt `ln=17,r=8,p=1`. The same check
//! runs at import, where a hash over a bound is refused naming its line, and before every verification.

use argon2::password_hash::{PasswordHash, PasswordVerifier as _};

/// The highest bcrypt cost: 2^14 rounds, about a second of one core.
pub const MAX_BCRYPT_COST: u32 = 14;

/// The most memory an Argon2 hash may use, in KiB (256 MiB).
pub const MAX_ARGON2_M_KIB: u32 = 262_144;

/// The most passes an Argon2 hash may make.
pub const MAX_ARGON2_T: u32 = 10;

/// The most memory × passes an Argon2 hash may cost (KiB × passes): two passes over the largest memory, or
/// eight over 64 MiB (argon2-cffi's and RFC 9106's second recommendation make three).
pub const MAX_ARGON2_WORK: u64 = 2 * MAX_ARGON2_M_KIB as u64;

/// The most lanes an Argon2 hash may have.
pub const MAX_ARGON2_P: u32 = 16;

/// The highest scrypt `ln` (log2 of N).
pub const MAX_SCRYPT_LOG_N: u8 = 20;

/// The most memory a scrypt hash may use (128 × r × N bytes): 256 MiB, as for Argon2.
pub const MAX_SCRYPT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

/// The most work a scrypt hash may cost, N × r × p: twice RustCrypto's recommended `ln=17,r=8,p=1` (2^20);
/// passlib's default is 2^19, Django's 2^17.
pub const MAX_SCRYPT_WORK: u64 = 1 << 21;

/// The most PBKDF2 rounds (times the output's blocks of the digest's size): above every current
/// recommendation (OWASP 2023: 600,000 for SHA-256, 210,000 for SHA-512; Django 6.0: 1,200,000), about three
/// seconds of one core.
pub const MAX_PBKDF2_ROUNDS: u64 = 2_000_000;

/// A scheme a stored hash may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `$2a$`, `$2b$` or `$2y$` bcrypt.
    Bcrypt,
    /// `$argon2id$` PHC.
    Argon2id,
    /// `$argon2i$` PHC.
    Argon2i,
    /// `$scrypt$` PHC (RustCrypto's form).
    Scrypt,
    /// `$pbkdf2-sha256$` PHC (RustCrypto's form).
    Pbkdf2Sha256,
    /// `$pbkdf2-sha512$` PHC (RustCrypto's form).
    Pbkdf2Sha512,
}

impl Scheme {
    /// Its name, as errors and logs say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Bcrypt => "bcrypt",
            Scheme::Argon2id => "argon2id",
            Scheme::Argon2i => "argon2i",
            Scheme::Scrypt => "scrypt",
            Scheme::Pbkdf2Sha256 => "pbkdf2-sha256",
            Scheme::Pbkdf2Sha512 => "pbkdf2-sha512",
        }
    }
}

/// Why a hash is refused: one line fit for an operator, never holding the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

fn refused(message: impl Into<String>) -> Refused {
    Refused(message.into())
}

/// What is accepted, for the message that refuses anything else.
const ACCEPTED: &str = "bcrypt ($2a$, $2b$, $2y$), argon2id, argon2i, scrypt, pbkdf2-sha256 or pbkdf2-sha512";

/// The scheme of `hash` if it is one this service verifies, well formed and within the cost bounds.
pub fn check(hash: &str) -> Result<Scheme, Refused> {
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        return check_bcrypt(hash);
    }
    let parsed = PasswordHash::new(hash).map_err(|_| refused(format!("is not a hash of {ACCEPTED}")))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(refused("has no salt or no output"));
    }
    match parsed.algorithm.as_str() {
        "argon2id" => check_argon2(&parsed).map(|()| Scheme::Argon2id),
        "argon2i" => check_argon2(&parsed).map(|()| Scheme::Argon2i),
        "scrypt" => check_scrypt(&parsed).map(|()| Scheme::Scrypt),
        "pbkdf2-sha256" => check_pbkdf2(&parsed, 32).map(|()| Scheme::Pbkdf2Sha256),
        "pbkdf2-sha512" => check_pbkdf2(&parsed, 64).map(|()| Scheme::Pbkdf2Sha512),
        _ => Err(refused(format!("is not a hash of {ACCEPTED}"))),
    }
}

fn check_bcrypt(hash: &str) -> Result<Scheme, Refused> {
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|_| refused("is not a well-formed bcrypt hash"))?;
    // The library's own parser skips empty `$` segments; the one form it writes is `$2b$NN$` + 53 characters.
    let well_formed = hash.len() == 60
        && hash.as_bytes()[6] == b'$'
        && hash[7..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    if !well_formed {
        return Err(refused("is not a well-formed bcrypt hash"));
    }
    let cost = parts.get_cost();
    if !(4..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(refused(format!(
            "bcrypt cost {cost} is outside 4 to {MAX_BCRYPT_COST}"
        )));
    }
    Ok(Scheme::Bcrypt)
}

fn check_argon2(parsed: &PasswordHash<'_>) -> Result<(), Refused> {
    if let Some(version) = parsed.version.filter(|v| ![0x10, 0x13].contains(v)) {
        return Err(refused(format!("argon2 version {version} is neither 16 nor 19")));
    }
    let params = argon2::Params::try_from(parsed).map_err(|e| refused(format!("argon2 parameters: {e}")))?;
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    if m > MAX_ARGON2_M_KIB {
        return Err(refused(format!(
            "argon2 memory m={m} KiB is over {MAX_ARGON2_M_KIB}"
        )));
    }
    if t > MAX_ARGON2_T || u64::from(m) * u64::from(t) > MAX_ARGON2_WORK {
        return Err(refused(format!(
            "argon2 passes t={t} are over {MAX_ARGON2_T}, or m × t over {MAX_ARGON2_WORK}"
        )));
    }
    if p > MAX_ARGON2_P {
        return Err(refused(format!("argon2 lanes p={p} are over {MAX_ARGON2_P}")));
    }
    Ok(())
}

fn check_scrypt(parsed: &PasswordHash<'_>) -> Result<(), Refused> {
    let params = scrypt::Params::try_from(parsed).map_err(|e| refused(format!("scrypt parameters: {e}")))?;
    let (log_n, r, p) = (params.log_n(), u64::from(params.r()), u64::from(params.p()));
    if log_n > MAX_SCRYPT_LOG_N {
        return Err(refused(format!("scrypt ln={log_n} is over {MAX_SCRYPT_LOG_N}")));
    }
    let n = 1u64 << log_n;
    if 128 * r * n > MAX_SCRYPT_MEMORY_BYTES {
        return Err(refused(format!(
            "scrypt memory 128 × r × N is over {MAX_SCRYPT_MEMORY_BYTES} bytes"
        )));
    }
    if n.saturating_mul(r).saturating_mul(p) > MAX_SCRYPT_WORK {
        return Err(refused(format!(
            "scrypt work N × r × p is over {MAX_SCRYPT_WORK}"
        )));
    }
    Ok(())
}

fn check_pbkdf2(parsed: &PasswordHash<'_>, digest_bytes: usize) -> Result<(), Refused> {
    let params = pbkdf2::Params::try_from(parsed).map_err(|e| refused(format!("pbkdf2 parameters: {e}")))?;
    // Each block of output runs every round again.
    let blocks = params.output_length.div_ceil(digest_bytes).max(1) as u64;
    if u64::from(params.rounds) * blocks > MAX_PBKDF2_ROUNDS {
        return Err(refused(format!(
            "pbkdf2 rounds i={} (times {blocks} output block(s)) are over {MAX_PBKDF2_ROUNDS}",
            params.rounds
        )));
    }
    Ok(())
}

/// Whether `password` matches `hash`, checked by the scheme's library; a hash that [`check`] refuses matches
/// nothing.
pub fn verify(password: &str, hash: &str) -> bool {
    let Ok(scheme) = check(hash) else {
        return false;
    };
    if scheme == Scheme::Bcrypt {
        // Truncating at 72 bytes, as the systems that wrote these hashes did.
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let password = password.as_bytes();
    match scheme {
        Scheme::Argon2id | Scheme::Argon2i => argon2::Argon2::default().verify_password(password, &parsed),
        Scheme::Scrypt => scrypt::Scrypt.verify_password(password, &parsed),
        Scheme::Pbkdf2Sha256 | Scheme::Pbkdf2Sha512 => pbkdf2::Pbkdf2.verify_password(password, &parsed),
        Scheme::Bcrypt => return false,
    }
    .is_ok()
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher as _, SaltString};

    use super::*;

    fn salt() -> anyhow::Result<SaltString> {
        SaltString::encode_b64(b"0123456789abcdef").map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn argon2(algorithm: argon2::Algorithm, m: u32, t: u32, p: u32) -> anyhow::Result<String> {
        let params = argon2::Params::new(m, t, p, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let hasher = argon2::Argon2::new(algorithm, argon2::Version::V0x13, params);
        Ok(hasher
            .hash_password(b"pw", &salt()?)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_string())
    }

    #[test]
    fn each_scheme_verifies_with_its_library() -> anyhow::Result<()> {
        let scrypt_params = scrypt::Params::new(4, 8, 1, 32).map_err(|e| anyhow::anyhow!("{e}"))?;
        let scrypt = scrypt::Scrypt
            .hash_password_customized(b"pw", None, None, scrypt_params, &salt()?)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_string();
        let pbkdf2_params = pbkdf2::Params {
            rounds: 1_000,
            output_length: 32,
        };
        let pbkdf2 = |algorithm: pbkdf2::Algorithm| -> anyhow::Result<String> {
            Ok(pbkdf2::Pbkdf2
                .hash_password_customized(b"pw", Some(algorithm.ident()), None, pbkdf2_params, &salt()?)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_string())
        };
        let hashes = [
            (bcrypt::hash("pw", 4)?, Scheme::Bcrypt),
            (
                bcrypt::hash_with_result("pw", 4)?.format_for_version(bcrypt::Version::TwoA),
                Scheme::Bcrypt,
            ),
            (
                bcrypt::hash_with_result("pw", 4)?.format_for_version(bcrypt::Version::TwoY),
                Scheme::Bcrypt,
            ),
            (argon2(argon2::Algorithm::Argon2id, 64, 1, 1)?, Scheme::Argon2id),
            (argon2(argon2::Algorithm::Argon2i, 64, 1, 1)?, Scheme::Argon2i),
            (scrypt, Scheme::Scrypt),
            (pbkdf2(pbkdf2::Algorithm::Pbkdf2Sha256)?, Scheme::Pbkdf2Sha256),
            (pbkdf2(pbkdf2::Algorithm::Pbkdf2Sha512)?, Scheme::Pbkdf2Sha512),
        ];
        for (hash, scheme) in hashes {
            assert_eq!(check(&hash), Ok(scheme), "{hash}");
            assert!(verify("pw", &hash), "{hash}");
            assert!(!verify("pW", &hash), "{hash}");
        }
        Ok(())
    }

    #[test]
    fn costs_over_the_bounds_are_refused() -> anyhow::Result<()> {
        let bcrypt_15 = bcrypt::hash_with_salt("pw", 4, [7; 16])?
            .to_string()
            .replacen("$04$", "$15$", 1);
        let over = [
            bcrypt_15,
            // Only the parameters are read, so hashes that were never computed do.
            "$argon2id$v=19$m=262152,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE"
                .to_owned(),
            "$argon2id$v=19$m=1024,t=11,p=1$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE"
                .to_owned(),
            "$argon2i$v=19$m=1024,t=1,p=17$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE"
                .to_owned(),
            "$argon2id$v=19$m=262144,t=3,p=1$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE"
                .to_owned(),
            "$scrypt$ln=21,r=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE".to_owned(),
            "$scrypt$ln=19,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE".to_owned(),
            "$scrypt$ln=14,r=8,p=32$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE".to_owned(),
            "$pbkdf2-sha256$i=2000001,l=32$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE"
                .to_owned(),
            // Two blocks of output run the rounds twice.
            "$pbkdf2-sha256$i=1000001,l=64$MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw"
                .to_owned(),
        ];
        for hash in over {
            let refused = check(&hash).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                refused.contains("over") || refused.contains("outside"),
                "{hash}: {refused}"
            );
            assert!(!verify("pw", &hash), "{hash}");
        }
        // At the bounds themselves, accepted.
        for hash in [
            "$scrypt$ln=19,r=2,p=2$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE",
            "$pbkdf2-sha256$i=2000000,l=32$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE",
            "$argon2id$v=19$m=262144,t=2,p=16$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE",
        ] {
            assert!(check(hash).is_ok(), "{hash}: {:?}", check(hash));
        }
        Ok(())
    }

    #[test]
    fn anything_else_is_refused() {
        for hash in [
            "",
            "plain text",
            "$1$salt$md5crypthash",
            "$5$rounds=5000$salt$sha256crypt",
            "$argon2d$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE",
            "$pbkdf2$i=1000,l=32$MDEyMzQ1Njc4OWFiY2RlZg$6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE",
            "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg",
            "$2x$04$......................YgIDy4hFBdVlc/6LHnD9mX488r9cLd2",
            "$2b$$04$......................YgIDy4hFBdVlc/6LHnD9mX488r9cLd2",
            "$2b$04$......................YgIDy4hFBdVlc/6LHnD9mX488r9cLd",
            "$2b$04$......................YgIDy4hFBdVlc/6LHnD9mX488r9cLd!",
        ] {
            assert!(check(hash).is_err(), "{hash}");
            assert!(!verify("pw", hash), "{hash}");
        }
    }

    /// bcrypt reads at most 72 bytes of a password, as the systems that made the hashes did.
    #[test]
    fn bcrypt_truncates_as_its_writers_did() -> anyhow::Result<()> {
        let long = "x".repeat(100);
        let hash = bcrypt::hash(&long, 4)?;
        assert!(verify(&"x".repeat(72), &hash));
        Ok(())
    }
}
