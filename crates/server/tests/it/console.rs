//! The admin console at `/admin/`: its headers and caching over plain HTTP.

use crm_auth_server::http::console::{ASSET_CACHE_CONTROL, CONTENT_SECURITY_POLICY, assets};
use serde_json::Value;

use crate::common::{Backend, TestApp, header};

backend_tests!(the_console_is_served_with_its_security_headers_and_hashed_assets);

/// The page and its assets carry the policy and the caching the contract asks for; names other than the hashed
/// ones are unknown paths; the console does not shadow the API or enter the OpenAPI document.
async fn the_console_is_served_with_its_security_headers_and_hashed_assets(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let secured = |res: &reqwest::Response| {
        assert_eq!(
            header(res, "content-security-policy").as_deref(),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert_eq!(header(res, "x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(header(res, "x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(header(res, "referrer-policy").as_deref(), Some("no-referrer"));
    };
    let policy: Vec<&str> = CONTENT_SECURITY_POLICY.split(';').map(str::trim).collect();
    for directive in [
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "default-src 'self'",
    ] {
        assert!(
            policy.contains(&directive),
            "{directive} missing from {CONTENT_SECURITY_POLICY}"
        );
    }
    assert!(
        !CONTENT_SECURITY_POLICY.contains("unsafe"),
        "{CONTENT_SECURITY_POLICY}"
    );

    let res = http.get(format!("{}/admin", app.url)).send().await?;
    assert_eq!(res.status().as_u16(), 308);
    assert_eq!(header(&res, "location").as_deref(), Some("/admin/"));
    secured(&res);

    let res = http.get(format!("{}/admin/", app.url)).send().await?;
    assert_eq!(res.status().as_u16(), 200);
    secured(&res);
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&res, "cache-control").as_deref(), Some("no-cache"));
    let page = res.text().await?;
    // No inline script: every <script> names a file of this origin, and no element carries a handler.
    let mut scripts = 0;
    for tag in page.split("<script").skip(1) {
        scripts += 1;
        let (open, rest) = tag.split_once('>').unwrap_or((tag, ""));
        assert!(
            open.contains("src=\"/admin/assets/"),
            "a script without a src: <script{open}>"
        );
        assert!(
            rest.starts_with("</script>"),
            "a script with a body: <script{tag}"
        );
    }
    assert!(scripts > 0, "the page loads no script");
    for attribute in [
        "onclick=",
        "onload=",
        "onsubmit=",
        "style=",
        "javascript:",
        "http://",
        "https://",
    ] {
        assert!(!page.contains(attribute), "the page holds {attribute}");
    }
    assert!(
        page.contains("content=\"/crmapi/rest/v2\""),
        "the page does not name the base path"
    );

    // Every asset the page names is served at its hashed name, cached for good; the hash changes with the content.
    let mut named = 0;
    for asset in assets() {
        let path = format!("/admin/assets/{}", asset.hashed);
        if page.contains(&path) {
            named += 1;
        }
        let res = http.get(format!("{}{path}", app.url)).send().await?;
        assert_eq!(res.status().as_u16(), 200, "{path}");
        secured(&res);
        assert_eq!(
            header(&res, "cache-control").as_deref(),
            Some(ASSET_CACHE_CONTROL),
            "{path}"
        );
        assert_eq!(
            header(&res, "content-type").as_deref(),
            Some(asset.content_type),
            "{path}"
        );
        let body = res.bytes().await?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &body);
        let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            asset.hashed.contains(&hex),
            "{} is not named by its content's hash",
            asset.hashed
        );
    }
    assert!(named >= 2, "the page names {named} assets");

    // Unknown files, unhashed names and other methods answer like any unknown path or method.
    for path in [
        "/admin/assets/app.js".to_owned(),
        "/admin/assets/nothing.0123456789abcdef.js".to_owned(),
        "/admin/index.html".to_owned(),
        "/admin/assets/".to_owned(),
    ] {
        let res = http.get(format!("{}{path}", app.url)).send().await?;
        assert_eq!(res.status().as_u16(), 404, "{path}");
        let body: Value = res.json().await?;
        assert_eq!(body["status"]["code"], "NOT_FOUND", "{path}");
    }
    let res = http.post(format!("{}/admin/", app.url)).send().await?;
    assert_eq!(res.status().as_u16(), 405);
    let body: Value = res.json().await?;
    assert_eq!(body["status"]["code"], "METHOD_NOT_ALLOWED");

    // The API under /admin/v1 is untouched: no token is still the API's answer, not the console's.
    let res = http
        .get(format!("{}/admin/v1/organisations", app.url))
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 401);
    assert!(header(&res, "content-security-policy").is_none());
    let res = http.get(format!("{}/admin/v1/nothing", app.url)).send().await?;
    assert_eq!(res.status().as_u16(), 404);

    // The console is not API: the OpenAPI document has no path of it.
    let document: Value = http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await?
        .json()
        .await?;
    let paths = document["paths"]
        .as_object()
        .map(|p| p.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(!paths.is_empty());
    for path in &paths {
        assert!(
            path.starts_with("/admin/v1") || !path.starts_with("/admin"),
            "{path} in the OpenAPI document"
        );
    }
    Ok(())
}
