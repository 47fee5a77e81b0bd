//! The OpenAPI 3.1 document of every endpoint, served at `GET /openapi.json` and committed as
//! `docs/openapi.json` (`cargo xtask codegen`).
//!
//! It is derived from the code it describes, so it cannot drift from it: core's wire types derive their
//! schemas (feature `openapi`), each handler carries its `#[utoipa::path]`, and the paths are core's
//! [`routes`]. This module adds what is the same for every operation: each error code's answer (its HTTP
//! status from [`ErrorCode`], an example envelope with the code's end-user message), the security schemes,
//! examples made by serialising the wire types (the example token is really issued by
//! [`crm_auth_core::issue`]), and the base path the API is mounted under.

use std::collections::BTreeMap;

use crm_auth_core::{
    ApiKeyTokenRequest, AuthMethod, Claims, DateFormat, Empty, Envelope, ErrorCode, Keyring,
    PasswordTokenRequest, SessionInfo, SigningKey, Status, TokenError, TokenRequest, TokenResponse,
    ValidateResponse, issue, routes,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Paths};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, Required};
use utoipa::{IntoParams, Modify, OpenApi as _};

use crate::http::health::{Health, HealthStatus};
use crate::http::{admin, health, ops, token};

/// Operations of the authentication API, under the base path.
pub const TAG_AUTH: &str = "authentication";
/// Operations for operators, at the root.
pub const TAG_OPS: &str = "operations";
/// The administration API, at the root.
pub const TAG_ADMIN: &str = "administration";

/// The security scheme of the Web API key login: the key as the Basic user name, empty password.
const WEB_API_KEY: &str = "web_api_key";
/// The security scheme of refresh, release and validate when the token travels in `Authorization`.
const BEARER: &str = "bearer_token";

const JSON: &str = "application/json";

/// The description of the optional bodies (key login, refresh, release, validate).
pub const OPTIONAL_BODY: &str = "Optional: no body, an empty body or a JSON object (unknown fields ignored), \
    whatever the `Content-Type`.";

/// The ids and times the examples use.
const EXAMPLE_ID: &str = "EE63A82C4FEBE02FF34E90DD1EBA5ABE";
const EXAMPLE_IAT: i64 = 1_495_713_382;
const EXAMPLE_TTL: i64 = 7_200;

/// Error codes every API operation can answer besides its own: oversized or slow body, database down,
/// a bug.
const COMMON_ERRORS: [ErrorCode; 4] = [
    ErrorCode::PayloadTooLarge,
    ErrorCode::RequestTimeout,
    ErrorCode::Unavailable,
    ErrorCode::InternalError,
];

/// The `token` query parameter of refresh, release and validate.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The token, when neither the header nor the body carries it
    // The pattern is what a token consists of: base64url segments joined by dots, ASCII only. It is stated
    // because a URI cannot carry just any 8192 characters: percent-encoded, they can exceed the 64 KiB that
    // the HTTP layer parses, which answers such a request with a bare 400 instead of the envelope.
    #[param(max_length = 8192, pattern = "^[A-Za-z0-9_.-]*$", nullable = false)]
    pub token: Option<String>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "crm-auth",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        token::create_token,
        token::create_key_token,
        token::refresh_token,
        token::release_token,
        token::validate_token,
        health::get_live,
        health::get_ready,
        ops::get_metrics,
        ops::get_openapi,
        ops::get_jwks,
        admin::admin_list_organisations,
        admin::admin_create_organisation,
        admin::admin_get_organisation,
        admin::admin_list_units,
        admin::admin_create_unit,
        admin::admin_list_users,
        admin::admin_create_user,
        admin::admin_get_user,
        admin::admin_update_user,
        admin::admin_end_user_sessions,
        admin::admin_list_keys,
        admin::admin_create_key,
        admin::admin_revoke_key,
        admin::admin_list_sessions,
        admin::admin_revoke_session,
        admin::admin_list_audit,
        admin::admin_import,
    ),
    components(schemas(Envelope<Empty>, ErrorCode)),
    // In this order: the error answers are chosen by the handler's name, before `OperationIds` adds methods.
    modifiers(&Answers, &OptionalBodies, &SecuritySchemes, &SchemaExamples, &OperationIds),
    tags(
        (name = TAG_AUTH, description = "Tokens and sessions, under {base}"),
        (name = TAG_OPS, description = "Health, metrics, public signing keys and this document, at the root"),
        (name = TAG_ADMIN, description = "Administration by an admin (its own organisation) or an operator \
            (every organisation), at the root: `Authorization: Bearer` with the caller's crm-auth token"),
    ),
)]
struct ApiDoc;

