//! The operator surface: `/metrics` counts what happens, `/openapi.json` documents every endpoint (and the
//! committed copy is current), and the Docker files configure only settings that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::common::{Backend, ORG, TestApp, USER, header, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm_auth_server::settings::Settings;
use serde_json::{Value, json};

backend_tests!(metrics_count_what_happens, openapi_is_served_for_the_base_path);

/// One scrape: each series (name and labels, as exposed) and its value.
async fn scrape(app: &TestApp) -> anyhow::Result<BTreeMap<String, f64>> {
    let res = reqwest::get(format!("{}/metrics", app.url)).await?;
    assert_eq!(res.status().as_u16(), 200);
    let content_type = header(&res, "content-type");
    assert_eq!(content_type.as_deref(), Some("text/plain; version=0.0.4"));
    let text = res.text().await?;
    let mut series = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow::anyhow!("bad line {line:?}"))?;
        series.insert(name.to_owned(), value.parse::<f64>()?);
    }
    Ok(series)
}

/// A series' value; a missing series fails the test, since every outcome is exported from the start.
fn value(series: &BTreeMap<String, f64>, name: &str) -> f64 {
    match series.get(name) {
        Some(v) => *v,
        None => panic!("no series {name}; have {:?}", series.keys().collect::<Vec<_>>()),
    }
}

fn grants(method: &str, outcome: &str) -> String {
    format!("crm_auth_token_grants_total{{method=\"{method}\",outcome=\"{outcome}\"}}")
}

fn refreshes(outcome: &str) -> String {
    format!("crm_auth_refreshes_total{{outcome=\"{outcome}\"}}")
}

/// The status of a raw JSON POST.
async fn status_of_post(url: &str, bearer: Option<&str>, body: Value) -> anyhow::Result<u16> {
    Ok(post(url, bearer, body.to_string()).await?.status().as_u16())
}

