//! Arbitrary bytes as a request body, decoded into each of core's wire types the way the server and the
//! client decode them: nothing panics, and whatever decodes encodes back to JSON that decodes to the same
//! value (so the server and the client, which share these types, read each other's bodies unchanged).

#![no_main]

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

fuzz_target!(|data: &[u8]| {
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
