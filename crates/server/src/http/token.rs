//! The authentication endpoints under `http.base_path`, each with its OpenAPI description beside it.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use crm_auth_core::routes;
use crm_auth_core::{
    ApiKeyTokenRequest, Empty, Envelope, PasswordTokenRequest, TokenRequest, TokenResponse, ValidateResponse,
    parse_basic_authorization,
};

use crate::error::ApiError;
use crate::http::method_not_allowed;
use crate::http::openapi::{self, TAG_AUTH};
use crate::http::request::{self, client_addr, read_body};
use crate::service::login::{self, PasswordLogin};
use crate::service::session;
use crate::state::AppState;

/// An operation's description for refresh, release and validate, which all find the token in the same places.
macro_rules! token_description {
    ($text:literal) => {
        concat!(
            $text,
            "\n\nThe token is read from `Authorization: Bearer <token>`, else the JSON body field `token`, else \
             the query parameter `token`."
        )
    };
}

/// Registers the token routes (relative to the base path).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path.to_owned()).default_service(web::to(method_not_allowed));
    cfg.service(resource(routes::PASSWORD_TOKEN).route(web::post().to(create_token)))
        .service(
            resource(routes::API_KEY_TOKEN)
                .route(web::post().to(create_key_token))
                .route(web::get().to(create_key_token)),
        )
        .service(resource(routes::REFRESH_TOKEN).route(web::post().to(refresh_token)))
        .service(resource(routes::RELEASE_TOKEN).route(web::post().to(release_token)))
        .service(
            resource(routes::VALIDATE_TOKEN)
                .route(web::get().to(validate_token))
                .route(web::post().to(validate_token)),
        );
}

fn rate_limit(req: &HttpRequest, state: &AppState) -> Result<std::net::IpAddr, ApiError> {
    let client = client_addr(req, state);
    state
        .rate_limiter
        .check(client)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    Ok(client)
}

fn token_response(token: String) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok(TokenResponse { token }))
}

/// `POST authentication/token`: username + password + organisation (+ unit).
#[utoipa::path(
    post,
    path = routes::PASSWORD_TOKEN,
    tag = TAG_AUTH,
    summary = "Get a token by username and password",
    description = "Opens a session for the user in the organisation, logged into the unit asked for or the \
        user's default unit. Failed password checks count per organisation + username and a successful login \
        resets the count; from the lockout threshold on, attempts are refused with `TOO_MANY_ATTEMPTS` and a \
        `Retry-After` header for a delay that doubles per failure. At most the threshold minus the failures \
        so far are checked at once (across all nodes), so many clients sharing one user take turns: a login \
        that finds no turn within `auth.lockout.max_wait_ms` is answered `UNAVAILABLE` with \
        `Retry-After: 1`, nothing checked or counted.",
    request_body(
        content = PasswordTokenRequest,
        description = "A JSON object; unknown fields are ignored.",
        example = openapi::password_request_example,
    ),
    responses((
        status = 200,
        description = "A token for the new session",
        body = Envelope<TokenResponse>,
        example = openapi::token_envelope_example,
    )),
)]
pub async fn create_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = rate_limit(&req, &state)?;
    let body = read_body(&req, payload, state.settings.http.max_body_bytes).await?;
    let PasswordTokenRequest {
        username,
        password,
        organisation,
        unit,
    } = PasswordTokenRequest::from_json(&body)?;
    let login = PasswordLogin {
        username,
        password,
        organisation,
        unit,
    };
    let token = login::login_with_password(&state, login, client).await?;
    Ok(token_response(token))
}

