//! The OpenAPI 3.1 document of every endpoint, served at `GET /openapi.json` and committed as
//! `docs/openapi.json` (`cargo xtask codegen`).
//!
//! It is assembled with utoipa's builders from the facts the server itself uses, so it cannot drift from
//! them: the field limits of `crm_auth_core::limits`, the error codes and their HTTP statuses of
//! [`ErrorCode`], and examples made by serialising the core wire types (the example token is really issued by
//! [`crm_auth_core::issue`]). The wire types stay free of any OpenAPI dependency; their schemas are written
//! here, and the tests check every example against its schema.

use std::collections::BTreeMap;

use crm_auth_core::limits::{MAX_NAME_CHARS, MAX_PASSWORD_BYTES, MAX_TOKEN_BYTES};
use crm_auth_core::{
    AuthMethod, Claims, DateFormat, Empty, Envelope, ErrorCode, Keyring, SessionInfo, SigningKey, TokenError,
    TokenResponse, ValidateResponse, issue,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::info::{InfoBuilder, LicenseBuilder};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathItemBuilder, PathsBuilder,
};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    Components, ComponentsBuilder, KnownFormat, ObjectBuilder, Ref, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{OpenApi, OpenApiBuilder, Required};

use crate::http::health::Health;
use crate::metrics;

/// The security scheme of the Web API key login: the key as the Basic user name, empty password.
const WEB_API_KEY: &str = "web_api_key";
/// The security scheme of refresh, release and validate when the token travels in `Authorization`.
const BEARER: &str = "bearer_token";

/// Operations of the authentication API, under the base path.
const TAG_AUTH: &str = "authentication";
/// Operations for operators, at the root.
const TAG_OPS: &str = "operations";

const JSON: &str = "application/json";

/// What a token consists of: base64url segments joined by dots, ASCII only. Stated for the query parameter
/// because a URI cannot carry just any 8192 characters: percent-encoded, they can exceed the 64 KiB that the
/// HTTP layer parses, which answers such a request with a bare 400 instead of the envelope.
const TOKEN_PATTERN: &str = "^[A-Za-z0-9_.-]*$";

/// The ids and times the examples use.
const EXAMPLE_ID: &str = "EE63A82C4FEBE02FF34E90DD1EBA5ABE";
const EXAMPLE_IAT: i64 = 1_495_713_382;
const EXAMPLE_TTL: i64 = 7_200;

/// Error codes every API operation can answer besides its own: oversized body, database down, a bug.
const COMMON_ERRORS: [ErrorCode; 3] = [
    ErrorCode::PayloadTooLarge,
    ErrorCode::Unavailable,
    ErrorCode::InternalError,
];

/// The document for an API under `base_path` (`http.base_path`, already validated).
pub fn document(base_path: &str) -> OpenApi {
    let api = |path: &str| {
        if base_path == "/" {
            path.to_owned()
        } else {
            format!("{base_path}{path}")
        }
    };
    let paths = PathsBuilder::new()
        .path(
            api("/authentication/token"),
            PathItem::new(HttpMethod::Post, password_token()),
        )
        .path(api("/authentication/web_api_key/token"), key_token())
        .path(
            api("/authentication/token/refresh"),
            PathItem::new(HttpMethod::Post, refresh_token()),
        )
        .path(
            api("/authentication/token/release"),
            PathItem::new(HttpMethod::Post, release_token()),
        )
        .path(api("/authentication/token/validate"), validate_token())
        .path("/health/live", PathItem::new(HttpMethod::Get, health_live()))
        .path("/health/ready", PathItem::new(HttpMethod::Get, health_ready()))
        .path("/metrics", PathItem::new(HttpMethod::Get, get_metrics()))
        .path("/openapi.json", PathItem::new(HttpMethod::Get, get_openapi()));
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("crm-auth")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION.replace("{base}", base_path)))
                .license(Some(
                    LicenseBuilder::new()
                        .name("Apache-2.0")
                        .identifier(Some("Apache-2.0"))
                        .build(),
                )),
        )
        .paths(paths)
        .components(Some(components()))
        .tags(Some([
            TagBuilder::new()
                .name(TAG_AUTH)
                .description(Some(format!("Tokens and sessions, under {base_path}")))
                .build(),
            TagBuilder::new()
                .name(TAG_OPS)
                .description(Some("Health, metrics and this document, at the root"))
                .build(),
        ]))
        .build()
}

