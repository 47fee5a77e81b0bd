//! The admin console at `/admin/`: its headers and caching over plain HTTP, and the console itself driven in a
//! real headless Chromium (Debian's `chromium` and `chromium-driver`) through WebDriver with fantoccini: an
//! operator's whole round (organisation, unit, user, key shown once, revocation, a disabled user's session
//! ending), an admin of another organisation seeing none of it, a wrong password and a member refused, and a
//! console that stays signed in past its token's lifetime. Screenshots of every screen at 1280 and 390 px
//! wide go to `target/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crm_auth_client::Credentials;
use crm_auth_core::{ErrorCode, Role};
use crm_auth_server::clock::Clock as _;
use crm_auth_server::db::DbConnection;
use crm_auth_server::db::organisation::Organisation;
use crm_auth_server::http::console::{ASSET_CACHE_CONTROL, CONTENT_SECURITY_POLICY, assets};
use crm_auth_server::password::PasswordHasher;
use crm_auth_server::service::admin::{self, Actor, NewUser};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::common::server::free_port;
use crate::common::{Backend, ORG, PASSWORD, TestApp, USER, code, header};

backend_tests!(
    the_console_is_served_with_its_security_headers_and_hashed_assets,
    an_operator_administers_through_the_console_in_a_browser,
    the_console_stays_signed_in_past_the_token_lifetime,
);

/// The operator the tests sign in as (in Acme).
const OPERATOR: &str = "olga";
const OPERATOR_PASSWORD: &str = "operator password 1";
/// An organisation of its own with its admin.
const OTHER_ORG: &str = "Beta";
const OTHER_ADMIN: &str = "bob";
const OTHER_PASSWORD: &str = "beta admin password";
/// What the operator creates through the console.
const NEW_ORG: &str = "Northwind";
const NEW_UNIT: &str = "Depot";
const NEW_USER: &str = "carol";
const NEW_USER_PASSWORD: &str = "carol password 1";

/// Adds a user with a role and a password through the service functions, as the command line does.
fn add_user(
    app: &TestApp,
    org: &Organisation,
    username: &str,
    unit: &str,
    role: Role,
    password: &str,
) -> anyhow::Result<()> {
    let hash = PasswordHasher::hash_blocking(&app.state.settings.auth.argon2, password)?;
    let conn: &mut DbConnection = &mut *app.conn()?;
    let units = [unit.to_owned()];
    let new = NewUser {
        username,
        units: &units,
        default_unit: None,
        password_hash: Some(hash),
        role,
    };
    admin::add_user(conn, &Actor::Cli, org, new, app.clock.now())?;
    Ok(())
}

/// Acme's operator olga, and organisation Beta (unit Hub) with its admin bob.
fn seed_people(app: &TestApp) -> anyhow::Result<()> {
    let now = app.clock.now();
    let (acme, beta) = {
        let conn: &mut DbConnection = &mut *app.conn()?;
        let acme = admin::find_organisation(conn, ORG)?;
        let beta = admin::add_organisation(conn, &Actor::Cli, OTHER_ORG, now)?;
        admin::add_unit(conn, &Actor::Cli, &beta, "Hub", None, now)?;
        (acme, beta)
    };
    add_user(app, &acme, OPERATOR, "Main", Role::Operator, OPERATOR_PASSWORD)?;
    add_user(app, &beta, OTHER_ADMIN, "Hub", Role::Admin, OTHER_PASSWORD)?;
    Ok(())
}

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

/// Whether `CI` asks for every test to run (a missing browser then fails instead of skipping).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "0" && !ci.eq_ignore_ascii_case("false"))
}

/// Chromium and its driver, from `CRM_AUTH_TEST_CHROMIUM` / `CRM_AUTH_TEST_CHROMEDRIVER` or Debian's paths.
fn chromium() -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    let browser = std::env::var_os("CRM_AUTH_TEST_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let driver = std::env::var_os("CRM_AUTH_TEST_CHROMEDRIVER")
        .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
    if browser.exists() && driver.exists() {
        return Ok(Some((browser, driver)));
    }
    let reason = format!(
        "{} or {} is missing (Debian packages chromium and chromium-driver)",
        browser.display(),
        driver.display()
    );
    anyhow::ensure!(!in_ci(), "the console's browser test cannot run: {reason}");
    println!("skipped: {reason}");
    Ok(None)
}

