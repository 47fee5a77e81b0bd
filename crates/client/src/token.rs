//! A token as the SDK hands it out: the compact JWT together with its claims, decoded without verification.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crm_auth_core::{Claims, decode_unverified};

use crate::Error;
use crate::session::system_time;

/// A session token: the compact JWT and its decoded claims.
///
/// The claims are read without checking the signature (the SDK holds no signing key), so they say what the
/// server issued only when the token came from the server; downstream services verify tokens with
/// `crm_auth_core::Verifier` or the validate endpoint instead. `iat`/`exp` are read as JSON numbers or as JSON
/// strings of digits, as CRM.COM's own tokens carry them.
///
/// `Debug` prints the session id, user, organisation and expiry, never the token itself, and there is no
/// `Display` or `AsRef<str>`: the raw token is reached through [`Token::as_str`] only, so it is not passed or
/// printed by accident. Cloning is cheap.
#[derive(Clone)]
pub struct Token {
    inner: Arc<Inner>,
}

struct Inner {
    raw: String,
    claims: Claims,
}

impl Token {
    /// Decodes a compact JWT's claims, without verifying its signature or times.
    ///
    /// Fails with [`Error::InvalidArgument`] when `raw` is not a compact JWT with a JSON header and well-formed
    /// claims.
    pub fn parse(raw: impl Into<String>) -> Result<Token, Error> {
        let raw = raw.into();
        let claims = decode_unverified(&raw).map_err(|e| Error::invalid_argument(e.to_string()))?;
        Ok(Token {
            inner: Arc::new(Inner { raw, claims }),
        })
    }

    /// The compact JWT, to send with a request (for instance as `Authorization: Bearer` or a `token` field).
    pub fn as_str(&self) -> &str {
        &self.inner.raw
    }

    /// The decoded claims.
    pub fn claims(&self) -> &Claims {
        &self.inner.claims
    }

    /// The session id (`jti`), the same across refreshes of one session.
    pub fn session_id(&self) -> &str {
        &self.inner.claims.jti
    }

    /// The username as stored (`usr`), whatever spelling the login used.
    pub fn username(&self) -> &str {
        &self.inner.claims.usr
    }

    /// The organisation's name as stored (`org`).
    pub fn organisation(&self) -> &str {
        &self.inner.claims.org
    }

    /// The unit the session is logged into (`oun`): its name, or its code or id when the server's
    /// `token.unit_claim` says so.
    pub fn unit(&self) -> &str {
        &self.inner.claims.oun
    }

    /// The refresh generation (`gen`): 0 for a login's token, one more at each refresh of the session.
    pub fn generation(&self) -> u64 {
        self.inner.claims.r#gen
    }

    /// Issue time (`iat`), unix seconds.
    pub fn issued_at(&self) -> i64 {
        self.inner.claims.iat
    }