async fn token_of(res: reqwest::Response) -> anyhow::Result<String> {
    let body: Value = res.json().await?;
    body["data"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token in {body}"))
}

async fn metrics_count_what_happens(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let http = reqwest::Client::new();
    let before = scrape(&app).await?;
    for outcome in ["ok", "invalid_credentials", "invalid_unit", "locked", "error"] {
        assert_eq!(value(&before, &grants("password", outcome)), 0.0);
        assert_eq!(value(&before, &grants("web_api_key", outcome)), 0.0);
    }

    // Logins: one good, one wrong password, one by key, one by key into a unit the user is not in.
    let token = app.login().await?.as_str().to_owned();
    let wrong = json!({"username": USER, "password": "wrong", "organisation": ORG});
    assert_eq!(
        status_of_post(&app.api("/authentication/token"), None, wrong).await?,
        401
    );
    let basic = format!("Basic {}", STANDARD.encode(format!("{}:", app.key)));
    let key_url = app.api("/authentication/web_api_key/token");
    assert_eq!(
        http.post(&key_url)
            .header("authorization", &basic)
            .send()
            .await?
            .status()
            .as_u16(),
        200
    );
    let other_unit = http
        .post(&key_url)
        .header("authorization", &basic)
        .json(&json!({"unit": "Other"}));
    assert_eq!(other_unit.send().await?.status().as_u16(), 403);

    // Five failures of one (unknown) user reach the lockout threshold; the sixth is refused unchecked.
    let mallory = json!({"username": "mallory", "password": "guess", "organisation": ORG});
    for _ in 0..5 {
        assert_eq!(
            status_of_post(&app.api("/authentication/token"), None, mallory.clone()).await?,
            401
        );
    }
    assert_eq!(
        status_of_post(&app.api("/authentication/token"), None, mallory).await?,
        429
    );

    // Refresh: a rotation, a retry within the reuse interval, then the superseded token again after it.
    let refresh_url = app.api("/authentication/token/refresh");
    let res = http.post(&refresh_url).bearer_auth(&token).send().await?;
    let newest = token_of(res).await?;
    assert_eq!(status_of_post(&refresh_url, Some(&token), json!({})).await?, 200);
    app.clock
        .advance(i64::try_from(app.state.settings.token.reuse_interval_seconds)? + 1);
    assert_eq!(status_of_post(&refresh_url, Some(&token), json!({})).await?, 401);
    assert_eq!(status_of_post(&refresh_url, Some(&newest), json!({})).await?, 401);
    assert_eq!(
        status_of_post(&refresh_url, Some("not.a.token"), json!({})).await?,
        401
    );
    assert_eq!(
        status_of_post(
            &app.api("/authentication/token/release"),
            Some(&newest),
            json!({})
        )
        .await?,
        200
    );
    assert_eq!(
        http.get(format!("{}/no/such/path/123", app.url))
            .send()
            .await?
            .status()
            .as_u16(),
        404
    );

    let after = scrape(&app).await?;
    let moved = |name: &str| value(&after, name) - before.get(name).copied().unwrap_or(0.0);
    assert_eq!(moved(&grants("password", "ok")), 1.0);
    assert_eq!(moved(&grants("password", "invalid_credentials")), 6.0);
    assert_eq!(moved(&grants("password", "locked")), 1.0);
    assert_eq!(moved(&grants("web_api_key", "ok")), 1.0);
    assert_eq!(moved(&grants("web_api_key", "invalid_unit")), 1.0);
    assert_eq!(moved("crm_auth_lockouts_total"), 1.0);
    assert_eq!(moved(&refreshes("rotated")), 1.0);
    assert_eq!(moved(&refreshes("reused")), 1.0);
    assert_eq!(moved(&refreshes("theft")), 1.0);
    assert_eq!(moved(&refreshes("ended")), 1.0);
    assert_eq!(moved(&refreshes("invalid")), 1.0);
    assert_eq!(moved("crm_auth_reuse_detections_total"), 1.0);
    assert_eq!(moved("crm_auth_releases_total"), 1.0);

    // Requests are labelled by route pattern; a path no route matches is `unmatched`, never itself.
    let base = &app.state.settings.http.base_path;
    let login_ok = format!(
        "crm_auth_http_requests_total{{method=\"POST\",route=\"{base}/authentication/token\",status=\"200\"}}"
    );
    assert_eq!(value(&after, &login_ok), 1.0);
    assert_eq!(
        value(
            &after,
            "crm_auth_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        1.0
    );
    assert!(after.keys().all(|k| !k.contains("/no/such/path")));
    assert!(
        value(
            &after,
            "crm_auth_http_request_duration_seconds_count{route=\"/metrics\"}"
        ) >= 1.0
    );

    // Hashing and the pool report too: one hash per password attempt that was checked.
    assert!(value(&after, "crm_auth_password_hash_wait_seconds_count") >= 7.0);
    assert_eq!(value(&after, "crm_auth_password_hashes_in_flight"), 0.0);
    assert!(value(&after, "crm_auth_db_pool_wait_seconds_count") >= 10.0);
    let pool = value(&after, "crm_auth_db_pool_connections{state=\"in_use\"}")
        + value(&after, "crm_auth_db_pool_connections{state=\"idle\"}");
    assert!(
        pool >= 1.0 && pool <= f64::from(app.state.settings.database.pool_size),
        "{pool}"
    );
    Ok(())
}

/// Every path of the contract, relative to the base path (API) or the root (ops), and its methods.
fn contract_paths(base: &str) -> Vec<(String, &'static [&'static str])> {
    let api: [(&str, &'static [&'static str]); 5] = [
        ("/authentication/token", &["post"]),
        ("/authentication/web_api_key/token", &["get", "post"]),
        ("/authentication/token/refresh", &["post"]),
        ("/authentication/token/release", &["post"]),
        ("/authentication/token/validate", &["get", "post"]),
    ];
    let ops: [(&str, &'static [&'static str]); 5] = [
        ("/health/live", &["get"]),
        ("/health/ready", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
        ("/.well-known/jwks.json", &["get"]),
    ];
    let admin: [(&str, &'static [&'static str]); 12] = [
        ("/admin/v1/organisations", &["get", "post"]),
        ("/admin/v1/organisations/{org}", &["get"]),
        ("/admin/v1/organisations/{org}/units", &["get", "post"]),
        ("/admin/v1/organisations/{org}/users", &["get", "post"]),
        (
            "/admin/v1/organisations/{org}/users/{username}",
            &["get", "patch"],
        ),
        (
            "/admin/v1/organisations/{org}/users/{username}/sessions",
            &["delete"],
        ),
        ("/admin/v1/organisations/{org}/keys", &["get", "post"]),
        ("/admin/v1/organisations/{org}/keys/{id}", &["delete"]),
        ("/admin/v1/organisations/{org}/sessions", &["get"]),
        ("/admin/v1/organisations/{org}/sessions/{id}", &["delete"]),
        ("/admin/v1/organisations/{org}/audit", &["get"]),
        ("/admin/v1/import", &["post"]),
    ];
    api.into_iter()
        .map(|(p, m)| (format!("{base}{p}"), m))
        .chain(ops.into_iter().chain(admin).map(|(p, m)| (p.to_owned(), m)))
        .collect()
}

