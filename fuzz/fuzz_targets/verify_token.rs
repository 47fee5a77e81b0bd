//! Arbitrary bytes as a token: `verify`, `verify_ignoring_expiry` and `decode_unverified` never panic and
//! agree with each other (see `crm_auth_fuzz::check_token`). A token that verifies must also survive being
//! issued again from its claims.

#![no_main]

use crm_auth_core::token::DateFormat;
use crm_auth_core::{issue, verify};
use crm_auth_fuzz::{check_token, keyring, options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Tokens reach the server as header or JSON text, so they are always UTF-8; lossy conversion keeps every
    // input useful instead of discarding the invalid ones.
    let token = String::from_utf8_lossy(data);
    if let Ok(claims) = check_token(&token) {
        for format in [DateFormat::Numeric, DateFormat::String] {
            let again = issue(keyring(), &claims, format);
            assert_eq!(
                verify(keyring(), &again, &options(true)).as_ref(),
                Ok(&claims),
                "re-issued claims do not verify"
            );
        }
    }
});
