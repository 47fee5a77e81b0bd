use std::future::Future;

use crm_auth_client::{Error, Session, Token};

/// Sends a request with the session's token; when the service says the session is over (an operator
/// revoked it, the user was disabled), sends it once more with a new session's token.
pub async fn send_with<T, F, Fut>(session: &Session, send: F) -> Result<T, Error>
where
    F: Fn(Token) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    match send(session.token().await?).await {
        Err(err) if err.is_session_over() => {
            // Without this the session would hand out the revoked token until its next refresh.
            session.invalidate().await;
            send(session.token().await?).await
        }
        answer => answer,
    }
}