/// The document for an API under `base_path` (`http.base_path`, already validated).
pub fn document(base_path: &str) -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.description = Some(DESCRIPTION.replace("{base}", base_path));
    for tag in doc.tags.iter_mut().flatten() {
        tag.description = tag.description.take().map(|d| d.replace("{base}", base_path));
    }
    // The handlers' paths are relative to the base path the API is mounted under; the operator paths are not.
    let mut paths = Paths::new();
    for (path, item) in std::mem::take(&mut doc.paths.paths) {
        let path = match routes::API.contains(&path.as_str()) {
            true if base_path != "/" => format!("{base_path}{path}"),
            _ => path,
        };
        paths.paths.insert(path, item);
    }
    doc.paths = paths;
    doc
}

/// [`document`] as pretty-printed JSON ending in a newline, the form committed as `docs/openapi.json`.
pub fn to_json(base_path: &str) -> Result<String, serde_json::Error> {
    let mut json = document(base_path).to_pretty_json()?;
    json.push('\n');
    Ok(json)
}

const DESCRIPTION: &str = "\
A self-hostable implementation of the authentication service of CRM.COM's Web API: JWTs (HS256, or EdDSA / \
ES256 with their public keys at `/.well-known/jwks.json`) for a username and password in an organisation, or for \
a Web API key; refresh, logout and validation for downstream services.

Every response under `{base}` is JSON in one envelope, errors included: \
`{\"data\": {...}, \"status\": {\"code\": \"OK\", \"description\": \"\", \"message\": \"\"}}`. On failure \
`data` is `{}`, `status.code` is one of the codes of `ErrorCode`, `status.message` is a sentence fit to \
show an end user and `status.description` may name the offending field. Besides the answers listed per \
operation, an unknown path answers 404 `NOT_FOUND` and a known path with another method 405 \
`METHOD_NOT_ALLOWED`, in the same envelope.

A server configured with `http.error_status = \"always_200\"` sends every error under `{base}` with HTTP 200 \
instead of the status listed here, the envelope and its headers unchanged, for clients that read only \
`status.code`; the operations at the root keep their statuses.";

// ---------------------------------------------------------------------------------------------------------
// Error answers

/// The error codes an operation answers, by operation id (the handler's name); the API's operations answer
/// [`COMMON_ERRORS`] too.
fn errors(operation_id: &str) -> Vec<ErrorCode> {
    use ErrorCode::*;
    let (own, common): (&[ErrorCode], bool) = match operation_id {
        "create_token" => (
            &[
                InvalidRequest,
                InvalidCredentials,
                InvalidUnit,
                TooManyAttempts,
                RateLimited,
            ],
            true,
        ),
        "create_key_token" => (
            &[InvalidRequest, InvalidCredentials, InvalidUnit, RateLimited],
            true,
        ),
        "refresh_token" => (
            &[
                InvalidRequest,
                InvalidToken,
                TokenExpired,
                SessionEnded,
                RateLimited,
            ],
            true,
        ),
        "release_token" => (&[InvalidRequest, InvalidToken], true),
        "validate_token" => (&[InvalidRequest, InvalidToken, TokenExpired, SessionEnded], true),
        "get_ready" => (&[Unavailable, InternalError], false),
        "admin_create_organisation" | "admin_create_unit" | "admin_create_user" => (
            &[
                InvalidRequest,
                InvalidToken,
                TokenExpired,
                SessionEnded,
                Forbidden,
                NotFound,
                Conflict,
            ],
            true,
        ),
        "admin_import" => (
            &[
                InvalidRequest,
                InvalidToken,
                TokenExpired,
                SessionEnded,
                Forbidden,
                Conflict,
            ],
            true,
        ),
        id if id.starts_with("admin_") => (
            &[
                InvalidRequest,
                InvalidToken,
                TokenExpired,
                SessionEnded,
                Forbidden,
                NotFound,
            ],
            true,
        ),
        _ => (&[InternalError], false),
    };
    let common: &[ErrorCode] = if common { &COMMON_ERRORS } else { &[] };
    own.iter().chain(common).copied().collect()
}