/// Where screenshots go: `target/console-screenshots/` (under `CARGO_TARGET_DIR` when set).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

/// chromedriver in a process group of its own, so that the Chromium it starts is killed with it when this is
/// dropped, a failing test included.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The window sizes every screen is checked and photographed at.
const WIDE: (u32, u32) = (1280, 900);
const NARROW: (u32, u32) = (390, 844);

/// One headless Chromium on the console of one server.
struct Browser {
    client: Client,
    /// The server's root URL.
    base: String,
    /// The screenshots' file name prefix (the backend).
    prefix: &'static str,
    _driver: Driver,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium through it; `None` when they are missing
    /// outside CI.
    async fn start(base: &str, prefix: &'static str) -> anyhow::Result<Option<Browser>> {
        use std::os::unix::process::CommandExt as _;
        let Some((chromium, chromedriver)) = chromium()? else {
            return Ok(None);
        };
        let port = free_port()?;
        let driver = Driver(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()?,
        );
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--window-size={},{}", WIDE.0, WIDE.1),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            anyhow::bail!("capabilities are an object");
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    let browser = Browser {
                        client,
                        base: base.to_owned(),
                        prefix,
                        _driver: driver,
                    };
                    browser.client.set_window_size(WIDE.0, WIDE.1).await?;
                    return Ok(Some(browser));
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("chromedriver did not start a session: {last:?}")
    }

    /// Ends the browser session (the driver is killed when dropped).
    async fn close(self) -> anyhow::Result<()> {
        let Browser { client, _driver, .. } = self;
        client.close().await?;
        Ok(())
    }

    async fn goto(&self, path: &str) -> anyhow::Result<()> {
        self.client.goto(&format!("{}{path}", self.base)).await?;
        Ok(())
    }