/// [`document`] as pretty-printed JSON ending in a newline, the form committed as `docs/openapi.json`.
pub fn to_json(base_path: &str) -> Result<String, serde_json::Error> {
    let mut json = document(base_path).to_pretty_json()?;
    json.push('\n');
    Ok(json)
}

const DESCRIPTION: &str = "\
A self-hostable implementation of the authentication service of CRM.COM's Web API: HS256 JWTs for a username \
and password in an organisation, or for a Web API key; refresh, logout and validation for downstream services.

Every response under `{base}` is JSON in one envelope, errors included: \
`{\"data\": {...}, \"status\": {\"code\": \"OK\", \"description\": \"\", \"message\": \"\"}}`. On failure \
`data` is `{}`, `status.code` is one of the codes of `ErrorStatus`, `status.message` is a sentence fit to \
show an end user and `status.description` may name the offending field. Besides the answers listed per \
operation, an unknown path answers 404 `NOT_FOUND` and a known path with another method 405 \
`METHOD_NOT_ALLOWED`, in the same envelope.";

// ---------------------------------------------------------------------------------------------------------
// Operations

fn password_token() -> OperationBuilder {
    operation(
        "create_token",
        "Get a token by username and password",
        "Opens a session for the user in the organisation, logged into the unit asked for or the user's \
         default unit. Failed logins count per organisation + username; from the lockout threshold on, \
         attempts are refused with `TOO_MANY_ATTEMPTS` and a `Retry-After` header for a delay that doubles \
         per failure.",
        TAG_AUTH,
    )
    .request_body(Some(json_body(
        "PasswordTokenRequest",
        true,
        password_request_example(),
    )))
    .responses_from(
        ok_response(
            "A token for the new session",
            "TokenEnvelope",
            token_envelope_example(),
        ),
        &[
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidCredentials,
            ErrorCode::InvalidUnit,
            ErrorCode::TooManyAttempts,
            ErrorCode::RateLimited,
        ],
    )
}

fn key_token() -> PathItem {
    let build = |method: &str| {
        let mut op = operation(
            &format!("create_key_token_{method}"),
            "Get a token by Web API key",
            "The key is the HTTP Basic user name with an empty password (`base64(\"KEY:\")` or \
             `base64(\"KEY\")`, scheme in any letter case). The session belongs to the key's user in the \
             key's organisation, logged into the unit asked for (body, else query) or the user's default \
             unit.",
            TAG_AUTH,
        )
        .security(SecurityRequirement::new(WEB_API_KEY, Vec::<String>::new()))
        .parameter(query(
            "unit",
            "A unit id, name or code, when the body names none; absent or empty: the user's default unit",
            MAX_NAME_CHARS,
            None,
        ));
        if method == "post" {
            op = op.request_body(Some(json_body(
                "ApiKeyTokenRequest",
                false,
                json(crm_auth_core::ApiKeyTokenRequest {
                    unit: Some("HQ".into()),
                }),
            )));
        }
        op.responses_from(
            ok_response(
                "A token for the new session",
                "TokenEnvelope",
                token_envelope_example(),
            ),
            &[
                ErrorCode::InvalidRequest,
                ErrorCode::InvalidCredentials,
                ErrorCode::InvalidUnit,
                ErrorCode::RateLimited,
            ],
        )
    };
    PathItemBuilder::new()
        .operation(HttpMethod::Post, build("post"))
        .operation(HttpMethod::Get, build("get"))
        .build()
}

fn refresh_token() -> OperationBuilder {
    token_operation(
        "refresh_token",
        "Refresh a token",
        "Returns the session's next token: same `jti`, `iat` now, `exp` at most the session's end. The \
         presented token may be past its `exp` by the refresh grace. Only the newest token of a session \
         refreshes; the one it replaced gets the newest back within the reuse interval, and any other \
         superseded token ends the session (`SESSION_ENDED` from then on for every token of it).",
    )
    .responses_from(
        ok_response(
            "The session's next token",
            "TokenEnvelope",
            token_envelope_example(),
        ),
        &[
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidToken,
            ErrorCode::TokenExpired,
            ErrorCode::SessionEnded,
            ErrorCode::RateLimited,
        ],
    )
}

