//! Arbitrary bytes as a request body, decoded into each of core's wire types the way the server and the
//! client decode them: nothing panics, and whatever decodes encodes back to JSON that decodes to the same
//! value (so the server and the client, which share these types, read each other's bodies unchanged).
//!
//! The same bytes go through core's field rules (`from_json`, what the server accepts): whatever they accept
//! keeps every limit, reads back unchanged from its own JSON, and agrees with the lenient token lookup of the
//! extractor.

#![no_main]

use crm_auth_core::limits::{MAX_NAME_CHARS, MAX_PASSWORD_BYTES, MAX_TOKEN_BYTES};
use crm_auth_core::{
    ApiKeyTokenRequest, Empty, Envelope, PasswordTokenRequest, Status, TokenRequest, TokenResponse,
    ValidateResponse,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes `data` as `T`; when that works, checks that `T`'s own JSON decodes to the same value.
fn round_trip<T, K>(data: &[u8], key: impl Fn(&T) -> K)
where
    T: Serialize + DeserializeOwned,
    K: PartialEq + std::fmt::Debug,
{
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let json = match serde_json::to_vec(&value) {
        Ok(json) => json,
        Err(e) => panic!("a decoded {} does not encode: {e}", std::any::type_name::<T>()),
    };
    match serde_json::from_slice::<T>(&json) {
        Ok(again) => assert_eq!(key(&again), key(&value), "{} changed", std::any::type_name::<T>()),
        Err(e) => panic!("{} does not decode its own JSON: {e}", std::any::type_name::<T>()),
    }
}

/// A name the server accepted: non-empty, at most [`MAX_NAME_CHARS`] characters, no NUL.
fn check_name(name: &str) {
    assert!(!name.is_empty(), "empty name accepted");
    assert!(name.chars().count() <= MAX_NAME_CHARS, "over-long name accepted");
    assert!(!name.contains('\0'), "name with a NUL accepted");
}

/// Core's field rules: what they accept keeps the limits and reads back from its own JSON unchanged.
fn check_field_rules(data: &[u8]) {
    if let Ok(login) = PasswordTokenRequest::from_json(data) {
        check_name(&login.username);
        check_name(&login.organisation);
        if let Some(unit) = &login.unit {
            check_name(unit);
        }
        assert!(!login.password.is_empty() && login.password.len() <= MAX_PASSWORD_BYTES);
        let json = serde_json::to_vec(&login).unwrap_or_default();
        let again = PasswordTokenRequest::from_json(&json).ok();
        assert_eq!(
            again.map(|r| (r.username, r.password, r.organisation, r.unit)),
            Some((login.username, login.password, login.organisation, login.unit)),
            "an accepted password login does not read back"
        );
    }
    if let Ok(request) = ApiKeyTokenRequest::from_json(data) {
        if let Some(unit) = &request.unit {
            check_name(unit);
        }
        let json = serde_json::to_vec(&request).unwrap_or_default();
        assert_eq!(ApiKeyTokenRequest::from_json(&json).ok(), Some(request));
    }
    let lenient = TokenRequest::token_in_json(data);
    if let Ok(request) = TokenRequest::from_json(data) {
        if let Some(token) = &request.token {
            assert!(!token.is_empty() && token.chars().count() <= MAX_TOKEN_BYTES);
            // Where the server finds a token, the extractor finds the same one.
            assert_eq!(lenient.as_ref(), Some(token), "the two token lookups disagree");
        }
        let json = serde_json::to_vec(&request).unwrap_or_default();
        assert_eq!(TokenRequest::from_json(&json).ok(), Some(request));
    }
}

fuzz_target!(|data: &[u8]| {
    check_field_rules(data);
    // `PasswordTokenRequest` has no `PartialEq`, so that a password is never compared outside constant time
    // by accident; the fuzzer compares its fields.
    round_trip(data, |r: &PasswordTokenRequest| {
        (
            r.username.clone(),
            r.password.clone(),
            r.organisation.clone(),
            r.unit.clone(),
        )
    });
    round_trip(data, ApiKeyTokenRequest::clone);
    round_trip(data, TokenRequest::clone);
    round_trip(data, TokenResponse::clone);
    round_trip(data, ValidateResponse::clone);
    round_trip(data, Status::clone);
    round_trip(data, Envelope::<TokenResponse>::clone);
    round_trip(data, Envelope::<Empty>::clone);
});
