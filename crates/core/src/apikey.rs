//! Web API keys: generation, the stored digest, and reading a key from an HTTP Basic `Authorization` header.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::digest;

/// Most characters a key read from a header may have.
const MAX_KEY_CHARS: usize = 256;

/// Most bytes of base64 a Basic payload may have; a key at its limit with an empty password fits easily.
const MAX_BASIC_PAYLOAD_BYTES: usize = 4096;

/// Standard alphabet, padding optional: clients in the wild send both.
const BASIC_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The operating system's random number generator failed, so no key was made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system random number generator failed")]
pub struct KeyGenError(#[source] getrandom::Error);

/// A Web API key in clear. `Debug` prints `ApiKey(***)`; there is no `Display`, so it cannot end up in a log
/// line by accident. Read it with [`ApiKey::expose`]; store only [`ApiKey::digest`].
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// A new random key: 128 bits from the operating system, as 32 upper-case hex digits.
    pub fn generate() -> Result<ApiKey, KeyGenError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(KeyGenError)?;
        Ok(ApiKey(upper_hex(&bytes)))
    }

    /// Wraps a key received from a client or read from a file.
    pub fn new(key: String) -> ApiKey {
        ApiKey(key)
    }

    /// The key in clear, for showing it once at creation or sending it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 digest of the key as 64 lower-case hex digits: what the database stores and looks keys up by.
    pub fn digest(&self) -> String {
        digest_key(&self.0)
    }

    /// The first 6 characters: enough to tell keys apart in a listing, too little to use.
    pub fn prefix(&self) -> String {
        self.0.chars().take(6).collect()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// The SHA-256 digest of `key` as 64 lower-case hex digits, the same as [`ApiKey::digest`].
pub fn digest_key(key: &str) -> String {
    let d = digest::digest(&digest::SHA256, key.as_bytes());
    lower_hex(d.as_ref())
}

/// Reads a Web API key from an HTTP `Authorization` header using the Basic scheme, the key as user name.
///
/// Liberal in what it accepts, as clients in the wild differ: blanks around the header, the scheme in any letter
/// case, one or more blanks after it, base64 with or without `=` padding, `KEY:` or just `KEY`. Whatever follows
/// the first colon (the password, empty as CRM.COM sends it) is ignored. The key is trimmed of blanks and must
/// be 1 to 256 characters of UTF-8 without control characters. Anything else gives `None`.
pub fn parse_basic_authorization(header: &str) -> Option<ApiKey> {
    let header = header.trim_matches(is_blank);
    let (scheme, rest) = header.split_once(is_blank)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let payload = rest.trim_start_matches(is_blank);
    if payload.is_empty() || payload.len() > MAX_BASIC_PAYLOAD_BYTES {
        return None;
    }
    let decoded = BASIC_ENGINE.decode(payload).ok()?;
    let text = std::str::from_utf8(&decoded).ok()?;
    let user = match text.split_once(':') {
        Some((user, _password)) => user,
        None => text,
    };
    let key = user.trim_matches(is_blank);
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || key.chars().any(char::is_control) {
        return None;
    }
    Some(ApiKey(key.to_owned()))
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn upper_hex(bytes: &[u8]) -> String {
    hex(bytes, b"0123456789ABCDEF")
}

fn lower_hex(bytes: &[u8]) -> String {
    hex(bytes, b"0123456789abcdef")
}

fn hex(bytes: &[u8], digits: &[u8; 16]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(digits[usize::from(b >> 4)]));
        out.push(char::from(digits[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    #[test]
    fn generated_keys_are_32_upper_hex_and_distinct() -> Result<(), KeyGenError> {
        let a = ApiKey::generate()?;
        let b = ApiKey::generate()?;
        assert!(crate::ids::is_id(a.expose()));
        assert_ne!(a.expose(), b.expose());
        Ok(())
    }

    #[test]
    fn digest_is_sha256_lower_hex() {
        // SHA-256("abc") from FIPS 180-2.
        assert_eq!(
            digest_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ApiKey::new("abc".into()).digest(), digest_key("abc"));
    }

    #[test]
    fn prefix_is_first_six_chars() {
        assert_eq!(ApiKey::new("ABCDEF0123".into()).prefix(), "ABCDEF");
        assert_eq!(ApiKey::new("AB".into()).prefix(), "AB");
    }

    #[test]
    fn debug_hides_the_key() {
        let key = ApiKey::new("SECRETKEY".into());
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
    }

    fn parsed(header: &str) -> Option<String> {
        parse_basic_authorization(header).map(|k| k.expose().to_owned())
    }

    #[test]
    fn accepts_the_forms_clients_send() {
        let key = "EE63A82C4FEBE02FF34E90DD1EBA5ABE";
        let with_colon = STANDARD.encode(format!("{key}:"));
        let without = STANDARD.encode(key);
        let unpadded = STANDARD_NO_PAD.encode(format!("{key}:"));
        for header in [
            format!("Basic {with_colon}"),
            format!("basic {without}"),
            format!("BASIC {unpadded}"),
            format!("  bAsIc \t {with_colon}  "),
            format!("Basic {}", STANDARD.encode(format!("  {key} :"))),
            format!("Basic {}", STANDARD.encode(format!("{key}:ignored:too"))),
        ] {
            assert_eq!(parsed(&header).as_deref(), Some(key), "{header}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "A".repeat(257);
        for header in [
            String::new(),
            "Basic".to_owned(),
            "Basic ".to_owned(),
            format!("Bearer {}", STANDARD.encode("KEY:")),
            format!("Basic{}", STANDARD.encode("KEY:")),
            "Basic !!!notbase64".to_owned(),
            format!("Basic {}", STANDARD.encode(":")),
            format!("Basic {}", STANDARD.encode("   :password")),
            format!("Basic {}", STANDARD.encode(format!("{long}:"))),
            format!("Basic {}", STANDARD.encode("KE\u{7}Y:")),
            format!("Basic {}", STANDARD.encode([0xff, 0xfe, b':'])),
            format!("Basic {} extra", STANDARD.encode("KEY:")),
        ] {
            assert_eq!(parsed(&header), None, "{header}");
        }
        let max = "é".repeat(256);
        assert_eq!(
            parsed(&format!("Basic {}", STANDARD.encode(format!("{max}:")))),
            Some(max)
        );
    }
}