fn release_token() -> OperationBuilder {
    token_operation(
        "release_token",
        "End the token's session (logout)",
        "Idempotent: releasing an ended session is `OK`. A token past its `exp` can still be released; one \
         that does not verify is `INVALID_TOKEN`.",
    )
    .responses_from(
        ok_response(
            "The session has ended",
            "EmptyEnvelope",
            json(Envelope::ok(Empty {})),
        ),
        &[ErrorCode::InvalidRequest, ErrorCode::InvalidToken],
    )
}

fn validate_token() -> PathItem {
    let build = |method: &str| {
        token_operation(
            &format!("validate_token_{method}"),
            "Is this token's session live",
            "For downstream services that must see logouts at once. Any unexpired token of a live session \
             validates, a superseded one included until its own `exp`.",
        )
        .responses_from(
            ok_response(
                "The token's live session",
                "ValidateEnvelope",
                validate_envelope_example(),
            ),
            &[
                ErrorCode::InvalidRequest,
                ErrorCode::InvalidToken,
                ErrorCode::TokenExpired,
                ErrorCode::SessionEnded,
            ],
        )
    };
    PathItemBuilder::new()
        .operation(HttpMethod::Get, build("get"))
        .operation(HttpMethod::Post, build("post"))
        .build()
}

/// Refresh, release and validate: the token comes from `Authorization: Bearer`, else the body's `token`, else
/// the query's `token`.
fn token_operation(id: &str, summary: &str, description: &str) -> OperationBuilder {
    let description = format!(
        "{description}\n\nThe token is read from `Authorization: Bearer <token>`, else the JSON body field \
         `token`, else the query parameter `token`."
    );
    operation(id, summary, &description, TAG_AUTH)
        .security(SecurityRequirement::new(BEARER, Vec::<String>::new()))
        .security(SecurityRequirement::default())
        .request_body(Some(json_body(
            "TokenRequest",
            false,
            json(serde_json::json!({ "token": example_token() })),
        )))
        .parameter(query(
            "token",
            "The token, when neither the header nor the body carries it",
            MAX_TOKEN_BYTES,
            Some(TOKEN_PATTERN),
        ))
}

fn health_live() -> OperationBuilder {
    let example = json(Envelope::ok(Health { status: "live" }));
    operation("get_live", "Liveness", "The process answers.", TAG_OPS).responses_from_exact(
        ok_response("Live", "HealthEnvelope", example),
        &[ErrorCode::InternalError],
    )
}

fn health_ready() -> OperationBuilder {
    let example = json(Envelope::ok(Health { status: "ready" }));
    operation(
        "get_ready",
        "Readiness",
        "The process answers and the database does too; `UNAVAILABLE` when it does not.",
        TAG_OPS,
    )
    .responses_from_exact(
        ok_response("Ready", "HealthEnvelope", example),
        &[ErrorCode::Unavailable, ErrorCode::InternalError],
    )
}

fn get_metrics() -> OperationBuilder {
    let body = ContentBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .example(Some(Value::from(
            "# HELP crm_auth_token_grants_total Token requests by login method and outcome\n\
             # TYPE crm_auth_token_grants_total counter\n\
             crm_auth_token_grants_total{method=\"password\",outcome=\"ok\"} 42\n",
        )))
        .build();
    operation(
        "get_metrics",
        "Prometheus metrics",
        "The text exposition format 0.0.4. Every series is named `crm_auth_*`; the `route` label of the HTTP \
         series is the matched route pattern, or `unmatched`.",
        TAG_OPS,
    )
    .responses_from_exact(
        ResponseBuilder::new()
            .description("The metrics")
            .content(metrics::CONTENT_TYPE, body)
            .build(),
        &[ErrorCode::InternalError],
    )
}

fn get_openapi() -> OperationBuilder {
    let body = ContentBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
        .build();
    operation(
        "get_openapi",
        "This document",
        "The OpenAPI document of every endpoint, for the configured base path; not wrapped in the envelope.",
        TAG_OPS,
    )
    .responses_from_exact(
        ResponseBuilder::new()
            .description("The OpenAPI document")
            .content(JSON, body)
            .build(),
        &[ErrorCode::InternalError],
    )
}

