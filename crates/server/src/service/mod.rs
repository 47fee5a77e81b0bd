//! What the endpoints and commands do, apart from HTTP: logins, sessions, lockout, administration, retention. Blocking functions take `&mut conn`
//! first and `now` as a parameter; the async ones move blocking work off the async workers.

pub mod admin;
pub mod import;
pub mod lockout;
pub mod login;
pub mod retention;
pub mod session;

use crm_auth_core::{Claims, issue};

use crate::db::session::Session;
use crate::settings::UnitClaim;
use crate::state::AppState;

/// The token a session's row describes: its newest generation. HS256 and EdDSA signing is deterministic, so
/// every caller that asks for the same generation gets the same string; ES256 signatures are randomised, so
/// there the claims are the same and the string differs.
pub fn token_for(state: &AppState, session: &Session) -> String {
    let claims = Claims::new(
        session.id.as_str(),
        session.username.as_str(),
        session.organisation_name.as_str(),
        unit_claim(state.settings.token.unit_claim, session),
        session.rotated_at,
        session.expires_at,
    )
    .issued_by(state.settings.token.issuer.as_str())
    .at_generation(u64::try_from(session.generation).unwrap_or(0));
    issue(
        &state.keys.current().keyring,
        &claims,
        state.settings.token.date_format,
    )
}

/// What the token's `oun` holds for `token.unit_claim`. A unit without a code is named by its name: a claim
/// that is always there and names the unit beats an empty string that a CRM.COM client would show.
fn unit_claim(claim: UnitClaim, session: &Session) -> &str {
    match claim {
        UnitClaim::Name => &session.unit_name,
        UnitClaim::Id => &session.unit_id,
        UnitClaim::Code => session.unit_code.as_deref().unwrap_or(&session.unit_name),
    }
}
