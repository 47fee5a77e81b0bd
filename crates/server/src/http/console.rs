//! The admin console at `/admin/`: a page and its CSS and JavaScript modules, embedded in the binary, for a
//! browser. It is not part of the API (it is not in the OpenAPI document); every change it makes goes
//! through `/admin/v1` and the token endpoints like any other client's.
//!
//! Assets are served at names carrying a hash of their content (`app.0123456789abcdef.js`) and cached for a
//! year; the page, which names them, is never cached without asking again. The hashes are computed once, on
//! first use: each file's references to the files before it in `SOURCES` are rewritten to their hashed
//! names first, so a change in a module changes the name of every module that imports it.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, web};
use crm_auth_core::routes;

use crate::error::ApiError;
use crate::http::method_not_allowed;
use crate::state::AppState;

/// The console's policy: scripts, styles and connections from this origin only, no inline script or style, no
/// framing, no plugins, forms posting here only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

/// How long a hashed asset may be cached: a year, and never revalidated (its name changes with its content).
pub const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// Where the hashed assets are served (the prefix of [`routes::CONSOLE_ASSET`]).
const ASSET_PREFIX: &str = "/admin/assets/";

/// One file of the console as written in `crates/server/console/`.
struct Source {
    name: &'static str,
    content_type: &'static str,
    text: &'static str,
}

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// One file of `crates/server/console/`, named once for both its name and its embedded text.
macro_rules! source {
    ($name:literal, $content_type:expr) => {
        Source {
            name: $name,
            content_type: $content_type,
            text: include_str!(concat!("../../console/", $name)),
        }
    };
}

/// The console's files, each after every file it refers to (its references are rewritten to hashed names
/// that must be known by then).
const SOURCES: [Source; 10] = [
    source!("console.css", CSS),
    source!("api.js", JS),
    source!("ui.js", JS),
    source!("organisations.js", JS),
    source!("units.js", JS),
    source!("users.js", JS),
    source!("keys.js", JS),
    source!("sessions.js", JS),
    source!("audit.js", JS),
    source!("app.js", JS),
];

/// The page, with `{{name}}` where an asset's URL goes and `{{api_prefix}}` where the base path goes.
const PAGE: &str = include_str!("../../console/index.html");

/// An asset as served.
#[derive(Debug)]
pub struct Asset {
    /// The name as written (`app.js`).
    pub name: &'static str,
    /// The name it is served at (`app.0123456789abcdef.js`).
    pub hashed: String,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its content, references rewritten.
    pub body: String,
}

/// Every asset, hashed once per process.
static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(hash_assets);

/// The assets with their references rewritten and their hashed names, in [`SOURCES`]' order.
fn hash_assets() -> Vec<Asset> {
    let mut assets: Vec<Asset> = Vec::with_capacity(SOURCES.len());
    for source in &SOURCES {
        let mut body = source.text.to_owned();
        for earlier in &assets {
            for quote in ['\'', '"'] {
                body = body.replace(
                    &format!("{quote}./{}{quote}", earlier.name),
                    &format!("{quote}./{}{quote}", earlier.hashed),
                );
            }
        }
        let hashed = hashed_name(source.name, body.as_bytes());
        assets.push(Asset {
            name: source.name,
            hashed,
            content_type: source.content_type,
            body,
        });
    }
    assets
}

/// `name` with the first 16 hex digits of its content's SHA-256 before its extension.
fn hashed_name(name: &str, body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    match name.rsplit_once('.') {
        Some((stem, extension)) => format!("{stem}.{hex}.{extension}"),
        None => format!("{name}.{hex}"),
    }
}

/// The served assets (for tests and tools that check them).
pub fn assets() -> &'static [Asset] {
    &ASSETS
}

/// The page for a server with base path `base_path`, naming the hashed assets.
pub fn page(base_path: &str) -> String {
    let api_prefix = if base_path == "/" { "" } else { base_path };
    let mut page = PAGE.replace("{{api_prefix}}", &escape_attribute(api_prefix));
    for asset in assets() {
        page = page.replace(
            &format!("{{{{{}}}}}", asset.name),
            &format!("{ASSET_PREFIX}{}", asset.hashed),
        );
    }
    page
}

/// `text` fit for a double-quoted HTML attribute.
fn escape_attribute(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The page as this server serves it, built once at start-up.
#[derive(Debug)]
struct Page(String);

/// Registers the console's routes at the root; `/admin/v1` (the API) is routed by its own resources, which
/// none of these match.
pub fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    let resource = |path: &str| web::resource(path.to_owned()).default_service(web::to(method_not_allowed));
    cfg.app_data(web::Data::new(Page(page(&state.settings.http.base_path))))
        .service(resource(routes::CONSOLE_ROOT).route(web::get().to(redirect_to_console)))
        .service(resource(routes::CONSOLE).route(web::get().to(get_console)))
        .service(resource(routes::CONSOLE_ASSET).route(web::get().to(get_console_asset)));
}

/// Every console answer's headers: the policy, no framing, no sniffing, no referrer.
fn secured(mut builder: HttpResponseBuilder) -> HttpResponseBuilder {
    builder
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .insert_header((header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")));
    builder
}

/// `/admin` → `/admin/`, where the page's relative references resolve.
async fn redirect_to_console() -> HttpResponse {
    secured(HttpResponse::PermanentRedirect())
        .insert_header((header::LOCATION, routes::CONSOLE))
        .finish()
}

/// The page.
async fn get_console(page: web::Data<Page>) -> HttpResponse {
    secured(HttpResponse::Ok())
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(page.0.clone())
}

/// An asset by its hashed name; any other name is `NOT_FOUND`, like any unknown path.
async fn get_console_asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let asset = assets()
        .iter()
        .find(|asset| asset.hashed == *name)
        .ok_or(ApiError::NotFound)?;
    Ok(secured(HttpResponse::Ok())
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .insert_header((header::CACHE_CONTROL, ASSET_CACHE_CONTROL))
        .body(asset.body.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reference from one console file to another names the hashed file, so that no browser asks for
    /// a name the server does not serve (or gets a stale module from its cache).
    #[test]
    fn every_reference_is_rewritten_to_a_hashed_name() {
        let page = page("/crmapi/rest/v2");
        for asset in assets() {
            for other in assets() {
                for quote in ['\'', '"'] {
                    let plain = format!("{quote}./{}{quote}", other.name);
                    assert!(!asset.body.contains(&plain), "{} refers to {plain}", asset.name);
                }
            }
            assert!(!page.contains(&format!("{{{{{}}}}}", asset.name)));
        }
        assert!(page.contains(&format!("{ASSET_PREFIX}{}", assets()[0].hashed)));
        assert!(!page.contains("{{"), "a placeholder is left in the page");
    }

    /// A change in a module changes the hash of every module that imports it.
    #[test]
    fn a_name_follows_the_content() {
        assert_ne!(hashed_name("a.js", b"one"), hashed_name("a.js", b"two"));
        assert_eq!(hashed_name("a.js", b"one"), hashed_name("a.js", b"one"));
        let hashed = hashed_name("app.js", b"x");
        assert!(
            hashed.starts_with("app.") && hashed.ends_with(".js") && hashed.len() == "app..js".len() + 16
        );
    }

    /// The base path goes into an attribute; a configured path cannot break out of it.
    #[test]
    fn the_base_path_is_escaped() {
        assert!(page("/a\"><script>").contains("/a&quot;&gt;&lt;script&gt;"));
        assert!(page("/").contains("content=\"\""));
    }
}
