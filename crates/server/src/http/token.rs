//! The authentication endpoints under `http.base_path`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use crm_auth_core::routes;
use crm_auth_core::{
    ApiKeyTokenRequest, Empty, Envelope, PasswordTokenRequest, TokenResponse, ValidateResponse,
    parse_basic_authorization,
};

use crate::error::ApiError;
use crate::http::method_not_allowed;
use crate::http::request::{self, client_addr, read_body};
use crate::service::login::{self, PasswordLogin};
use crate::service::session;
use crate::state::AppState;

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
    let now = state.clock.now_precise();
    state
        .rate_limiter
        .check(client, now)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    Ok(client)
}

fn token_response(token: String) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok(TokenResponse { token }))
}

/// `POST authentication/token`: username + password + organisation (+ unit).
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

/// `POST` / `GET authentication/web_api_key/token`: the key as the Basic user name.
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
pub async fn validate_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = presented_token(&req, payload, &state).await?;
    let session = session::validate(&state, &token).await?;
    Ok(HttpResponse::Ok().json(Envelope::ok(ValidateResponse { session })))
}
