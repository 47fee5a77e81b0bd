//! What the examples share: where the server is.

/// The server's URL: the first argument, else `CRM_AUTH_URL`, else the local default.
pub fn server_url(args: &mut impl Iterator<Item = String>) -> String {
    args.next()
        .or_else(|| std::env::var("CRM_AUTH_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
}
