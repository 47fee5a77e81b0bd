//! How a client logs in: a username and password in an organisation, or a Web API key, either with a unit.

use std::fmt;

/// What a login presents: [`Credentials::password`] or [`Credentials::api_key`], each optionally with
/// [`Credentials::unit`]. [`Client::token`](crate::Client::token) logs in with them once;
/// [`Session::new`](crate::Session::new) keeps logging in with them.
///
/// `Debug` shows who logs in, never the password or the key.
///
/// ```
/// use crm_auth_client::Credentials;
///
/// let person = Credentials::password("alice", "correct horse battery staple", "Acme").unit("HQ");
/// let service = Credentials::api_key("EE63A82C4FEBE02FF34E90DD1EBA5ABE");
/// assert_eq!(
///     format!("{person:?}"),
///     r#"Password { username: "alice", password: ***, organisation: "Acme", unit: Some("HQ") }"#
/// );
/// assert_eq!(format!("{service:?}"), "ApiKey { key: ***, unit: None }");
/// ```
#[derive(Clone)]
pub struct Credentials {
    pub(crate) secret: Secret,
    /// A unit id, name or code; `None`: the user's default unit.
    pub(crate) unit: Option<String>,
}

/// The part of [`Credentials`] that proves who logs in.
#[derive(Clone)]
pub(crate) enum Secret {
    Password {
        username: String,
        password: String,
        organisation: String,
    },
    ApiKey {
        key: String,
    },
}

impl Credentials {
    /// A username and its password in an organisation (`POST {base}/authentication/token`).
    pub fn password(
        username: impl Into<String>,
        password: impl Into<String>,
        organisation: impl Into<String>,
    ) -> Credentials {
        Credentials {
            secret: Secret::Password {
                username: username.into(),
                password: password.into(),
                organisation: organisation.into(),
            },
            unit: None,
        }
    }

    /// A Web API key, sent as the HTTP Basic user name (`POST {base}/authentication/web_api_key/token`).
    pub fn api_key(key: impl Into<String>) -> Credentials {
        Credentials {
            secret: Secret::ApiKey { key: key.into() },
            unit: None,
        }
    }

    /// Logs into this unit (an id, name or code) instead of the user's default unit.
    #[must_use]
    pub fn unit(mut self, unit: impl Into<String>) -> Credentials {
        self.unit = Some(unit.into());
        self
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.secret {
            Secret::Password {
                username,
                organisation,
                ..
            } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &format_args!("***"))
                .field("organisation", organisation)
                .field("unit", &self.unit)
                .finish(),
            Secret::ApiKey { .. } => f
                .debug_struct("ApiKey")
                .field("key", &format_args!("***"))
                .field("unit", &self.unit)
                .finish(),
        }
    }
}