/// Gives the operations of a handler that serves several methods ids of their own, `{handler}_{method}`:
/// an operation id must be unique in the document.
struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, doc: &mut OpenApi) {
        for item in doc.paths.paths.values_mut() {
            let operations = [("get", item.get.as_mut()), ("post", item.post.as_mut())];
            let operations: Vec<_> = operations
                .into_iter()
                .filter_map(|(method, op)| op.map(|op| (method, op)))
                .collect();
            if operations.len() < 2 {
                continue;
            }
            for (method, operation) in operations {
                operation.operation_id = operation.operation_id.take().map(|id| format!("{id}_{method}"));
            }
        }
    }
}

/// Marks the bodies described as [`OPTIONAL_BODY`] as not required. Their schema stays the object's own,
/// rather than the `null`-or-object an `Option` body would get, since a `null` body is refused.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, doc: &mut OpenApi) {
        for item in doc.paths.paths.values_mut() {
            for operation in [item.get.as_mut(), item.post.as_mut()].into_iter().flatten() {
                if let Some(body) = operation.request_body.as_mut()
                    && body.description.as_deref() == Some(OPTIONAL_BODY)
                {
                    body.required = Some(Required::False);
                }
            }
        }
    }
}

/// Adds each operation's error answers: one response per HTTP status, with one named example per code.
struct Answers;

impl Modify for Answers {
    fn modify(&self, doc: &mut OpenApi) {
        for item in doc.paths.paths.values_mut() {
            let operations = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                add_errors(operation);
            }
        }
    }
}

fn add_errors(operation: &mut Operation) {
    let operation_id = operation.operation_id.clone().unwrap_or_default();
    let codes = errors(&operation_id);
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        by_status.entry(code.http_status()).or_default().push(code);
    }
    for (status, codes) in by_status {
        operation.responses.responses.insert(
            status.to_string(),
            RefOr::T(error_response(&operation_id, &codes)),
        );
    }
}

/// One HTTP status's error answer of an operation: the error envelope with one named example per code.
fn error_response(operation_id: &str, codes: &[ErrorCode]) -> Response {
    let description = codes
        .iter()
        .map(|c| format!("`{}`: {}", c.as_str(), when(operation_id, *c)))
        .collect::<Vec<_>>()
        .join(" ");
    let examples = codes.iter().map(|code| {
        let example = ExampleBuilder::new()
            .summary(code.as_str())
            .value(Some(error_example(*code)))
            .build();
        (code.as_str(), example)
    });
    let mut response = ResponseBuilder::new().description(description).content(
        JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ERROR_ENVELOPE)))
            .examples_from_iter(examples)
            .build(),
    );
    if codes
        .iter()
        .any(|c| matches!(c, ErrorCode::TooManyAttempts | ErrorCode::RateLimited))
    {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
                .description(Some("Seconds until the next attempt is accepted"))
                .build(),
        );
    } else if is_lockout_wait(operation_id, codes) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
                .description(Some(
                    "Seconds to wait before trying again (1); sent when the password checks of the \
                     organisation + username stayed taken, not when the database is down",
                ))
                .build(),
        );
    }
    response.build()
}

/// Whether this answer of the operation includes the password login's `UNAVAILABLE` after waiting for a
/// password-check slot of the account.
fn is_lockout_wait(operation_id: &str, codes: &[ErrorCode]) -> bool {
    operation_id == "create_token" && codes.contains(&ErrorCode::Unavailable)
}