async fn openapi_is_served_for_the_base_path(backend: Backend) -> anyhow::Result<()> {
    // A base path other than the default shows that the document follows the configuration.
    let app = TestApp::start_with(&backend, |s| s.http.base_path = "/auth/v9".into()).await?;
    let res = reqwest::get(format!("{}/openapi.json", app.url)).await?;
    assert_eq!(res.status().as_u16(), 200);
    let content_type = header(&res, "content-type");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let doc: Value = res.json().await?;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    // The raw document, not the envelope.
    assert!(doc.get("status").is_none());

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(m, _)| (path.clone(), m.clone()))
        })
        .collect();
    let mut expected = BTreeSet::new();
    for (path, methods) in contract_paths("/auth/v9") {
        for method in methods {
            expected.insert((path.clone(), (*method).to_owned()));
        }
    }
    assert_eq!(documented, expected);

    // Every documented operation is routed: none of them answers 404 or 405.
    let http = reqwest::Client::new();
    for (path, method) in &documented {
        let url = format!("{}{path}", app.url);
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
        let res = http.request(method.clone(), &url).send().await?;
        assert!(
            ![404, 405].contains(&res.status().as_u16()),
            "{method} {path}: {}",
            res.status()
        );
    }
    assert_eq!(
        http.post(format!("{}/openapi.json", app.url))
            .send()
            .await?
            .status()
            .as_u16(),
        405
    );
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> anyhow::Result<String> {
    let full = root().join(path);
    std::fs::read_to_string(&full).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", full.display()))
}

/// `cargo xtask codegen --check` in test form, so a stale document fails `cargo test` too.
#[test]
fn committed_openapi_is_what_the_code_generates() -> anyhow::Result<()> {
    let generated = crm_auth_server::http::openapi::to_json(&Settings::default().http.base_path)?;
    assert!(
        read("docs/openapi.json")? == generated,
        "docs/openapi.json is stale; run `cargo xtask codegen`"
    );
    Ok(())
}

/// The `${NAME}`, `${NAME:-default}` and `${NAME:?error}` references of a compose value.
fn references(text: &str) -> Vec<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(inner, _)| inner.split([':', '-', '?']).next().unwrap_or(inner).to_owned())
        .collect()
}

