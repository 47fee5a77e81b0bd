//! The envelope's exact JSON, and every error code's wire string and HTTP status.

use anyhow::Result;
use crm_auth_core::{Empty, Envelope, ErrorCode, Status, TokenResponse};
use serde_json::json;

#[test]
fn success_envelope_is_exact() -> Result<()> {
    let env = Envelope::ok(TokenResponse { token: "x".into() });
    assert_eq!(
        serde_json::to_string(&env)?,
        r#"{"data":{"token":"x"},"status":{"code":"OK","description":"","message":""}}"#
    );
    Ok(())
}

#[test]
fn error_envelope_is_exact() -> Result<()> {
    let env = Envelope::error(
        ErrorCode::InvalidCredentials,
        ErrorCode::InvalidCredentials.default_message(),
        "",
    );
    assert_eq!(
        serde_json::to_string(&env)?,
        r#"{"data":{},"status":{"code":"INVALID_CREDENTIALS","description":"","message":"The credentials are not valid."}}"#
    );
    let env = Envelope::error(ErrorCode::InvalidRequest, "The request is not valid.", "username");
    assert_eq!(
        serde_json::to_value(&env)?,
        json!({"data": {}, "status": {"code": "INVALID_REQUEST", "description": "username", "message": "The request is not valid."}})
    );
    Ok(())
}

#[test]
fn every_code_has_its_wire_string_and_status() -> Result<()> {
    let table = [
        (ErrorCode::InvalidRequest, "INVALID_REQUEST", 400),
        (ErrorCode::InvalidCredentials, "INVALID_CREDENTIALS", 401),
        (ErrorCode::InvalidUnit, "INVALID_UNIT", 403),
        (ErrorCode::Forbidden, "FORBIDDEN", 403),
        (ErrorCode::Conflict, "CONFLICT", 409),
        (ErrorCode::InvalidToken, "INVALID_TOKEN", 401),
        (ErrorCode::TokenExpired, "TOKEN_EXPIRED", 401),
        (ErrorCode::SessionEnded, "SESSION_ENDED", 401),
        (ErrorCode::TooManyAttempts, "TOO_MANY_ATTEMPTS", 429),
        (ErrorCode::RateLimited, "RATE_LIMITED", 429),
        (ErrorCode::NotFound, "NOT_FOUND", 404),
        (ErrorCode::MethodNotAllowed, "METHOD_NOT_ALLOWED", 405),
        (ErrorCode::PayloadTooLarge, "PAYLOAD_TOO_LARGE", 413),
        (ErrorCode::RequestTimeout, "REQUEST_TIMEOUT", 408),
        (ErrorCode::Unavailable, "UNAVAILABLE", 503),
        (ErrorCode::InternalError, "INTERNAL_ERROR", 500),
    ];
    assert_eq!(table.map(|(code, _, _)| code).as_slice(), ErrorCode::ALL);
    for (code, wire, status) in table {
        assert_eq!(serde_json::to_value(code)?, json!(wire), "{wire}");
        assert_eq!(serde_json::from_value::<ErrorCode>(json!(wire))?, code, "{wire}");
        assert_eq!(code.as_str(), wire, "{wire}");
        assert_eq!(code.to_string(), wire, "{wire}");
        assert_eq!(wire.parse::<ErrorCode>()?, code, "{wire}");
        assert_eq!(code.http_status(), status, "{wire}");
        assert_eq!(Status::error(code, "m", "d").error_code(), Some(code), "{wire}");
    }
    Ok(())
}

#[test]
fn status_tolerates_null_and_missing_texts() -> Result<()> {
    // Some CRM.COM responses carry null where this service writes "".
    let s: Status = serde_json::from_value(json!({"code": "OK", "description": null, "message": null}))?;
    assert_eq!(s, Status::ok());
    let s: Status = serde_json::from_value(json!({"code": "SOMETHING_NEW"}))?;
    assert!(!s.is_ok());
    assert_eq!(s.error_code(), None);
    assert!(serde_json::from_value::<Status>(json!({"description": ""})).is_err());
    Ok(())
}

#[test]
fn empty_reads_any_object() -> Result<()> {
    assert_eq!(serde_json::to_string(&Empty {})?, "{}");
    assert_eq!(
        serde_json::from_str::<Empty>(r#"{"a":[1,{"b":null}],"c":"d"}"#)?,
        Empty {}
    );
    assert_eq!(serde_json::from_str::<Empty>("{}")?, Empty {});
    assert_eq!(serde_json::from_str::<Empty>("null")?, Empty {});
    assert!(serde_json::from_str::<Empty>("5").is_err());
    assert!(serde_json::from_str::<Empty>(r#""x""#).is_err());
    Ok(())
}

#[test]
fn envelopes_round_trip() -> Result<()> {
    let ok = Envelope::ok(TokenResponse { token: "abc".into() });
    let back: Envelope<TokenResponse> = serde_json::from_str(&serde_json::to_string(&ok)?)?;
    assert_eq!(back, ok);
    let err = Envelope::error(ErrorCode::SessionEnded, "The session has ended.", "");
    let back: Envelope<Empty> = serde_json::from_str(&serde_json::to_string(&err)?)?;
    assert_eq!(back, err);
    assert_eq!(back.status.error_code(), Some(ErrorCode::SessionEnded));
    Ok(())
}