fn operation(id: &str, summary: &str, description: &str, tag: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(summary))
        .description(Some(description))
        .tag(tag)
}

/// Adds the success and error answers to an operation.
trait Answers {
    /// 200, then `errors` plus [`COMMON_ERRORS`], one response per HTTP status.
    fn responses_from(self, ok: Response, errors: &[ErrorCode]) -> Self;
    /// 200, then exactly `errors`.
    fn responses_from_exact(self, ok: Response, errors: &[ErrorCode]) -> Self;
}

impl Answers for OperationBuilder {
    fn responses_from(self, ok: Response, errors: &[ErrorCode]) -> Self {
        let all: Vec<ErrorCode> = errors.iter().chain(COMMON_ERRORS.iter()).copied().collect();
        self.responses_from_exact(ok, &all)
    }

    fn responses_from_exact(self, ok: Response, errors: &[ErrorCode]) -> Self {
        let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
        for code in errors {
            by_status.entry(code.http_status()).or_default().push(*code);
        }
        by_status
            .into_iter()
            .fold(self.response("200", ok), |op, (status, codes)| {
                op.response(status.to_string(), error_response(&codes))
            })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Requests and responses

fn query(name: &str, description: &str, max_length: usize, pattern: Option<&str>) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(max_length))
                .pattern(pattern),
        ))
}

fn json_body(schema: &str, required: bool, example: Option<Value>) -> RequestBody {
    let (required, description) = if required {
        (Required::True, "A JSON object; unknown fields are ignored.")
    } else {
        (
            Required::False,
            "Optional: no body, an empty body or a JSON object (unknown fields ignored), whatever the \
             `Content-Type`.",
        )
    };
    RequestBodyBuilder::new()
        .description(Some(description))
        .required(Some(required))
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .example(example)
                .build(),
        )
        .build()
}

fn ok_response(description: &str, schema: &str, example: Option<Value>) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .example(example)
                .build(),
        )
        .build()
}

/// One HTTP status's error answer: the `ErrorEnvelope` with one named example per code.
fn error_response(codes: &[ErrorCode]) -> Response {
    let description = codes
        .iter()
        .map(|c| format!("`{}`: {}", c.as_str(), when(*c)))
        .collect::<Vec<_>>()
        .join(" ");
    let examples = codes.iter().map(|code| {
        let example = ExampleBuilder::new()
            .summary(code.as_str())
            .value(error_example(*code))
            .build();
        (code.as_str(), example)
    });
    let mut response = ResponseBuilder::new().description(description).content(
        JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
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
    }
    response.build()
}

/// When each code is answered, as the contract's table says.
fn when(code: ErrorCode) -> &'static str {
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
        ErrorCode::Unavailable => "the database cannot be reached; the request changed nothing.",
        ErrorCode::InternalError => "a bug; the message carries a request id that the log line also carries.",
    }
}

// ---------------------------------------------------------------------------------------------------------
// Schemas

fn components() -> Components {
    let ok_envelope = |data: &str, description: &str| {
        ObjectBuilder::new()
            .description(Some(description))
            .property("data", Ref::from_schema_name(data))
            .required("data")
            .property("status", Ref::from_schema_name("OkStatus"))
            .required("status")
    };
    ComponentsBuilder::new()
        .security_scheme(
            WEB_API_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("The Web API key as the user name, with an empty password"))
                    .build(),
            ),
        )
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A token issued by this service"))
                    .build(),
            ),
        )
        .schema("OkStatus", ok_status())
        .schema("ErrorStatus", error_status())
        .schema("Empty", empty())
        .schema(
            "ErrorEnvelope",
            ObjectBuilder::new()
                .description(Some("Every failed response: `data` is `{}`"))
                .property("data", Ref::from_schema_name("Empty"))
                .required("data")
                .property("status", Ref::from_schema_name("ErrorStatus"))
                .required("status")
                .examples(error_example(ErrorCode::InvalidCredentials)),
        )
        .schema("PasswordTokenRequest", password_request())
        .schema("ApiKeyTokenRequest", key_request())
        .schema("TokenRequest", token_request())
        .schema("TokenResponse", token_response())
        .schema(
            "TokenEnvelope",
            ok_envelope("TokenResponse", "A token").examples(token_envelope_example()),
        )
        .schema(
            "EmptyEnvelope",
            ok_envelope("Empty", "Success without data").examples(json(Envelope::ok(Empty {}))),
        )
        .schema("SessionInfo", session_info())
        .schema("ValidateResponse", validate_response())
        .schema(
            "ValidateEnvelope",
            ok_envelope("ValidateResponse", "A live session").examples(validate_envelope_example()),
        )
        .schema("Health", health_schema())
        .schema(
            "HealthEnvelope",
            ok_envelope("Health", "A health answer").examples(json(Envelope::ok(Health { status: "ready" }))),
        )
        .build()
}

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

