//! `/health/live` and `/health/ready` at the root.

use actix_web::{HttpResponse, web};
use crm_auth_core::{Envelope, routes};
use diesel::r2d2::R2D2Connection as _;
use serde::Serialize;

use crate::error::ApiError;
use crate::http::method_not_allowed;
use crate::http::openapi::{self, TAG_OPS};
use crate::state::AppState;

/// Health answers' `data`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// What the process vouches for.
    pub status: HealthStatus,
}

/// `live`: the process answers; `ready`: its database does too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The process answers.
    Live,
    /// The process and its database answer.
    Ready,
}

/// Registers the health routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(routes::HEALTH_LIVE)
            .route(web::get().to(get_live))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource(routes::HEALTH_READY)
            .route(web::get().to(get_ready))
            .default_service(web::to(method_not_allowed)),
    );
}

/// The process answers.
#[utoipa::path(
    get,
    path = routes::HEALTH_LIVE,
    tag = TAG_OPS,
    summary = "Liveness",
    description = "The process answers.",
    responses((
        status = 200,
        description = "Live",
        body = Envelope<Health>,
        example = openapi::live_envelope_example,
    )),
)]
pub async fn get_live() -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok(Health {
        status: HealthStatus::Live,
    }))
}

/// The process answers, the database does too, and the server is not shutting down.
#[utoipa::path(
    get,
    path = routes::HEALTH_READY,
    tag = TAG_OPS,
    summary = "Readiness",
    description = "The process answers and the database does too; `UNAVAILABLE` when it does not, and from \
        the moment the server begins to shut down.",
    responses((
        status = 200,
        description = "Ready",
        body = Envelope<Health>,
        example = openapi::ready_envelope_example,
    )),
)]
pub async fn get_ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    let state = state.into_inner();
    web::block(move || -> Result<(), ApiError> {
        let mut conn = state.store.conn()?;
        conn.ping().map_err(|e| ApiError::Unavailable(e.to_string()))
    })
    .await??;
    Ok(HttpResponse::Ok().json(Envelope::ok(Health {
        status: HealthStatus::Ready,
    })))
}
