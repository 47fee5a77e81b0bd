//! `GET /metrics`, `GET /openapi.json` and `GET /.well-known/jwks.json` at the root, for operators, tooling and
//! verifiers.

use actix_web::http::header::{CACHE_CONTROL, ContentType};
use actix_web::{HttpResponse, web};
use crm_auth_core::routes;
use utoipa::openapi::OpenApi;

use crate::error::ApiError;
use crate::http::method_not_allowed;
use crate::http::openapi::{self, TAG_OPS};
use crate::metrics;
use crate::state::AppState;

/// The OpenAPI document, built once for the configured base path.
pub struct ApiDocument(OpenApi);

impl std::fmt::Debug for ApiDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiDocument").finish_non_exhaustive()
    }
}

/// Registers the routes; the document is built here, at start-up, for `base_path`.
pub fn configure(cfg: &mut web::ServiceConfig, base_path: &str) {
    cfg.app_data(web::Data::new(ApiDocument(openapi::document(base_path))))
        .service(
            web::resource(routes::METRICS)
                .route(web::get().to(get_metrics))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource(routes::OPENAPI)
                .route(web::get().to(get_openapi))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource(routes::JWKS)
                .route(web::get().to(get_jwks))
                .default_service(web::to(method_not_allowed)),
        );
}

/// How long verifiers may cache the JWKS: a key is published this long before it signs (`not_before`).
pub const JWKS_MAX_AGE_SECONDS: u32 = 300;

/// The public keys of the EdDSA and ES256 signing keys in force, as a JWKS; never an HS256 secret.
#[utoipa::path(
    get,
    path = routes::JWKS,
    tag = TAG_OPS,
    summary = "Public signing keys (JWKS)",
    description = "Every EdDSA (`OKP`, `Ed25519`) and ES256 (`EC`, `P-256`) key the server verifies with, \
        those staged with `not_before` included, so that verifiers caching this document know a key before \
        its first token. HS256 secrets are never published: `{\"keys\": []}` when only HS256 keys are \
        configured. Not wrapped in the envelope; cacheable for 300 seconds.",
    responses((
        status = 200,
        description = "The key set",
        body = crm_auth_core::Jwks,
        headers(("Cache-Control" = String, description = "`public, max-age=300`")),
    )),
)]
pub async fn get_jwks(state: web::Data<AppState>) -> HttpResponse {
    let body = state.keys.current().jwks_json.clone();
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header((CACHE_CONTROL, format!("public, max-age={JWKS_MAX_AGE_SECONDS}")))
        .body(body)
}

/// Every metric in Prometheus' text format, the pool gauges read now.
#[utoipa::path(
    get,
    path = routes::METRICS,
    tag = TAG_OPS,
    summary = "Prometheus metrics",
    description = "The text exposition format 0.0.4. Every series is named `crm_auth_*`; the `route` label of \
        the HTTP series is the matched route pattern, or `unmatched`.",
    responses((
        status = 200,
        description = "The metrics",
        content_type = metrics::CONTENT_TYPE,
        body = String,
        example = "# HELP crm_auth_token_grants_total Token requests by login method and outcome\n\
            # TYPE crm_auth_token_grants_total counter\n\
            crm_auth_token_grants_total{method=\"password\",outcome=\"ok\"} 42\n",
    )),
)]
pub async fn get_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let body = state
        .metrics
        .render(state.store.pool())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().content_type(metrics::CONTENT_TYPE).body(body))
}

/// The OpenAPI document itself, not wrapped in the envelope.
#[utoipa::path(
    get,
    path = routes::OPENAPI,
    tag = TAG_OPS,
    summary = "This document",
    description = "The OpenAPI document of every endpoint, for the configured base path; not wrapped in the \
        envelope.",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
pub async fn get_openapi(document: web::Data<ApiDocument>) -> Result<HttpResponse, ApiError> {
    let body = serde_json::to_string(&document.0).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().content_type(ContentType::json()).body(body))
}