    /// Polls `check` every 100 ms for up to 15 s until it gives a value.
    async fn until<T, F>(&self, what: &str, mut check: F) -> anyhow::Result<T>
    where
        F: AsyncFnMut(&Browser) -> anyhow::Result<Option<T>>,
    {
        let mut last = String::new();
        for _ in 0..150 {
            match check(self).await {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let alert = self.text("#alert").await.unwrap_or_default();
        anyhow::bail!("timed out waiting for {what} (last error: {last}; alert: {alert:?})")
    }

    /// The text of the first element `css` finds.
    async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css(css)).await?.text().await?)
    }

    /// Whether `css` finds an element now.
    async fn has(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// Waits until the element `css` finds shows `needle`.
    async fn wait_text(&self, css: &str, needle: &str) -> anyhow::Result<String> {
        self.until(&format!("{needle:?} in {css}"), async |b: &Browser| {
            let text = b.text(css).await?;
            Ok(text.contains(needle).then_some(text))
        })
        .await
    }

    /// Waits until the table `testid` has loaded a page, and gives its body's text.
    async fn loaded(&self, testid: &str) -> anyhow::Result<String> {
        let css = format!("table[data-testid='{testid}']:not([aria-busy]) tbody");
        self.until(&format!("table {testid} to load"), async |b: &Browser| {
            Ok(Some(b.text(&css).await?))
        })
        .await
    }

    /// Waits until the table `testid` has loaded a page showing `needle`, and gives its body's text.
    async fn table_with(&self, testid: &str, needle: &str) -> anyhow::Result<String> {
        let css = format!("table[data-testid='{testid}']:not([aria-busy]) tbody");
        self.wait_text(&css, needle).await
    }

    /// Types `value` into the control named `name` of the form `form` (a CSS selector).
    async fn fill(&self, form: &str, name: &str, value: &str) -> anyhow::Result<()> {
        let input = self
            .client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(&format!("{form} [name='{name}']")))
            .await?;
        input.clear().await?;
        input.send_keys(value).await?;
        Ok(())
    }

    /// Clicks the submit button of the form `form`.
    async fn submit(&self, form: &str) -> anyhow::Result<()> {
        self.client
            .find(Locator::Css(&format!("{form} button[type='submit']")))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// Clicks the element the XPath `xpath` finds, waiting for it to appear.
    async fn click(&self, xpath: &str) -> anyhow::Result<()> {
        let element = self
            .client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::XPath(xpath))
            .await?;
        element.click().await?;
        Ok(())
    }

    /// Opens a screen from the navigation.
    async fn open(&self, title: &str) -> anyhow::Result<()> {
        self.click(&format!("//nav[@id='nav']//a[normalize-space()='{title}']"))
            .await?;
        // The route changes on `hashchange`, after the click has returned; the screen is rendered when its
        // link is marked current.
        self.wait_text("#screens a[aria-current='page']", title).await?;
        Ok(())
    }

    /// The alert's text once it shows one.
    async fn alert(&self) -> anyhow::Result<String> {
        self.until("an alert", async |b: &Browser| {
            let text = b.text("[role='alert']").await?;
            anyhow::ensure!(
                !text.contains("null") && !text.contains("undefined"),
                "the alert shows a missing value: {text:?}"
            );
            Ok((!text.is_empty()).then_some(text))
        })
        .await
    }

    /// Signs in through the form, pressing Enter in the password field as a keyboard user would.
    async fn sign_in(&self, organisation: &str, username: &str, password: &str) -> anyhow::Result<()> {
        let form = "#sign-in-form";
        self.until("the sign-in form", async |b: &Browser| {
            Ok(b.client
                .find(Locator::Css(form))
                .await?
                .is_displayed()
                .await?
                .then_some(()))
        })
        .await?;
        self.fill(form, "organisation", organisation).await?;
        self.fill(form, "username", username).await?;
        self.fill(form, "password", &format!("{password}\u{E007}"))
            .await?;
        Ok(())
    }

    /// Opens a screen with the keyboard only: Tab from the element before the link (so that the focus is a
    /// keyboard focus, which must be visible), then Enter.
    async fn keyboard_open(&self, title: &str) -> anyhow::Result<()> {
        let xpath = format!("//nav[@id='nav']//a[normalize-space()='{title}']");
        self.client
            .execute(
                "const links = [...document.querySelectorAll('#screens a')];\
                 const i = links.findIndex((a) => a.textContent.trim() === arguments[0]);\
                 (i > 0 ? links[i - 1] : document.getElementById('organisation')).focus();",
                vec![json!(title)],
            )
            .await?;
        self.client.active_element().await?.send_keys("\u{E004}").await?;
        let focused = self.client.active_element().await?;
        let target = self.client.find(Locator::XPath(&xpath)).await?;
        anyhow::ensure!(
            focused.element_id() == target.element_id(),
            "Tab did not reach the {title} link"
        );
        let outline = self
            .client
            .execute(
                "const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth];",
                vec![],
            )
            .await?;
        anyhow::ensure!(
            outline[0] != "none" && outline[1] != "0px",
            "the focused link shows no outline: {outline}"
        );
        focused.send_keys("\u{E007}").await?;
        self.wait_text("#screen h1", title).await?;
        Ok(())
    }

    /// The page's cumulative layout shift since it loaded, shifts that followed an input excepted.
    async fn layout_shift(&self) -> anyhow::Result<f64> {
        let total = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 let total = 0;\
                 new PerformanceObserver((list) => {\
                   for (const e of list.getEntries()) if (!e.hadRecentInput) total += e.value;\
                 }).observe({ type: 'layout-shift', buffered: true });\
                 setTimeout(() => done(total), 200);",
                vec![],
            )
            .await?;
        total
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("no layout shift total: {total}"))
    }

    /// The first column of the users table as loaded.
    async fn usernames(&self) -> anyhow::Result<Vec<String>> {
        let cells = self
            .client
            .find_all(Locator::Css(
                "table[data-testid='users-table']:not([aria-busy]) tbody tr td:first-child",
            ))
            .await?;
        let mut names = Vec::with_capacity(cells.len());
        for cell in cells {
            names.push(cell.text().await?);
        }
        Ok(names)
    }

    /// Starts recording the page's `securitypolicyviolation` events (until the next page load).
    async fn watch_policy(&self) -> anyhow::Result<()> {
        self.client
            .execute(
                "window.violations = [];\
                 document.addEventListener('securitypolicyviolation', (e) =>\
                   window.violations.push(`${e.violatedDirective} ${e.blockedURI}`));",
                vec![],
            )
            .await?;
        Ok(())
    }

    /// The violations recorded since [`Browser::watch_policy`].
    async fn policy_violations(&self) -> anyhow::Result<Vec<Value>> {
        let found = self.client.execute("return window.violations;", vec![]).await?;
        found
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the page was reloaded since watch_policy: {found}"))
    }

    /// What this tab keeps in `sessionStorage`.
    async fn stored_token(&self) -> anyhow::Result<Option<String>> {
        let stored = self
            .client
            .execute("return sessionStorage.getItem('crm-auth-console');", vec![])
            .await?;
        let Some(text) = stored.as_str() else {
            return Ok(None);
        };
        let value: Value = serde_json::from_str(text)?;
        Ok(value["token"].as_str().map(str::to_owned))
    }

    async fn storage_len(&self) -> anyhow::Result<u64> {
        let len = self
            .client
            .execute("return sessionStorage.length;", vec![])
            .await?;
        len.as_u64()
            .ok_or_else(|| anyhow::anyhow!("sessionStorage.length is {len}"))
    }

    /// Checks the screen at both widths (nothing wider than the window: tables scroll inside their frames) and
    /// writes a screenshot of each to the screenshot folder as `{prefix}-{name}-{width}.png`.
    async fn screens(&self, name: &str) -> anyhow::Result<()> {
        // Every visible control has a label a screen reader reads out.
        let unlabelled = self
            .client
            .execute(
                "return [...document.querySelectorAll('input, select, textarea')]\
                   .filter((c) => c.offsetParent !== null && (!c.labels || c.labels.length === 0))\
                   .map((c) => c.name || c.id);",
                vec![],
            )
            .await?;
        anyhow::ensure!(
            unlabelled.as_array().is_some_and(Vec::is_empty),
            "{name}: controls without a label: {unlabelled}"
        );
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        for (width, height) in [WIDE, NARROW] {
            self.client.set_window_size(width, height).await?;
            let size = self
                .client
                .execute(
                    "return [window.innerWidth, document.documentElement.scrollWidth];",
                    vec![],
                )
                .await?;
            let inner = size[0].as_u64().unwrap_or_default();
            let scroll = size[1].as_u64().unwrap_or(u64::MAX);
            anyhow::ensure!(
                inner <= u64::from(width),
                "the window is {inner} px wide, not {width}"
            );
            anyhow::ensure!(
                scroll <= inner,
                "{name} at {width} px: the page is {scroll} px wide in a {inner} px window"
            );
            let png = self.client.screenshot().await?;
            std::fs::write(dir.join(format!("{}-{name}-{width}.png", self.prefix)), png)?;
        }
        self.client.set_window_size(WIDE.0, WIDE.1).await?;
        Ok(())
    }
}