/// `POST` / `GET authentication/web_api_key/token`: the key as the Basic user name, the unit in the body
/// (read on either method) or else the query.
#[utoipa::path(
    method(post, get),
    path = routes::API_KEY_TOKEN,
    tag = TAG_AUTH,
    summary = "Get a token by Web API key",
    description = "The key is the HTTP Basic user name with an empty password (`base64(\"KEY:\")` or \
        `base64(\"KEY\")`, scheme in any letter case). The session belongs to the key's user in the key's \
        organisation, logged into the unit asked for (body, else query) or the user's default unit.",
    security(("web_api_key" = [])),
    params((
        "unit" = Option<String>,
        Query,
        description = "A unit id, name or code, when the body names none; absent or empty: the user's \
            default unit",
        max_length = 256,
        nullable = false,
    )),
    request_body(
        content = ApiKeyTokenRequest,
        description = openapi::OPTIONAL_BODY,
        example = openapi::key_request_example,
    ),
    responses((
        status = 200,
        description = "A token for the new session",
        body = Envelope<TokenResponse>,
        example = openapi::token_envelope_example,
    )),
)]
pub async fn create_key_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = rate_limit(&req, &state)?;
    let body = read_body(&req, payload, state.settings.http.max_body_bytes).await?;
    // The body's unit first; the query is read only when the body names none.
    let unit = match ApiKeyTokenRequest::from_json(&body)?.unit {
        Some(unit) => Some(unit),
        None => ApiKeyTokenRequest::from_query_unit(request::query_field(&req, "unit")?)?.unit,
    };
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic_authorization);
    let token = login::login_with_key(&state, key, unit, client).await?;
    Ok(token_response(token))
}

/// The token of a refresh, release or validate request, wherever the request carries it.
async fn presented_token(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<String, ApiError> {
    let body = read_body(req, payload, state.settings.http.max_body_bytes).await?;
    request::token(req, &body)
}

/// `POST authentication/token/refresh`.
#[utoipa::path(
    post,
    path = routes::REFRESH_TOKEN,
    tag = TAG_AUTH,
    summary = "Refresh a token",
    description = token_description!(
        "Returns the session's next token: same `jti`, `iat` now, `exp` at most the session's end. The \
        presented token may be past its `exp` by the refresh grace. Only the newest token of a session \
        refreshes; the one it replaced gets the newest back within the reuse interval, and any other \
        superseded token ends the session (`SESSION_ENDED` from then on for every token of it)."
    ),
    security(("bearer_token" = []), ()),
    params(openapi::TokenQuery),
    request_body(
        content = TokenRequest,
        description = openapi::OPTIONAL_BODY,
        example = openapi::token_request_example,
    ),
    responses((
        status = 200,
        description = "The session's next token",
        body = Envelope<TokenResponse>,
        example = openapi::token_envelope_example,
    )),
)]
pub async fn refresh_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = rate_limit(&req, &state)?;
    let token = presented_token(&req, payload, &state).await?;
    let token = session::refresh(&state, &token, client).await?;
    Ok(token_response(token))
}

/// `POST authentication/token/release`.
#[utoipa::path(
    post,
    path = routes::RELEASE_TOKEN,
    tag = TAG_AUTH,
    summary = "End the token's session (logout)",
    description = token_description!(
        "Idempotent: releasing an ended session is `OK`. A token past its `exp` can still be released; one \
        that does not verify is `INVALID_TOKEN`."
    ),
    security(("bearer_token" = []), ()),
    params(openapi::TokenQuery),
    request_body(
        content = TokenRequest,
        description = openapi::OPTIONAL_BODY,
        example = openapi::token_request_example,
    ),
    responses((
        status = 200,
        description = "The session has ended",
        body = Envelope<Empty>,
        example = openapi::empty_envelope_example,
    )),
)]
pub async fn release_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = client_addr(&req, &state);
    let token = presented_token(&req, payload, &state).await?;
    session::release(&state, &token, client).await?;
    Ok(HttpResponse::Ok().json(Envelope::ok(Empty {})))
}

/// `GET` / `POST authentication/token/validate`.
#[utoipa::path(
    method(get, post),
    path = routes::VALIDATE_TOKEN,
    tag = TAG_AUTH,
    summary = "Is this token's session live",
    description = token_description!(
        "For downstream services that must see logouts at once. Any unexpired token of a live session \
        validates, a superseded one included until its own `exp`."
    ),
    security(("bearer_token" = []), ()),
    params(openapi::TokenQuery),
    request_body(
        content = TokenRequest,
        description = openapi::OPTIONAL_BODY,
        example = openapi::token_request_example,
    ),
    responses((
        status = 200,
        description = "The token's live session",
        body = Envelope<ValidateResponse>,
        example = openapi::validate_envelope_example,
    )),
)]
pub async fn validate_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = presented_token(&req, payload, &state).await?;
    let session = session::validate(&state, &token).await?;
    Ok(HttpResponse::Ok().json(Envelope::ok(ValidateResponse { session })))
}