/// The name utoipa gives `Envelope<Empty>`, the body of every failed response.
const ERROR_ENVELOPE: &str = "Envelope_Empty";

/// When the operation answers each code, as the contract says.
fn when(operation_id: &str, code: ErrorCode) -> &'static str {
    if is_lockout_wait(operation_id, &[code]) {
        return "the database cannot be reached (the request changed nothing); or more logins of this \
                organisation + username arrived at once than may be checked at once (the lockout threshold \
                minus the failures so far), and this one found no turn within `auth.lockout.max_wait_ms`: its \
                password was neither checked nor counted, and `Retry-After: 1` says to try again.";
    }
    if operation_id == "admin_import" {
        match code {
            ErrorCode::InvalidRequest => {
                return "the body is not NDJSON, or a line is not a JSON object, has an unknown `type` or \
                        field, misses a field, breaks a naming rule, holds a hash that is not accepted or over \
                        its cost bounds, repeats another line (a key given twice), or names an organisation, \
                        unit or user that neither the file nor the database has; `status.description` names \
                        the line and the field. Nothing was written.";
            }
            ErrorCode::Conflict => {
                return "a line disagrees with what is stored (another unit list, hash, role, state or \
                        code; a key of another user or revoked); `status.description` names the line and \
                        the field. Nothing was written.";
            }
            ErrorCode::Forbidden => return "the caller is not an operator.",
            ErrorCode::PayloadTooLarge => return "the body is over `http.max_import_bytes`.",
            _ => {}
        }
    }
    if operation_id.starts_with("admin_") {
        match code {
            ErrorCode::InvalidRequest => {
                return "the body is not JSON, has an unknown field, or a field or query parameter is \
                        missing, empty, of the wrong type or over its limit; or a name breaks the naming \
                        rules; `status.description` names it.";
            }
            ErrorCode::InvalidToken | ErrorCode::TokenExpired | ErrorCode::SessionEnded => {
                return "the caller's bearer token is missing or does not validate (as validate answers).";
            }
            ErrorCode::Forbidden => {
                return "the caller is a member; or an admin creating an organisation, granting \
                        `operator` or changing an operator.";
            }
            ErrorCode::NotFound => {
                return "the organisation, unit, user, key or session named does not exist (for an admin: \
                        or is another organisation's).";
            }
            _ => {}
        }
    }
    match code {
        ErrorCode::InvalidRequest => {
            "the body is not JSON, or a field is missing, empty, of the wrong type or over its limit."
        }
        ErrorCode::InvalidCredentials => {
            "unknown organisation or user, wrong password, disabled user, unknown, revoked or expired key, \
             missing or unreadable Basic credentials; one message for every cause."
        }
        ErrorCode::InvalidUnit => {
            "the unit asked for is not in the organisation or the user is not a member; or no unit was \
             asked and the user has no default."
        }
        ErrorCode::Forbidden => "an administration request by a caller whose role does not allow it.",
        ErrorCode::Conflict => "an administration request creating a name that is taken.",
        ErrorCode::InvalidToken => {
            "token missing, malformed, badly signed, of an unknown key id, of an algorithm other than \
             HS256, or of another issuer."
        }
        ErrorCode::TokenExpired => "a genuine token past its `exp` (for refresh: past the refresh grace).",
        ErrorCode::SessionEnded => {
            "the session was released, revoked, is past its maximum lifetime, was ended by refresh reuse, \
             or its user, key, unit or organisation is disabled."
        }
        ErrorCode::TooManyAttempts => {
            "the organisation + username is locked after failed logins; `Retry-After` gives the seconds."
        }
        ErrorCode::RateLimited => {
            "this client address sent too many requests; `Retry-After` gives the seconds."
        }
        ErrorCode::NotFound => "no such path.",
        ErrorCode::MethodNotAllowed => "the path exists, the method does not.",
        ErrorCode::PayloadTooLarge => "the body is over `http.max_body_bytes`.",
        ErrorCode::RequestTimeout => {
            "the body did not fully arrive within `http.body_timeout_seconds`; the connection is closed."
        }
        ErrorCode::Unavailable => "the database cannot be reached; the request changed nothing.",
        ErrorCode::InternalError => "a bug; the message carries a request id that the log line also carries.",
        // `ErrorCode` is non-exhaustive; a code added to core without a line here keeps its own message.
        _ => code.default_message(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Security schemes and component examples

/// The two ways a request carries a credential.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            WEB_API_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("The Web API key as the user name, with an empty password"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A token issued by this service"))
                    .build(),
            ),
        );
    }
}

