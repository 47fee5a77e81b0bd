//! Arbitrary text as an `Authorization` header: `parse_basic_authorization` never panics, and any key it
//! returns is one the server can look up (non-empty, at most 256 characters, no control character, no blank
//! at either end, no colon) and that a client sending it the usual way gets back unchanged. The same text
//! goes through `parse_bearer_authorization`, whose token is never empty or padded with blanks.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm_auth_core::{parse_basic_authorization, parse_bearer_authorization};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // actix hands the server header values as `&str` only when they are valid UTF-8.
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(token) = parse_bearer_authorization(header) {
        assert!(!token.is_empty(), "empty bearer token from {header:?}");
        assert_eq!(token, token.trim(), "untrimmed bearer token from {header:?}");
        assert_eq!(
            parse_bearer_authorization(&format!("Bearer {token}")),
            Some(token),
            "bearer token does not round-trip"
        );
    }
    let Some(key) = parse_basic_authorization(header) else {
        return;
    };
    let key = key.expose();
    assert!(!key.is_empty(), "empty key from {header:?}");
    assert!(key.chars().count() <= 256, "over-long key from {header:?}");
    assert!(
        !key.chars().any(char::is_control),
        "control character in key from {header:?}"
    );
    assert!(
        !key.starts_with([' ', '\t']) && !key.ends_with([' ', '\t']),
        "untrimmed key from {header:?}"
    );
    assert!(!key.contains(':'), "key with a colon from {header:?}");
    for user in [format!("{key}:"), key.to_owned()] {
        let again = parse_basic_authorization(&format!("Basic {}", STANDARD.encode(&user)));
        assert_eq!(
            again.as_ref().map(|k| k.expose()),
            Some(key),
            "{user:?} does not round-trip"
        );
    }
});