fn nullable_string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(description))
}

fn unix_seconds(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(description))
}

fn ok_status() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some("The status of a successful response"))
        .property("code", string("Always `OK`").enum_values(Some(["OK"])))
        .required("code")
        .property("description", string("Always empty").max_length(Some(0)))
        .required("description")
        .property("message", string("Always empty").max_length(Some(0)))
        .required("message")
        .examples(json(crm_auth_core::Status::ok()))
}

fn error_status() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some("The status of a failed response"))
        .property(
            "code",
            string("What went wrong; each code has one HTTP status")
                .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str()))),
        )
        .required("code")
        .property(
            "description",
            string("What was wrong, e.g. the offending field; may be empty"),
        )
        .required("description")
        .property("message", string("A sentence fit to show an end user"))
        .required("message")
        .examples(error_example(ErrorCode::InvalidRequest).and_then(|v| v.get("status").cloned()))
}

fn empty() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some("An empty object"))
        .max_properties(Some(0))
        .examples(json(Empty {}))
}

fn password_request() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some("A password login; unknown fields are ignored"))
        .property(
            "username",
            string("Matched case-insensitively within the organisation")
                .min_length(Some(1))
                .max_length(Some(MAX_NAME_CHARS)),
        )
        .required("username")
        .property(
            "password",
            string(&format!("In clear; at most {MAX_PASSWORD_BYTES} bytes of UTF-8")).min_length(Some(1)),
        )
        .required("password")
        .property(
            "organisation",
            string("The organisation name, matched case-insensitively")
                .min_length(Some(1))
                .max_length(Some(MAX_NAME_CHARS)),
        )
        .required("organisation")
        .property(
            "unit",
            nullable_string(
                "A unit id, else name, else code (name and code case-insensitively); absent, `null` or \
                 `\"\"` means the user's default unit",
            )
            .max_length(Some(MAX_NAME_CHARS)),
        )
        .examples(password_request_example())
}

fn key_request() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some(
            "The optional body of a Web API key login; unknown fields are ignored",
        ))
        .property(
            "unit",
            nullable_string(
                "A unit id, else name, else code; absent, `null` or `\"\"` means the user's default unit \
                 (GET: the `unit` query parameter)",
            )
            .max_length(Some(MAX_NAME_CHARS)),
        )
        .examples(json(crm_auth_core::ApiKeyTokenRequest {
            unit: Some("HQ".into()),
        }))
}

fn token_request() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some(
            "The optional body of refresh, release and validate, for clients that do not send the token in \
             `Authorization: Bearer`",
        ))
        .property(
            "token",
            nullable_string("The compact JWT")
                .max_length(Some(MAX_TOKEN_BYTES))
                .pattern(Some(TOKEN_PATTERN)),
        )
        .examples(json(serde_json::json!({ "token": example_token() })))
}

