//! Request and response bodies: their JSON shapes, and that `Debug` never shows a secret.

use anyhow::Result;
use crm_auth_core::token::{Keyring, SigningKey};
use crm_auth_core::{
    ApiKey, ApiKeyTokenRequest, AuthMethod, PasswordTokenRequest, SessionInfo, TokenRequest, TokenResponse,
    ValidateResponse,
};
use serde_json::json;

const SECRET: &str = "s3cr3t-value-that-must-not-leak-0123456789";

#[test]
fn debug_never_shows_secrets() -> Result<()> {
    let key = ApiKey::new(SECRET.into());
    let signing = SigningKey::new("main", SECRET.as_bytes().to_vec())?;
    let ring = Keyring::new(vec![signing.clone()])?;
    let login = PasswordTokenRequest {
        username: "admin".into(),
        password: SECRET.into(),
        organisation: "demo".into(),
        unit: Some("HQ".into()),
    };
    let response = TokenResponse { token: SECRET.into() };
    let request = TokenRequest {
        token: Some(SECRET.into()),
    };
    for printed in [
        format!("{key:?}"),
        format!("{signing:?}"),
        format!("{ring:?}"),
        format!("{login:?}"),
        format!("{response:?}"),
        format!("{request:?}"),
        format!("{:#?}", (&key, &signing, &ring, &login, &response, &request)),
    ] {
        assert!(!printed.contains(SECRET), "{printed}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
    }
    assert_eq!(format!("{key:?}"), "ApiKey(***)");
    assert_eq!(format!("{response:?}"), "TokenResponse { token: *** }");
    assert!(
        format!("{login:?}").contains("admin"),
        "the non-secret fields stay visible"
    );
    Ok(())
}

#[test]
fn password_request_shape() -> Result<()> {
    // Extra fields are ignored; unit may be absent or null.
    let r: PasswordTokenRequest = serde_json::from_value(json!({
        "username": "admin", "password": "pw", "organisation": "demo", "extra": 1
    }))?;
    assert_eq!(
        (r.username.as_str(), r.password.as_str(), r.organisation.as_str()),
        ("admin", "pw", "demo")
    );
    assert_eq!(r.unit, None);
    assert_eq!(
        serde_json::to_value(&r)?,
        json!({"username": "admin", "password": "pw", "organisation": "demo"})
    );
    let r: PasswordTokenRequest = serde_json::from_value(json!({
        "username": "admin", "password": "pw", "organisation": "demo", "unit": null
    }))?;
    assert_eq!(r.unit, None);
    let r: PasswordTokenRequest = serde_json::from_value(json!({
        "username": "admin", "password": "pw", "organisation": "demo", "unit": "HQ"
    }))?;
    assert_eq!(r.unit.as_deref(), Some("HQ"));
    assert!(
        serde_json::from_value::<PasswordTokenRequest>(json!({"username": "a", "password": "b"})).is_err()
    );
    assert!(
        serde_json::from_value::<PasswordTokenRequest>(
            json!({"username": 1, "password": "b", "organisation": "c"})
        )
        .is_err()
    );
    Ok(())
}

#[test]
fn optional_bodies() -> Result<()> {
    assert_eq!(
        serde_json::from_str::<ApiKeyTokenRequest>("{}")?,
        ApiKeyTokenRequest::default()
    );
    assert_eq!(serde_json::to_string(&ApiKeyTokenRequest::default())?, "{}");
    let r: ApiKeyTokenRequest = serde_json::from_str(r#"{"unit":"HQ"}"#)?;
    assert_eq!(r.unit.as_deref(), Some("HQ"));
    assert_eq!(
        serde_json::from_str::<TokenRequest>("{}")?,
        TokenRequest::default()
    );
    assert_eq!(
        serde_json::to_string(&TokenRequest {
            token: Some("t".into())
        })?,
        r#"{"token":"t"}"#
    );
    assert_eq!(
        serde_json::to_string(&TokenResponse { token: "t".into() })?,
        r#"{"token":"t"}"#
    );
    Ok(())
}

#[test]
fn validate_response_shape() -> Result<()> {
    let v = ValidateResponse {
        session: SessionInfo::new(
            "EE63A82C4FEBE02FF34E90DD1EBA5ABE",
            "admin",
            "demo",
            "HQ",
            AuthMethod::WebApiKey,
            1_750_000_000,
            1_750_007_200,
        ),
    };
    let expected = json!({"session": {
        "id": "EE63A82C4FEBE02FF34E90DD1EBA5ABE", "username": "admin", "organisation": "demo", "unit": "HQ",
        "method": "web_api_key", "issued_at": 1_750_000_000, "expires_at": 1_750_007_200
    }});
    assert_eq!(serde_json::to_value(&v)?, expected);
    assert_eq!(serde_json::from_value::<ValidateResponse>(expected)?, v);
    assert_eq!(serde_json::to_value(AuthMethod::Password)?, json!("password"));
    assert_eq!("web_api_key".parse::<AuthMethod>()?, AuthMethod::WebApiKey);
    Ok(())
}