    /// Expiry time (`exp`), unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.inner.claims.exp
    }

    /// Time left until expiry by the system clock; zero once expired. Whole seconds, as the token's times
    /// are.
    pub fn expires_in(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.remaining(system_time())).unwrap_or(0))
    }

    /// Seconds from `now` (unix seconds) until expiry; negative once expired. [`Token::expires_in`] with a
    /// clock of the caller's.
    pub fn remaining(&self, now: i64) -> i64 {
        self.expires_at().saturating_sub(now)
    }

    /// Seconds between issue and expiry, never negative.
    pub(crate) fn lifetime(&self) -> i64 {
        self.expires_at().saturating_sub(self.issued_at()).max(0)
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.inner.raw == other.inner.raw
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let claims = self.claims();
        f.debug_struct("Token")
            .field("jti", &claims.jti)
            .field("usr", &claims.usr)
            .field("org", &claims.org)
            .field("exp", &claims.exp)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crm_auth_core::{DateFormat, Keyring, SigningKey, issue};

    use super::*;

    const JTI: &str = "EE63A82C4FEBE02FF34E90DD1EBA5ABE";

    fn claims() -> Claims {
        Claims::new(JTI, "alice", "Acme", "Main", 1_495_713_382, 1_495_720_582)
            .issued_by("crm-auth")
            .at_generation(3)
    }

    fn mint(format: DateFormat) -> anyhow::Result<String> {
        let keyring = Keyring::new(vec![SigningKey::new("k1", vec![42; 32])?])?;
        Ok(issue(&keyring, &claims(), format))
    }

    fn payload(raw: &str) -> anyhow::Result<String> {
        use base64::Engine as _;
        let segment = raw
            .split('.')
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("no payload"))?;
        Ok(String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment)?,
        )?)
    }

    #[test]
    fn parses_numeric_and_string_dates_alike() -> anyhow::Result<()> {
        let numeric = mint(DateFormat::Numeric)?;
        let string = mint(DateFormat::String)?;
        // The two forms must really differ on the wire, else this test proves nothing about the string form.
        assert!(payload(&numeric)?.contains(r#""exp":1495720582"#));
        assert!(payload(&string)?.contains(r#""exp":"1495720582""#));
        for raw in [numeric, string] {
            let token = Token::parse(raw.clone())?;
            assert_eq!(token.as_str(), raw);
            assert_eq!(token.claims(), &claims());
            assert_eq!(token.session_id(), JTI);
            assert_eq!(token.issued_at(), 1_495_713_382);
            assert_eq!(token.expires_at(), 1_495_720_582);
            assert_eq!(token.lifetime(), 7200);
        }
        Ok(())
    }

    #[test]
    fn remaining_counts_down_and_goes_negative() -> anyhow::Result<()> {
        let token = Token::parse(mint(DateFormat::Numeric)?)?;
        assert_eq!(token.remaining(1_495_720_582 - 60), 60);
        assert_eq!(token.remaining(1_495_720_582), 0);
        assert_eq!(token.remaining(1_495_720_582 + 5), -5);
        assert_eq!(token.remaining(i64::MIN), i64::MAX);
        Ok(())
    }

    #[test]
    fn accessors_read_the_claims() -> anyhow::Result<()> {
        let token = Token::parse(mint(DateFormat::String)?)?;
        assert_eq!(
            (
                token.username(),
                token.organisation(),
                token.unit(),
                token.generation()
            ),
            ("alice", "Acme", "Main", 3)
        );
        // Minted in 2017: long expired by the system clock.
        assert_eq!(token.expires_in(), Duration::ZERO);
        let now = system_time();
        let live = Token::parse(issue(
            &Keyring::new(vec![SigningKey::new("k1", vec![42; 32])?])?,
            &{
                let mut live = claims();
                live.iat = now;
                live.exp = now + 3600;
                live
            },
            DateFormat::Numeric,
        ))?;
        let left = live.expires_in();
        assert!(
            (Duration::from_secs(3590)..=Duration::from_secs(3600)).contains(&left),
            "{left:?}"
        );
        Ok(())
    }

    #[test]
    fn rejects_what_is_not_a_jwt() {
        for raw in ["", "not.a.token", "abc", "a.b", "eyJhbGciOiJIUzI1NiJ9..sig"] {
            let err = Token::parse(raw).err();
            assert!(
                matches!(err, Some(Error::InvalidArgument { .. })),
                "{raw:?}: {err:?}"
            );
        }
    }

    #[test]
    fn debug_hides_the_raw_token() -> anyhow::Result<()> {
        let raw = mint(DateFormat::Numeric)?;
        let token = Token::parse(raw.clone())?;
        let debug = format!("{token:?}");
        assert_eq!(
            debug,
            format!(r#"Token {{ jti: "{JTI}", usr: "alice", org: "Acme", exp: 1495720582, .. }}"#)
        );
        for segment in raw.split('.') {
            assert!(!debug.contains(segment), "{debug}");
        }
        Ok(())
    }

    #[test]
    fn equality_is_by_raw_token() -> anyhow::Result<()> {
        let a = Token::parse(mint(DateFormat::Numeric)?)?;
        let b = Token::parse(mint(DateFormat::String)?)?;
        assert_eq!(a, a.clone());
        // Same claims, different encoding: different tokens.
        assert_ne!(a, b);
        Ok(())
    }
}