fn backend_name(backend: &Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_) => "postgres",
    }
}

/// The contract's scenario, in the browser, checked against the server through our own client.
async fn an_operator_administers_through_the_console_in_a_browser(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    seed_people(&app)?;
    let Some(browser) = Browser::start(&app.url, backend_name(&backend)).await? else {
        return Ok(());
    };
    operator_round(&app, &browser).await?;
    other_admin_sees_none_of_it(&browser).await?;
    member_is_refused(&browser).await?;
    browser.close().await
}

async fn operator_round(app: &TestApp, b: &Browser) -> anyhow::Result<()> {
    // `/admin` leads to the console; a wrong password shows the envelope's message.
    b.goto("/admin").await?;
    anyhow::ensure!(b.client.current_url().await?.path() == "/admin/");
    b.sign_in(ORG, OPERATOR, "not the password").await?;
    let alert = b.alert().await?;
    assert_eq!(alert, ErrorCode::InvalidCredentials.default_message());
    b.screens("sign-in").await?;

    b.sign_in(ORG, OPERATOR, OPERATOR_PASSWORD).await?;
    b.wait_text("[data-testid='signed-in-as']", &format!("{OPERATOR}@{ORG}"))
        .await?;
    b.table_with("organisations-table", ORG).await?;
    let token = b
        .stored_token()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no token stored"))?;
    app.client.validate(&token).await?;

    // An organisation.
    let form = "[data-testid='create-organisation-form']";
    b.fill(form, "name", NEW_ORG).await?;
    b.submit(form).await?;
    b.table_with("organisations-table", NEW_ORG).await?;
    b.screens("organisations").await?;
    b.click(&format!(
        "//table[@data-testid='organisations-table']//a[normalize-space()='{NEW_ORG}']"
    ))
    .await?;
    b.wait_text("#screen h1", &format!("Users of {NEW_ORG}")).await?;

    // A unit.
    b.open("Units").await?;
    b.loaded("units-table").await?;
    let form = "[data-testid='create-unit-form']";
    b.fill(form, "name", NEW_UNIT).await?;
    b.fill(form, "code", "DP").await?;
    b.submit(form).await?;
    b.table_with("units-table", NEW_UNIT).await?;
    b.screens("units").await?;

    // A user.
    b.open("Users").await?;
    b.loaded("users-table").await?;
    let form = "[data-testid='create-user-form']";
    b.fill(form, "username", NEW_USER).await?;
    b.fill(form, "password", NEW_USER_PASSWORD).await?;
    b.fill(form, "units", NEW_UNIT).await?;
    b.submit(form).await?;
    b.table_with("users-table", NEW_USER).await?;
    b.screens("users").await?;

    // A key: shown once, logs in, gone from the screen once it is reloaded, then revoked.
    b.open("Keys").await?;
    b.loaded("keys-table").await?;
    let form = "[data-testid='create-key-form']";
    b.fill(form, "username", NEW_USER).await?;
    b.fill(form, "name", "billing").await?;
    b.submit(form).await?;
    let key = b
        .until("the new key", async |b: &Browser| {
            let text = b.text("[data-testid='new-key-value']").await?;
            Ok((!text.is_empty()).then_some(text))
        })
        .await?;
    assert!(
        key.len() == 32 && key.chars().all(|c| c.is_ascii_hexdigit()),
        "{key:?}"
    );
    anyhow::ensure!(
        !b.client
            .find_all(Locator::XPath(
                "//section[contains(@class,'new-key')]//button[normalize-space()='Copy']"
            ))
            .await?
            .is_empty(),
        "no copy button beside the new key"
    );
    b.click("//section[contains(@class,'new-key')]//button[normalize-space()='Copy']")
        .await?;
    b.wait_text("section.new-key [role='status']", "Copied.").await?;
    b.table_with("keys-table", NEW_USER).await?;
    b.screens("keys").await?;
    let key_token = app.client.token(&Credentials::api_key(&key)).await?;
    app.client.validate(key_token.as_str()).await?;
    b.client.refresh().await?;
    b.table_with("keys-table", NEW_USER).await?;
    anyhow::ensure!(
        !b.has("[data-testid='new-key-value']").await?,
        "the key is shown again"
    );
    // Loading the page and its table moved nothing already shown: Chromium's cumulative layout shift is
    // zero (it calls below 0.1 good; a bar shown after the first paint pushing the screen down scored 0.055).
    let shift = b.layout_shift().await?;
    assert!(shift < 0.001, "layout shift {shift} while the keys screen loaded");
    // From here on, every screen is rendered in this document: none may do what the policy forbids.
    b.watch_policy().await?;
    anyhow::ensure!(
        !b.client.source().await?.contains(&key),
        "the page still holds the key"
    );
    b.click(&format!(
        "//table[@data-testid='keys-table']//tr[td[3]='{NEW_USER}']//button[normalize-space()='Revoke']"
    ))
    .await?;
    b.table_with("keys-table", "revoked").await?;
    assert_eq!(
        code(app.client.token(&Credentials::api_key(&key)).await),
        Some(ErrorCode::InvalidCredentials)
    );
    assert_eq!(
        code(app.client.validate(key_token.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );

    // The user's session is listed, then ends when the user is disabled.
    let carol = app
        .client
        .token(&Credentials::password(NEW_USER, NEW_USER_PASSWORD, NEW_ORG))
        .await?;
    b.open("Sessions").await?;
    b.loaded("sessions-table").await?;
    let form = "form[role='search']";
    b.fill(form, "username", NEW_USER).await?;
    b.submit(form).await?;
    b.table_with("sessions-table", "password").await?;
    b.screens("sessions").await?;
    b.open("Users").await?;
    b.table_with("users-table", NEW_USER).await?;
    b.click(&format!(
        "//table[@data-testid='users-table']//tr[td[1]='{NEW_USER}']//button[normalize-space()='Disable']"
    ))
    .await?;
    b.wait_text("#status", &format!("{NEW_USER} disabled")).await?;
    b.table_with("users-table", "disabled").await?;
    assert_eq!(
        code(app.client.validate(carol.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    b.open("Sessions").await?;
    b.fill(form, "username", NEW_USER).await?;
    b.submit(form).await?;
    b.table_with("sessions-table", "No live sessions").await?;
    manage_user(app, b).await?;

    // Every change is in the audit log, reached by keyboard: a link focused with Tab shows its focus, and
    // Enter follows it.
    b.keyboard_open("Audit log").await?;
    let audit = b.table_with("audit-table", "user.disable").await?;
    for action in [
        "unit.create",
        "user.create",
        "key.create",
        "key.revoke",
        "user.enable",
        "user.update",
        "session.revoke",
    ] {
        assert!(audit.contains(action), "{action} missing from {audit}");
    }
    assert!(audit.contains(&format!("{OPERATOR}@{ORG}")), "{audit}");
    b.screens("audit").await?;

    let violations = b.policy_violations().await?;
    assert!(
        violations.is_empty(),
        "the console broke its own policy: {violations:?}"
    );
    pages(app, b).await?;

    // Signing out releases the token and empties the tab's storage.
    b.click("//button[normalize-space()='Sign out']").await?;
    b.until("the sign-in form", async |b: &Browser| {
        Ok(b.client
            .find(Locator::Css("#sign-in"))
            .await?
            .is_displayed()
            .await?
            .then_some(()))
    })
    .await?;
    assert_eq!(b.storage_len().await?, 0);
    assert_eq!(
        code(app.client.validate(&token).await),
        Some(ErrorCode::SessionEnded)
    );
    Ok(())
}

/// The user's other changes: enable again, make an admin, set a password; then a session of the user's,
/// logged in with the new password and able to administer, is revoked from the sessions screen.
async fn manage_user(app: &TestApp, b: &Browser) -> anyhow::Result<()> {
    const NEW_PASSWORD: &str = "carol's new password";
    b.open("Users").await?;
    b.table_with("users-table", NEW_USER).await?;
    let row = format!("//table[@data-testid='users-table']//tr[td[1]='{NEW_USER}']");
    b.click(&format!("{row}//button[normalize-space()='Enable']"))
        .await?;
    b.wait_text("#status", &format!("{NEW_USER} enabled")).await?;
    b.table_with("users-table", "active").await?;
    b.click(&format!("{row}//button[normalize-space()='Manage']"))
        .await?;
    let panel = "section.panel";
    b.wait_text(&format!("{panel} h2"), &format!("Manage {NEW_USER}"))
        .await?;
    b.client
        .find(Locator::Css(&format!("{panel} select[name='role']")))
        .await?
        .select_by_value("admin")
        .await?;
    b.click("//section[contains(@class,'panel')]//button[normalize-space()='Change role']")
        .await?;
    b.wait_text("#status", &format!("{NEW_USER} is now admin"))
        .await?;
    b.table_with("users-table", "admin").await?;
    b.fill(panel, "password", NEW_PASSWORD).await?;
    b.click("//section[contains(@class,'panel')]//button[normalize-space()='Set password']")
        .await?;
    b.wait_text("#status", &format!("The password of {NEW_USER} is set"))
        .await?;

    // The old password no longer logs in, the new one does, and the session may administer.
    assert_eq!(
        code(
            app.client
                .token(&Credentials::password(NEW_USER, NEW_USER_PASSWORD, NEW_ORG))
                .await
        ),
        Some(ErrorCode::InvalidCredentials)
    );
    let carol = app
        .client
        .token(&Credentials::password(NEW_USER, NEW_PASSWORD, NEW_ORG))
        .await?;
    let res = reqwest::Client::new()
        .get(format!("{}/admin/v1/organisations/{NEW_ORG}/users", app.url))
        .bearer_auth(carol.as_str())
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 200);

    b.open("Sessions").await?;
    let form = "form[role='search']";
    b.fill(form, "username", NEW_USER).await?;
    b.submit(form).await?;
    b.table_with("sessions-table", NEW_USER).await?;
    b.click("//table[@data-testid='sessions-table']//button[normalize-space()='Revoke']")
        .await?;
    b.wait_text("#status", &format!("Session of {NEW_USER} revoked"))
        .await?;
    b.table_with("sessions-table", "No live sessions").await?;
    assert_eq!(
        code(app.client.validate(carol.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    Ok(())
}

/// A list longer than a page: Next shows the rest (the API's `next_cursor`), Previous the first page again.
async fn pages(app: &TestApp, b: &Browser) -> anyhow::Result<()> {
    {
        let conn: &mut DbConnection = &mut *app.conn()?;
        let acme = admin::find_organisation(conn, ORG)?;
        let units = ["Main".to_owned()];
        for i in 0..PAGE_SIZE {
            let username = format!("user{i:02}");
            let new = NewUser {
                username: &username,
                units: &units,
                default_unit: None,
                password_hash: None,
                role: Role::Member,
            };
            admin::add_user(conn, &Actor::Cli, &acme, new, app.clock.now())?;
        }
    }
    // alice, olga and the users just added: two more than a page, every one on exactly one page.
    b.goto(&format!("/admin/#/users/{ORG}")).await?;
    b.loaded("users-table").await?;
    let first = b.usernames().await?;
    assert_eq!(first.len(), PAGE_SIZE);
    b.click("//nav[contains(@class,'pager')]/button[normalize-space()='Next']")
        .await?;
    b.wait_text(".page-number", "Page 2").await?;
    b.loaded("users-table").await?;
    let second = b.usernames().await?;
    assert_eq!(second.len(), 2, "{second:?}");
    let mut all: Vec<String> = first.iter().chain(&second).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), PAGE_SIZE + 2);
    assert!(all.contains(&USER.to_owned()) && all.contains(&OPERATOR.to_owned()));
    b.click("//nav[contains(@class,'pager')]/button[normalize-space()='Previous']")
        .await?;
    b.wait_text(".page-number", "Page 1").await?;
    b.loaded("users-table").await?;
    assert_eq!(b.usernames().await?, first);
    Ok(())
}

/// The administration API's page size when no `limit` is asked for.
const PAGE_SIZE: usize = 50;

/// An admin of another organisation sees its own organisation only: none of the first one's users, and
/// asking for it by name is `NOT_FOUND`.
async fn other_admin_sees_none_of_it(b: &Browser) -> anyhow::Result<()> {
    b.sign_in(OTHER_ORG, OTHER_ADMIN, OTHER_PASSWORD).await?;
    b.wait_text(
        "[data-testid='signed-in-as']",
        &format!("{OTHER_ADMIN}@{OTHER_ORG} (admin)"),
    )
    .await?;
    let users = b.table_with("users-table", OTHER_ADMIN).await?;
    for name in [NEW_USER, OPERATOR, USER] {
        assert!(!users.contains(name), "{name} shown to {OTHER_ADMIN}: {users}");
    }
    anyhow::ensure!(
        b.client
            .find_all(Locator::XPath(
                "//nav[@id='nav']//a[normalize-space()='Organisations']"
            ))
            .await?
            .is_empty(),
        "an admin is offered the organisations screen"
    );
    let choices = b.text("#organisation").await?;
    assert_eq!(choices.trim(), OTHER_ORG);
    for org in [NEW_ORG, ORG] {
        b.goto(&format!("/admin/#/users/{org}")).await?;
        b.wait_text("#screen h1", &format!("Users of {org}")).await?;
        let alert = b.alert().await?;
        assert!(alert.contains(ErrorCode::NotFound.default_message()), "{alert}");
        let users = b.loaded("users-table").await?;
        assert!(!users.contains(NEW_USER) && !users.contains(USER), "{users}");
    }
    b.click("//button[normalize-space()='Sign out']").await?;
    Ok(())
}

/// A member signs in and is told it may not administer: the API's message, no screens, no token kept.
async fn member_is_refused(b: &Browser) -> anyhow::Result<()> {
    b.goto("/admin/").await?;
    b.sign_in(ORG, USER, PASSWORD).await?;
    let alert = b.alert().await?;
    assert!(
        alert.starts_with(ErrorCode::Forbidden.default_message()),
        "{alert}"
    );
    anyhow::ensure!(!b.client.find(Locator::Css("#nav")).await?.is_displayed().await?);
    anyhow::ensure!(b.text("#screen").await?.is_empty(), "a member is shown a screen");
    assert_eq!(b.storage_len().await?, 0);
    Ok(())
}

/// With 4-second tokens (and no leeway), a console left open for three lifetimes still works: it refreshed
/// its token on schedule (the stored token is a later generation and still valid before any click), and a
/// click then loads data. The server's clock follows the wall clock here, as the browser's does.
async fn the_console_stays_signed_in_past_the_token_lifetime(backend: Backend) -> anyhow::Result<()> {
    const TTL: u64 = 4;
    let app = TestApp::start_with(&backend, |s| {
        s.token.ttl_seconds = TTL;
        s.token.leeway_seconds = 0;
    })
    .await?;
    seed_people(&app)?;
    let Some(browser) = Browser::start(&app.url, backend_name(&backend)).await? else {
        return Ok(());
    };
    let clock = app.clock.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            clock.advance(1);
        }
    });
    let result = async {
        browser.goto("/admin/").await?;
        browser.sign_in(ORG, OPERATOR, OPERATOR_PASSWORD).await?;
        browser.table_with("organisations-table", ORG).await?;
        let first = browser
            .stored_token()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no token stored"))?;
        tokio::time::sleep(Duration::from_secs(3 * TTL)).await;
        // The first token has expired by the server's clock...
        assert_eq!(
            code(app.client.validate(&first).await),
            Some(ErrorCode::TokenExpired)
        );
        // ...and the console holds a later one that has not, without a click to prompt it.
        let current = browser
            .stored_token()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no token stored"))?;
        assert_ne!(current, first);
        let session = app.client.validate(&current).await?;
        let generation = crm_auth_core::decode_unverified(&current)?.r#gen;
        assert!(generation >= 2, "refreshed {generation} times in {} s", 3 * TTL);
        drop(session);
        browser.open("Users").await?;
        browser.table_with("users-table", USER).await?;
        anyhow::ensure!(browser.text("#alert").await?.is_empty(), "an error is shown");
        anyhow::Ok(())
    }
    .await;
    ticker.abort();
    browser.close().await?;
    result
}