/// Gives every component schema an example, made by serialising the type it describes.
struct SchemaExamples;

impl Modify for SchemaExamples {
    fn modify(&self, doc: &mut OpenApi) {
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        for (name, schema) in components.schemas.iter_mut() {
            match (schema, schema_example(name)) {
                (RefOr::T(Schema::Object(object)), Some(example)) => object.examples = vec![example],
                // A type with a flattened member (`CreatedKey`) is all of its parts.
                (RefOr::T(Schema::AllOf(all)), Some(example)) => all.examples = vec![example],
                _ => {}
            }
        }
    }
}

/// The example of the component schema `name`, if it has one.
fn schema_example(name: &str) -> Option<Value> {
    let example = match name {
        "PasswordTokenRequest" => password_request_example(),
        "ApiKeyTokenRequest" => key_request_example(),
        "TokenRequest" => token_request_example(),
        "TokenResponse" => json(token_response()),
        "SessionInfo" => json(example_session()),
        "ValidateResponse" => json(validate_response()),
        "Status" => json(Status::ok()),
        "Empty" => json(Empty {}),
        "Health" => json(Health {
            status: HealthStatus::Live,
        }),
        "Jwk" => json(example_jwks().keys.first()),
        "Jwks" => json(example_jwks()),
        ERROR_ENVELOPE => error_example(ErrorCode::InvalidCredentials),
        "Envelope_TokenResponse" => token_envelope_example(),
        "Envelope_ValidateResponse" => validate_envelope_example(),
        "Envelope_Health" => ready_envelope_example(),
        name => match name.strip_prefix("Envelope_") {
            // An administration answer: its `data` is the example of the type it wraps.
            Some(data) => {
                let data = match data.strip_prefix("Page_") {
                    Some(item) => serde_json::json!({"items": [admin_example(item)?], "next_cursor": null}),
                    None => admin_example(data)?,
                };
                serde_json::json!({"data": data, "status": json(Status::ok())})
            }
            None => admin_example(name)?,
        },
    };
    Some(example)
}

