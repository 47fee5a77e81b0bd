//! `/health/live` and `/health/ready` at the root.

use actix_web::{HttpResponse, web};
use crm_auth_core::{Envelope, routes};
use diesel::r2d2::R2D2Connection as _;
use serde::Serialize;

use crate::error::ApiError;
use crate::http::method_not_allowed;
use crate::state::AppState;

/// Health answers' `data`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `live` or `ready`.
    pub status: &'static str,
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
pub async fn get_live() -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok(Health { status: "live" }))
}

/// The process answers and the database does too.
pub async fn get_ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    web::block(move || -> Result<(), ApiError> {
        let mut conn = state.conn()?;
        conn.ping().map_err(|e| ApiError::Unavailable(e.to_string()))
    })
    .await??;
    Ok(HttpResponse::Ok().json(Envelope::ok(Health { status: "ready" })))
}