fn token_response() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some("A token"))
        .property(
            "token",
            string(
                "A compact JWT, HS256, header `{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":...}`, claims \
                 `jti` (session id), `usr`, `org`, `oun`, `iat`, `exp`, `iss`, `gen`",
            ),
        )
        .required("token")
        .examples(json(TokenResponse {
            token: example_token(),
        }))
}

fn session_info() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some("A live session"))
        .property(
            "id",
            string("The session id, the tokens' `jti`: 32 upper-case hex digits")
                .pattern(Some("^[0-9A-F]{32}$")),
        )
        .required("id")
        .property("username", string("The username as stored"))
        .required("username")
        .property("organisation", string("The organisation name as stored"))
        .required("organisation")
        .property("unit", string("The name of the unit the session is logged into"))
        .required("unit")
        .property(
            "method",
            string("How the session was authenticated").enum_values(Some([
                AuthMethod::Password.as_str(),
                AuthMethod::WebApiKey.as_str(),
            ])),
        )
        .required("method")
        .property(
            "issued_at",
            unix_seconds("Issue time of the presented token, unix seconds"),
        )
        .required("issued_at")
        .property(
            "expires_at",
            unix_seconds("Expiry time of the presented token, unix seconds"),
        )
        .required("expires_at")
        .examples(json(example_session()))
}

fn validate_response() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some("The token's session"))
        .property("session", Ref::from_schema_name("SessionInfo"))
        .required("session")
        .examples(json(ValidateResponse {
            session: example_session(),
        }))
}

fn health_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .description(Some("A health answer"))
        .property(
            "status",
            string("`live` or `ready`").enum_values(Some(["live", "ready"])),
        )
        .required("status")
        .examples(json(Health { status: "live" }))
}

// ---------------------------------------------------------------------------------------------------------
// Examples, made from the wire types themselves

fn json(value: impl Serialize) -> Option<Value> {
    serde_json::to_value(value).ok()
}

/// A token really issued for the example session, under an example key.
fn example_token() -> String {
    let claims = Claims {
        jti: EXAMPLE_ID.to_owned(),
        usr: "admin".to_owned(),
        org: "demo".to_owned(),
        oun: "HQ".to_owned(),
        iat: EXAMPLE_IAT,
        exp: EXAMPLE_IAT + EXAMPLE_TTL,
        iss: Some("crm-auth".to_owned()),
        r#gen: 0,
    };
    SigningKey::new("example", b"an example secret, 32 bytes or more".to_vec())
        .and_then(|key| Keyring::new(vec![key]))
        .map(|keyring| issue(&keyring, &claims, DateFormat::Numeric))
        .unwrap_or_default()
}

fn example_session() -> SessionInfo {
    SessionInfo {
        id: EXAMPLE_ID.to_owned(),
        username: "admin".to_owned(),
        organisation: "demo".to_owned(),
        unit: "HQ".to_owned(),
        method: AuthMethod::Password,
        issued_at: EXAMPLE_IAT,
        expires_at: EXAMPLE_IAT + EXAMPLE_TTL,
    }
}

fn password_request_example() -> Option<Value> {
    json(crm_auth_core::PasswordTokenRequest {
        username: "admin".into(),
        password: "correct horse battery staple".into(),
        organisation: "demo".into(),
        unit: Some("HQ".into()),
    })
}

fn token_envelope_example() -> Option<Value> {
    json(Envelope::ok(TokenResponse {
        token: example_token(),
    }))
}

fn validate_envelope_example() -> Option<Value> {
    json(Envelope::ok(ValidateResponse {
        session: example_session(),
    }))
}

/// The envelope the server answers with for `code`: the code's end-user message and a typical description.
fn error_example(code: ErrorCode) -> Option<Value> {
    let description = match code {
        ErrorCode::InvalidRequest => "username is missing".to_owned(),
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
    use super::*;

    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    const BASE: &str = "/crmapi/rest/v2";

    /// Resolves a `#/components/schemas/NAME` reference.
    fn resolve<'a>(doc: &'a OpenApi, schema: &'a RefOr<Schema>) -> Option<&'a Schema> {
        match schema {
            RefOr::T(schema) => Some(schema),
            RefOr::Ref(r) => {
                let name = r.ref_location.strip_prefix("#/components/schemas/")?;
                match doc.components.as_ref()?.schemas.get(name)? {
                    RefOr::T(schema) => Some(schema),
                    RefOr::Ref(_) => None,
                }
            }
        }
    }

    /// Checks `value` against `schema`, as far as this document uses JSON Schema (types, required and known
    /// properties, enums, lengths); returns what does not fit.
    fn check_example(doc: &OpenApi, schema: &RefOr<Schema>, value: &Value, at: &str) -> Vec<String> {
        let Some(Schema::Object(object)) = resolve(doc, schema) else {
            return vec![format!("{at}: unresolved schema")];
        };
        let mut problems = Vec::new();
        let types: Vec<&Type> = match &object.schema_type {
            SchemaType::Type(t) => vec![t],
            SchemaType::Array(ts) => ts.iter().collect(),
            SchemaType::AnyValue => Vec::new(),
        };
        let type_ok = types.is_empty()
            || types.iter().any(|t| match t {
                Type::Object => value.is_object(),
                Type::String => value.is_string(),
                Type::Integer => value.is_i64() || value.is_u64(),
                Type::Number => value.is_number(),
                Type::Boolean => value.is_boolean(),
                Type::Array => value.is_array(),
                Type::Null => value.is_null(),
            });
        if !type_ok {
            problems.push(format!("{at}: {value} is not of the schema's type"));
        }
        if let Some(allowed) = &object.enum_values
            && !allowed.contains(value)
        {
            problems.push(format!("{at}: {value} is not one of the schema's values"));
        }
        if let Some(text) = value.as_str() {
            let chars = text.chars().count();
            if object.max_length.is_some_and(|max| chars > max)
                || object.min_length.is_some_and(|min| chars < min)
            {
                problems.push(format!("{at}: length {chars} is out of the schema's range"));
            }
        }
        if let Some(map) = value.as_object() {
            for name in &object.required {
                if !map.contains_key(name) {
                    problems.push(format!("{at}: required `{name}` is missing"));
                }
            }
            if object.max_properties.is_some_and(|max| map.len() > max) {
                problems.push(format!("{at}: too many properties"));
            }
            for (name, member) in map {
                match object.properties.get(name) {
                    Some(property) => {
                        problems.extend(check_example(doc, property, member, &format!("{at}.{name}")))
                    }
                    None => problems.push(format!("{at}: `{name}` is not in the schema")),
                }
            }
        }
        problems
    }

    fn doc() -> OpenApi {
        document(BASE)
    }

    fn schema_ref(name: &str) -> RefOr<Schema> {
        RefOr::Ref(Ref::from_schema_name(name))
    }

    /// A schema written by hand could drift from the serialised wire types; the examples are those types.
    #[test]
    fn every_schema_example_fits_its_schema() {
        let doc = doc();
        let components = doc
            .components
            .as_ref()
            .map(|c| c.schemas.clone())
            .unwrap_or_default();
        assert!(components.len() >= 15, "{}", components.len());
        for (name, schema) in &components {
            let Some(Schema::Object(object)) = resolve(&doc, schema) else {
                panic!("{name} is not an object")
            };
            let Some(example) = object.examples.first() else {
                panic!("{name} has no example")
            };
            let problems = check_example(&doc, &schema_ref(name), example, name);
            assert!(problems.is_empty(), "{problems:?}");
        }
    }

    /// Error examples must carry the code their response's HTTP status belongs to, and fit `ErrorEnvelope`.
    #[test]
    fn error_answers_match_their_status() -> anyhow::Result<()> {
        let doc = doc();
        let value = serde_json::to_value(&doc)?;
        let mut seen = std::collections::HashSet::new();
        for (path, item) in value["paths"].as_object().into_iter().flatten() {
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
                        let at = format!("{method} {path} {status} {code}");
                        let problems =
                            check_example(&doc, &schema_ref("ErrorEnvelope"), &example["value"], &at);
                        assert!(problems.is_empty(), "{problems:?}");
                        seen.insert(parsed);
                    }
                }
            }
        }
        // Every code but the two answered for paths and methods that do not exist shows up somewhere.
        for code in ErrorCode::ALL {
            if !matches!(code, ErrorCode::NotFound | ErrorCode::MethodNotAllowed) {
                assert!(seen.contains(&code), "{code} is documented nowhere");
            }
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
    }

    #[test]
    fn example_token_is_a_real_token() {
        let token = example_token();
        let claims = crm_auth_core::decode_unverified(&token);
        assert_eq!(claims.map(|c| c.jti), Ok(EXAMPLE_ID.to_owned()));
    }

    #[test]
    fn wrong_examples_are_caught() {
        let doc = doc();
        let bad = serde_json::json!({"data": {"token": 1}, "status": {"code": "NOPE"}});
        let problems = check_example(&doc, &schema_ref("TokenEnvelope"), &bad, "x");
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