/// The example of an administration API type, made from the type itself.
fn admin_example(name: &str) -> Option<Value> {
    use crm_auth_core::admin;
    const UNIT_ID: &str = "77B7852377604CD8A62E2C0DD7903268";
    let unit = || admin::Unit {
        id: UNIT_ID.into(),
        name: "Headquarters".into(),
        code: Some("HQ".into()),
    };
    let key = || admin::Key {
        id: "C5BF0C14DF6A49D9925D60160BFF7E38".into(),
        prefix: "596E48".into(),
        name: Some("billing".into()),
        username: "alice".into(),
        expires_at: Some(EXAMPLE_IAT + 365 * 86_400),
        created_at: EXAMPLE_IAT,
        last_used_at: None,
        revoked_at: None,
    };
    let example = match name {
        "Organisation" => json(admin::Organisation {
            id: "632D1203265C45D1B0835D9E5DD4A3BB".into(),
            name: "Acme".into(),
            created_at: EXAMPLE_IAT,
        }),
        "Unit" => json(unit()),
        "User" => json(admin::User {
            id: "79CED1B7258441E98B86CECE8A663634".into(),
            username: "alice".into(),
            role: crm_auth_core::Role::Member,
            disabled: false,
            units: vec![unit()],
            default_unit: Some(UNIT_ID.into()),
            created_at: EXAMPLE_IAT,
        }),
        "Key" => json(key()),
        "CreatedKey" => json(admin::CreatedKey {
            info: key(),
            key: "596E48A141811BADB271ABD3D2C93631".into(),
        }),
        "Session" => json(admin::Session {
            id: EXAMPLE_ID.into(),
            username: "alice".into(),
            unit: "Headquarters".into(),
            method: AuthMethod::Password,
            created_at: EXAMPLE_IAT,
            expires_at: EXAMPLE_IAT + EXAMPLE_TTL,
            refreshed_at: None,
            client: Some("192.0.2.10".into()),
        }),
        "AuditEvent" => json(admin::AuditEvent {
            at: EXAMPLE_IAT,
            actor: "ann@Acme".into(),
            action: "user.create".into(),
            target: "alice".into(),
            client: Some("192.0.2.10".into()),
        }),
        "Ended" => json(admin::Ended { ended: 2 }),
        "ImportReport" => json(admin::ImportReport {
            created: admin::ImportCounts {
                organisations: 1,
                units: 3,
                users: 1_200,
                web_api_keys: 40,
            },
            unchanged: 0,
            dry_run: false,
        }),
        "ImportCounts" => json(admin::ImportCounts {
            organisations: 1,
            units: 3,
            users: 1_200,
            web_api_keys: 40,
        }),
        "Empty" => json(Empty {}),
        "NewOrganisation" => json(admin::NewOrganisation { name: "Acme".into() }),
        "NewUnit" => json(admin::NewUnit {
            name: "Headquarters".into(),
            code: Some("HQ".into()),
        }),
        "NewUser" => json(admin::NewUser {
            username: "alice".into(),
            password: Some("correct horse battery staple".into()),
            units: vec!["HQ".into()],
            default_unit: Some("HQ".into()),
            role: Some(crm_auth_core::Role::Member),
        }),
        "UserChange" => json(admin::UserChange {
            disabled: Some(true),
            ..admin::UserChange::default()
        }),
        "NewKey" => json(admin::NewKey {
            username: "alice".into(),
            name: Some("billing".into()),
            expires_at: None,
        }),
        _ => return None,
    };
    Some(example)
}

// ---------------------------------------------------------------------------------------------------------
// Examples, made from the wire types themselves

