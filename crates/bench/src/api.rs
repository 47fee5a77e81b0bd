//! What the tools send to the server and read back: the paths under the default base path, Basic and Bearer
//! credentials, the password login body and the token of an answer. The paths are core's `routes`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crm_auth_core::routes::DEFAULT_BASE_PATH;

/// One of core's `routes` under the default base path, which the servers run with.
pub fn path(route: &str) -> String {
    format!("{DEFAULT_BASE_PATH}{route}")
}

/// `Basic base64(KEY:)`: a Web API key as the key login takes it.
pub fn basic(key: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{key}:")))
}

/// `Bearer TOKEN`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The JSON body of a password login.
pub fn password_login(username: &str, password: &str, organisation: &str) -> String {
    serde_json::json!({
        "username": username,
        "password": password,
        "organisation": organisation,
    })
    .to_string()
}

/// The `token` of a `{"data":{"token":"..."}}` answer.
pub fn token_of(body: &str) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_str(body).ok()?;
    answer.pointer("/data/token")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    //! The token is what every login, refresh and load script hangs on.

    use super::*;

    /// The token is found inside the envelope, and nothing is found when there is none.
    #[test]
    fn finds_the_token() {
        let body = r#"{"data":{"token":"a.b.c"},"status":{"code":"OK","description":"","message":""}}"#;
        assert_eq!(token_of(body).as_deref(), Some("a.b.c"));
        assert_eq!(token_of(r#"{"data":{}}"#), None);
        assert_eq!(token_of("not json"), None);
    }

    /// Credentials are encoded as the server reads them.
    #[test]
    fn encodes_credentials() {
        assert_eq!(basic("foob"), "Basic Zm9vYjo=");
        assert_eq!(
            password_login("a\"b", "p\\w", "demo"),
            r#"{"organisation":"demo","password":"p\\w","username":"a\"b"}"#
        );
    }
}