/// Replaces every `${...}` reference as compose would with a filled-in `.env`: by its default when it has one
/// (`${NAME:-default}`), else by a harmless value.
fn substitute(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                let inner = &rest[start + 2..start + end];
                let default = inner
                    .split_once(":-")
                    .or_else(|| inner.split_once('-'))
                    .map(|(_, d)| d);
                out.push_str(default.unwrap_or("dummy"));
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn compose() -> anyhow::Result<Value> {
    Ok(serde_norway::from_str(&read("docker-compose.yml")?)?)
}

/// The `environment` of a compose service as pairs (map or list form), references substituted.
fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    substitute(&v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
                )
            })
            .collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|item| item.split_once('='))
            .map(|(k, v)| (k.to_owned(), substitute(v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// An unknown `CRM_AUTH__*` key stops the server at start-up, so compose must set only real ones.
#[test]
fn compose_configures_only_real_settings() -> anyhow::Result<()> {
    let compose = compose()?;
    let services = &compose["services"];
    let server = &services["crm-auth"];
    let env = environment(server);
    let ours: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("CRM_AUTH"))
        .cloned()
        .collect();
    assert!(ours.iter().all(|(k, _)| k.starts_with("CRM_AUTH__")), "{ours:?}");
    assert!(ours.len() >= 3, "{ours:?}");
    let settings = Settings::load_from(None, ours)?;

    assert!(settings.database.url.expose().starts_with("postgres://"));
    assert!(
        settings.database.url.expose().contains("@postgres:5432/"),
        "the URL names the postgres service"
    );
    assert_eq!(settings.bind_addr()?.port(), 8080);
    assert!(
        settings.bind_addr()?.ip().is_unspecified(),
        "listens on every interface of the container"
    );
    assert_eq!(server["depends_on"]["postgres"]["condition"], "service_healthy");
    assert!(
        server["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p.as_str().is_some_and(|p| p.ends_with(":8080")))
    );
    assert_eq!(server["build"], ".");
    let data_dir = settings.data_dir.to_string_lossy().into_owned();
    let volumes: Vec<&str> = server["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        volumes.iter().any(|v| v.ends_with(&format!(":{data_dir}"))),
        "the data dir (signing key) is a volume"
    );

    let postgres = &services["postgres"];
    assert!(
        postgres["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("postgres:15"))
    );
    let check = postgres["healthcheck"]["test"].to_string();
    assert!(check.contains("pg_isready"), "{check}");
    Ok(())
}

/// A variable compose reads but `.env.sample` does not mention is one an operator cannot know to set.
#[test]
fn env_sample_lists_every_compose_variable() -> anyhow::Result<()> {
    let sample = read(".env.sample")?;
    let listed: BTreeSet<&str> = sample
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .collect();
    let used: BTreeSet<String> = references(&read("docker-compose.yml")?).into_iter().collect();
    assert!(!used.is_empty());
    for name in &used {
        assert!(
            listed.contains(name.as_str()),
            "{name} is read by docker-compose.yml but not in .env.sample"
        );
    }
    Ok(())
}

/// The image must build the package that exists and start the binary it produces.
#[test]
fn dockerfile_builds_and_runs_the_real_binary() -> anyhow::Result<()> {
    let dockerfile = read("Dockerfile")?;
    let manifest: toml::Value = toml::from_str(&read("crates/server/Cargo.toml")?)?;
    let package = manifest["package"]["name"].as_str().unwrap_or_default();
    let bins = manifest["bin"].as_array().cloned().unwrap_or_default();
    let binary = bins
        .first()
        .and_then(|b| b["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert_eq!((package, binary.as_str()), ("crm-auth-server", "crm-auth"));

    assert!(
        dockerfile.contains(&format!("cargo build --release --locked -p {package}")),
        "build command"
    );
    assert!(
        dockerfile.contains(&format!("target/release/{binary}")),
        "copies the binary"
    );
    assert!(
        dockerfile.contains(&format!("ENTRYPOINT [\"{binary}\"]")),
        "entrypoint"
    );
    assert!(dockerfile.contains("CMD [\"serve\"]"));
    assert!(dockerfile.contains("USER 10001:10001"));

    // The builder's Rust is the toolchain the repository pins.
    let toolchain: toml::Value = toml::from_str(&read("rust-toolchain.toml")?)?;
    let channel = toolchain["toolchain"]["channel"].as_str().unwrap_or_default();
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .unwrap_or_default();
    let minor = channel.rsplit_once('.').map_or(channel, |(minor, _)| minor);
    assert!(
        image.starts_with(&format!("{minor}-")),
        "FROM rust:{image} vs toolchain {channel}"
    );

    // Its ENV settings are real settings, and the exposed port is the one it listens on.
    let mut env = Vec::new();
    let mut in_env = false;
    for line in dockerfile.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("ENV ") {
            in_env = true;
            env.push(rest.trim_end_matches('\\').trim().to_owned());
        } else if in_env {
            env.push(line.trim_end_matches('\\').trim().to_owned());
        }
        in_env = in_env && line.ends_with('\\');
    }
    let vars: Vec<(String, String)> = env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(vars.iter().any(|(k, _)| k == "CRM_AUTH__DATA_DIR"), "{vars:?}");
    let settings = Settings::load_from(None, vars)?;
    let port = settings.bind_addr()?.port();
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    Ok(())
}

#[test]
fn compose_references_are_found() {
    assert_eq!(references("a ${X} b ${Y:-1} c ${Z:?set it}"), ["X", "Y", "Z"]);
    assert_eq!(
        substitute("postgres://u:${P:?e}@h/${D}"),
        "postgres://u:dummy@h/dummy"
    );
    assert_eq!(substitute("${B:-/x/y} ${C-z}"), "/x/y z");
}