fn json(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// A token really issued for the example session, under an example key.
fn example_token() -> String {
    let claims = Claims::new(
        EXAMPLE_ID,
        "admin",
        "demo",
        "HQ",
        EXAMPLE_IAT,
        EXAMPLE_IAT + EXAMPLE_TTL,
    )
    .issued_by("crm-auth");
    SigningKey::new("example", b"an example secret, 32 bytes or more".to_vec())
        .and_then(|key| Keyring::new(vec![key]))
        .map(|keyring| issue(&keyring, &claims, DateFormat::Numeric))
        .unwrap_or_default()
}

/// A JWKS of one Ed25519 and one P-256 key: RFC 8037's and RFC 7517's example public keys, so that the
/// document stays the same from build to build.
fn example_jwks() -> crm_auth_core::Jwks {
    let jwk = |kty: &str, crv: &str, x: &str, y: Option<&str>, kid: &str, alg: &str| crm_auth_core::Jwk {
        kty: kty.to_owned(),
        crv: Some(crv.to_owned()),
        x: Some(x.to_owned()),
        y: y.map(str::to_owned),
        kid: Some(kid.to_owned()),
        alg: Some(alg.to_owned()),
        use_: Some("sig".to_owned()),
    };
    crm_auth_core::Jwks {
        keys: vec![
            jwk(
                "OKP",
                "Ed25519",
                "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                None,
                "2026-12",
                "EdDSA",
            ),
            jwk(
                "EC",
                "P-256",
                "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
                Some("4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"),
                "2026-06",
                "ES256",
            ),
        ],
    }
}

fn example_session() -> SessionInfo {
    SessionInfo::new(
        EXAMPLE_ID,
        "admin",
        "demo",
        "HQ",
        AuthMethod::Password,
        EXAMPLE_IAT,
        EXAMPLE_IAT + EXAMPLE_TTL,
    )
}

fn token_response() -> TokenResponse {
    TokenResponse {
        token: example_token(),
    }
}

fn validate_response() -> ValidateResponse {
    ValidateResponse {
        session: example_session(),
    }
}

/// The body of a password login.
pub fn password_request_example() -> Value {
    json(PasswordTokenRequest {
        username: "admin".into(),
        password: "correct horse battery staple".into(),
        organisation: "demo".into(),
        unit: Some("HQ".into()),
    })
}

/// The body of a key login.
pub fn key_request_example() -> Value {
    json(ApiKeyTokenRequest {
        unit: Some("HQ".into()),
    })
}

/// The body of a refresh, release or validate.
pub fn token_request_example() -> Value {
    json(TokenRequest {
        token: Some(example_token()),
    })
}

/// A token answer.
pub fn token_envelope_example() -> Value {
    json(Envelope::ok(token_response()))
}

/// A release's answer.
pub fn empty_envelope_example() -> Value {
    json(Envelope::ok(Empty {}))
}

/// A validate answer.
pub fn validate_envelope_example() -> Value {
    json(Envelope::ok(validate_response()))
}

/// `/health/live`'s answer.
pub fn live_envelope_example() -> Value {
    json(Envelope::ok(Health {
        status: HealthStatus::Live,
    }))
}

/// `/health/ready`'s answer.
pub fn ready_envelope_example() -> Value {
    json(Envelope::ok(Health {
        status: HealthStatus::Ready,
    }))
}

/// The envelope the server answers with for `code`: the code's end-user message and a typical description,
/// worded by the code that answers it.
fn error_example(code: ErrorCode) -> Value {
    let description = match code {
        ErrorCode::InvalidRequest => PasswordTokenRequest::from_json(b"{}")
            .err()
            .map(|e| e.into_message())
            .unwrap_or_default(),
        ErrorCode::InvalidToken => TokenError::BadSignature.to_string(),
        ErrorCode::TokenExpired => TokenError::Expired.to_string(),
        _ => String::new(),
    };
    let message = match code {
        ErrorCode::InternalError => {
            format!(
                "{} Quote request id {EXAMPLE_ID} when reporting it.",
                code.default_message()
            )
        }
        _ => code.default_message().to_owned(),
    };
    json(Envelope::error(code, message, description))
}

#[cfg(test)]
mod tests {
    use crm_auth_core::limits::{MAX_NAME_CHARS, MAX_TOKEN_BYTES};

    use super::*;

    const BASE: &str = "/crmapi/rest/v2";

    fn doc() -> anyhow::Result<Value> {
        Ok(serde_json::to_value(document(BASE))?)
    }

    /// Error examples must carry the code their response's HTTP status belongs to.
    #[test]
    fn error_answers_match_their_status() -> anyhow::Result<()> {
        let doc = doc()?;
        let mut seen = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                for (status, response) in op["responses"].as_object().into_iter().flatten() {
                    let examples = response["content"][JSON]["examples"].as_object();
                    for (code, example) in examples.into_iter().flatten() {
                        let parsed: ErrorCode = code.parse().map_err(|_| anyhow::anyhow!("{code}"))?;
                        assert_eq!(
                            parsed.http_status().to_string(),
                            *status,
                            "{method} {path} {code}"
                        );
                        assert_eq!(example["value"]["status"]["code"], code.as_str());
                        assert_eq!(example["value"]["data"], serde_json::json!({}));
                        seen.insert(parsed);
                    }
                }
            }
        }
        // Every code but the two answered for paths and methods that do not exist shows up somewhere.
        for &code in ErrorCode::ALL {
            if !matches!(code, ErrorCode::NotFound | ErrorCode::MethodNotAllowed) {
                assert!(seen.contains(&code), "{code} is documented nowhere");
            }
        }
        Ok(())
    }

    /// The password login's 503 says when a lockout wait ran out and carries `Retry-After`; other operations'
    /// 503s (database down) do not.
    #[test]
    fn only_the_password_login_documents_a_lockout_wait() -> anyhow::Result<()> {
        let doc = doc()?;
        let login = &doc["paths"][format!("{BASE}{}", routes::PASSWORD_TOKEN)]["post"]["responses"]["503"];
        assert!(login["headers"]["Retry-After"].is_object(), "{login}");
        assert!(
            login["description"]
                .as_str()
                .is_some_and(|d| d.contains("auth.lockout.max_wait_ms")),
            "{login}"
        );
        let refresh = &doc["paths"][format!("{BASE}{}", routes::REFRESH_TOKEN)]["post"]["responses"]["503"];
        assert!(refresh["headers"].get("Retry-After").is_none(), "{refresh}");
        assert!(refresh["description"].is_string());
        Ok(())
    }

    /// The derives state the limits as literals; they must be the limits the server enforces.
    #[test]
    fn schema_limits_are_core_limits() -> anyhow::Result<()> {
        let doc = doc()?;
        let schemas = &doc["components"]["schemas"];
        for field in ["username", "organisation", "unit"] {
            let max = &schemas["PasswordTokenRequest"]["properties"][field]["maxLength"];
            assert_eq!(max.as_u64(), u64::try_from(MAX_NAME_CHARS).ok(), "{field}");
        }
        let unit = &schemas["ApiKeyTokenRequest"]["properties"]["unit"]["maxLength"];
        assert_eq!(unit.as_u64(), u64::try_from(MAX_NAME_CHARS).ok());
        let token = &schemas["TokenRequest"]["properties"]["token"]["maxLength"];
        assert_eq!(token.as_u64(), u64::try_from(MAX_TOKEN_BYTES).ok());
        let refresh = &doc["paths"][format!("{BASE}{}", routes::REFRESH_TOKEN)]["post"];
        assert_eq!(
            refresh["parameters"][0]["schema"]["maxLength"].as_u64(),
            u64::try_from(MAX_TOKEN_BYTES).ok()
        );
        Ok(())
    }

    /// Bodies other than the password login's and the administration API's are optional, and none of them
    /// may be `null`.
    #[test]
    fn only_the_password_login_and_admin_requests_require_a_body() -> anyhow::Result<()> {
        let doc = doc()?;
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Some(body) = op.get("requestBody") else {
                    continue;
                };
                let required = body["required"].as_bool().unwrap_or(false);
                let id = op["operationId"].as_str().unwrap_or_default();
                assert_eq!(
                    required,
                    id == "create_token" || id.starts_with("admin_"),
                    "{method} {path}"
                );
                // The import's body is NDJSON, text; every other is a JSON object of a wire type.
                let schema = match id {
                    "admin_import" => {
                        &body["content"][crm_auth_core::admin::IMPORT_CONTENT_TYPE]["schema"]["type"]
                    }
                    _ => &body["content"][JSON]["schema"]["$ref"],
                };
                assert!(schema.is_string(), "{method} {path}");
            }
        }
        Ok(())
    }

    /// Every schema that describes a wire type shows an example of it.
    #[test]
    fn every_component_with_an_example_has_it() -> anyhow::Result<()> {
        let doc = doc()?;
        let schemas = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(schemas.len() >= 14, "{}", schemas.len());
        for (name, schema) in &schemas {
            let enumeration = schema.get("enum").is_some();
            assert!(
                enumeration || schema["examples"].as_array().is_some_and(|e| e.len() == 1),
                "{name} has no example"
            );
        }
        Ok(())
    }

    #[test]
    fn paths_follow_the_base_path() {
        let doc = document("/auth");
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        assert!(
            paths.contains(&&"/auth/authentication/token".to_owned()),
            "{paths:?}"
        );
        assert!(paths.contains(&&"/metrics".to_owned()), "{paths:?}");
        assert!(!paths.iter().any(|p| p.starts_with(BASE)), "{paths:?}");
        let root = document("/");
        assert!(root.paths.paths.contains_key(routes::PASSWORD_TOKEN));
    }

    #[test]
    fn example_token_is_a_real_token() {
        let token = example_token();
        let claims = crm_auth_core::decode_unverified(&token);
        assert_eq!(claims.map(|c| c.jti), Ok(EXAMPLE_ID.to_owned()));
    }
}
