//! Hundreds of malformed requests, sent raw at every endpoint on SQLite and PostgreSQL: each is answered with
//! a 4xx (the contract's envelope wherever the request could be parsed as HTTP), and afterwards the server is
//! healthy and the database unchanged.
//!
//! Most requests go through reqwest; what reqwest refuses to send (exact paths and query strings, invalid
//! UTF-8 or NUL in headers, duplicate `Content-Length`, broken request lines) is written byte for byte on a
//! TCP connection.
//!
//! actix answers some requests itself, without our envelope, because it cannot parse them as an HTTP request
//! and they never reach the application. They are marked [`Want::Protocol`] in the table: a duplicate,
//! unparsable or signed `Content-Length`; `Content-Length` together with `Transfer-Encoding`, a repeated
//! `Transfer-Encoding` or one other than `chunked`; two `Host` headers, or none in HTTP/1.1; a NUL byte in a
//! header value; a header name with a space, a header line without a colon, obsolete line folding; a request
//! line that is not `METHOD target HTTP/1.x`; a NUL or a byte over 0x7f in the request target (400); more than
//! 128 KiB of header or more than 96 header fields (431). Smaller excesses, over the server's own 32 KiB or 64
//! fields, reach the application and get the envelope.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::{Backend, ORG, PASSWORD, TestApp, USER, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm_auth_client::Credentials;
use crm_auth_server::db::schema;
use diesel::prelude::*;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

backend_tests!(every_malformed_request_gets_a_4xx_and_changes_nothing);

const TOKEN: &str = "/authentication/token";
const KEY: &str = "/authentication/web_api_key/token";
const REFRESH: &str = "/authentication/token/refresh";
const RELEASE: &str = "/authentication/token/release";
const VALIDATE: &str = "/authentication/token/validate";

/// Header names and raw values, in the order sent.
type Headers = Vec<(&'static str, Vec<u8>)>;

/// How a case travels.
enum Wire {
    /// Through reqwest: method, path and query (appended to the server's URL as they are), headers, body.
    Http {
        method: Method,
        path: String,
        headers: Headers,
        body: Option<Vec<u8>>,
    },
    /// Byte for byte on a fresh TCP connection.
    Raw(Vec<u8>),
}

/// What the answer must be.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// The contract's error envelope (`data: {}`) with this HTTP status and code.
    Envelope(u16, &'static str),
    /// A `HEAD` request: this status, and no body to check.
    Head(u16),
    /// actix's own answer to bytes that are not a parseable HTTP request: this status, no envelope.
    Protocol(u16),
}

struct Case {
    name: String,
    wire: Wire,
    want: Want,
    /// Whether the request reaches the password check, which rightly counts a failed attempt in
    /// `login_failures`. Such cases use usernames of their own, never alice's, so that alice is not locked out.
    counts_failure: bool,
}

/// The table, built against one running server.
struct Table {
    base: String,
    cases: Vec<Case>,
}

const BAD_REQUEST: Want = Want::Envelope(400, "INVALID_REQUEST");
const BAD_CREDENTIALS: Want = Want::Envelope(401, "INVALID_CREDENTIALS");
const BAD_TOKEN: Want = Want::Envelope(401, "INVALID_TOKEN");
const BAD_UNIT: Want = Want::Envelope(403, "INVALID_UNIT");
const NOT_FOUND: Want = Want::Envelope(404, "NOT_FOUND");
const BAD_METHOD: Want = Want::Envelope(405, "METHOD_NOT_ALLOWED");
const TOO_LARGE: Want = Want::Envelope(413, "PAYLOAD_TOO_LARGE");

impl Table {
    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn http(
        &mut self,
        name: impl Into<String>,
        method: Method,
        path: String,
        headers: Headers,
        body: Option<Vec<u8>>,
        want: Want,
    ) {
        self.cases.push(Case {
            name: name.into(),
            wire: Wire::Http {
                method,
                path,
                headers,
                body,
            },
            want,
            counts_failure: false,
        });
    }

    /// A POST of `body` as JSON to an API path.
    fn post(&mut self, name: impl Into<String>, path: &str, body: impl Into<Vec<u8>>, want: Want) {
        let headers = vec![("content-type", b"application/json".to_vec())];
        self.http(
            name,
            Method::POST,
            self.api(path),
            headers,
            Some(body.into()),
            want,
        );
    }

    /// A request to an API path with these headers and no body.
    fn headers(&mut self, name: impl Into<String>, method: Method, path: &str, headers: Headers, want: Want) {
        self.http(name, method, self.api(path), headers, None, want);
    }

    /// A password login with this JSON body that gets as far as the password check.
    fn counted_login(&mut self, name: impl Into<String>, body: Value, want: Want) {
        self.post(name, TOKEN, body.to_string(), want);
        if let Some(case) = self.cases.last_mut() {
            case.counts_failure = true;
        }
    }

    /// A raw request: `method target HTTP/1.1`, a Host, the given header lines, a `Content-Length` when
    /// there is a body, and `Connection: close`.
    fn raw(
        &mut self,
        name: impl Into<String>,
        method: &str,
        target: &[u8],
        headers: &[&[u8]],
        body: &[u8],
        want: Want,
    ) {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(method.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(target);
        bytes.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        for header in headers {
            bytes.extend_from_slice(header);
            bytes.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() {
            bytes.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(body);
        self.raw_bytes(name, bytes, want);
    }

    fn raw_bytes(&mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>, want: Want) {
        self.cases.push(Case {
            name: name.into(),
            wire: Wire::Raw(bytes.into()),
            want,
            counts_failure: false,
        });
    }
}

fn basic(user: &[u8]) -> Vec<u8> {
    format!("Basic {}", STANDARD.encode(user)).into_bytes()
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

/// Bodies that are not a JSON object: every endpoint that reads a body refuses them before anything else.
fn junk_bodies() -> Vec<(&'static str, Vec<u8>, Want)> {
    let mut bodies: Vec<(&'static str, Vec<u8>, Want)> = vec![
        ("unclosed object", br#"{"username":"alice""#.to_vec(), BAD_REQUEST),
        ("not json", b"{not json".to_vec(), BAD_REQUEST),
        ("array", b"[1,2]".to_vec(), BAD_REQUEST),
        ("string", br#""text""#.to_vec(), BAD_REQUEST),
        ("number", b"42".to_vec(), BAD_REQUEST),
        ("null", b"null".to_vec(), BAD_REQUEST),
        ("true", b"true".to_vec(), BAD_REQUEST),
        ("trailing comma", br#"{"token":"x",}"#.to_vec(), BAD_REQUEST),
        ("single quotes", b"{'token':'x'}".to_vec(), BAD_REQUEST),
        ("two objects", b"{}{}".to_vec(), BAD_REQUEST),
        ("invalid utf-8", b"{\"token\":\"\xff\xfe\"}".to_vec(), BAD_REQUEST),
        (
            "lone surrogate escape",
            br#"{"token":"\ud800"}"#.to_vec(),
            BAD_REQUEST,
        ),
        (
            "raw NUL in a string",
            b"{\"token\":\"a\0b\"}".to_vec(),
            BAD_REQUEST,
        ),
        (
            "raw tab in a string",
            b"{\"token\":\"a\tb\"}".to_vec(),
            BAD_REQUEST,
        ),
        ("a NUL byte", b"\0".to_vec(), BAD_REQUEST),
        ("byte order mark", b"\xef\xbb\xbf{}".to_vec(), BAD_REQUEST),
        ("no-break space", b"\xc2\xa0".to_vec(), BAD_REQUEST),
        ("number out of range", br#"{"unit":1e999}"#.to_vec(), BAD_REQUEST),
        ("NaN", br#"{"unit":NaN}"#.to_vec(), BAD_REQUEST),
        ("unterminated string", br#"{"token":"abc"#.to_vec(), BAD_REQUEST),
        ("bad escape", br#"{"token":"\q"}"#.to_vec(), BAD_REQUEST),
        ("comment", b"{/* c */}".to_vec(), BAD_REQUEST),
        ("bare key", b"{token:1}".to_vec(), BAD_REQUEST),
        ("form encoded", b"token=abc&unit=x".to_vec(), BAD_REQUEST),
        ("xml", b"<token>abc</token>".to_vec(), BAD_REQUEST),
    ];
    // Deep nesting: serde_json stops at 128 levels with an error; these check that nothing recurses past that
    // and overflows the stack of a worker thread.
    bodies.push(("10k open arrays", vec![b'['; 10_000], BAD_REQUEST));
    let mut balanced = vec![b'['; 8_000];
    balanced.extend(vec![b']'; 8_000]);
    bodies.push(("8k balanced arrays", balanced, BAD_REQUEST));
    bodies.push(("3k open objects", br#"{"a":"#.repeat(3_000), BAD_REQUEST));
    let mut in_field = br#"{"token":"#.to_vec();
    in_field.extend(vec![b'['; 5_000]);
    in_field.extend(vec![b']'; 5_000]);
    in_field.push(b'}');
    bodies.push(("5k arrays in a field", in_field, BAD_REQUEST));
    bodies.push((
        "over the body limit",
        format!(r#"{{"token":"{}"}}"#, "x".repeat(17_000)).into_bytes(),
        TOO_LARGE,
    ));
    bodies
}

/// Every case, for a server with a live `token` and `key`.
fn table(base: &str, token: &str, key: &str) -> Table {
    let mut t = Table {
        base: base.to_owned(),
        cases: Vec::new(),
    };

    // Bodies that are not a JSON object, at every endpoint that reads a body (validate reads one on GET too).
    for (what, body, want) in junk_bodies() {
        for path in [TOKEN, KEY, REFRESH, RELEASE, VALIDATE] {
            t.post(format!("POST {path}: {what}"), path, body.clone(), want);
        }
        t.http(
            format!("GET {VALIDATE} with a body: {what}"),
            Method::GET,
            t.api(VALIDATE),
            Vec::new(),
            Some(body),
            want,
        );
    }

    // Password logins: each field missing, null, empty or of the wrong type, and over its limit.
    let valid = json!({"username": USER, "password": PASSWORD, "organisation": ORG});
    for field in ["username", "password", "organisation"] {
        let mut missing = valid.clone();
        missing.as_object_mut().map(|m| m.remove(field));
        t.post(
            format!("login: {field} missing"),
            TOKEN,
            missing.to_string(),
            BAD_REQUEST,
        );
        for (what, value) in [
            ("null", json!(null)),
            ("empty", json!("")),
            ("a number", json!(5)),
            ("a float", json!(1.5)),
            ("a boolean", json!(true)),
            ("an empty array", json!([])),
            ("an array of a string", json!(["alice"])),
            ("an object", json!({"value": "alice"})),
        ] {
            let mut body = valid.clone();
            body[field] = value;
            t.post(
                format!("login: {field} {what}"),
                TOKEN,
                body.to_string(),
                BAD_REQUEST,
            );
        }
    }
    for (what, value) in [
        ("a number", json!(5)),
        ("a boolean", json!(false)),
        ("an array", json!(["Main"])),
        ("an object", json!({"name": "Main"})),
        ("257 characters", json!("u".repeat(257))),
    ] {
        let mut body = valid.clone();
        body["unit"] = value;
        t.post(
            format!("login: unit {what}"),
            TOKEN,
            body.to_string(),
            BAD_REQUEST,
        );
    }
    for (what, field, value) in [
        ("username of 257 characters", "username", "u".repeat(257)),
        ("username of 257 two-byte characters", "username", "é".repeat(257)),
        ("organisation of 257 characters", "organisation", "o".repeat(257)),
        ("password of 1025 bytes", "password", "p".repeat(1025)),
        // 513 characters but 1026 bytes: the password limit is in bytes.
        (
            "password of 1026 bytes in 513 characters",
            "password",
            "é".repeat(513),
        ),
    ] {
        let mut body = valid.clone();
        body[field] = json!(value);
        t.post(format!("login: {what}"), TOKEN, body.to_string(), BAD_REQUEST);
    }
    // Well-formed but odd values reach the password check and fail it like any wrong login.
    for (what, body) in [
        (
            "username of 256 two-byte characters",
            json!({"username": "é".repeat(256), "password": "x", "organisation": ORG}),
        ),
        (
            "organisation of 256 four-byte characters",
            json!({"username": "mallory", "password": "x", "organisation": "🦀".repeat(256)}),
        ),
        (
            "NUL in the password",
            json!({"username": "mallory", "password": "p\u{0}w", "organisation": ORG}),
        ),
        (
            "replacement character in the username",
            json!({"username": "\u{fffd}", "password": "x", "organisation": ORG}),
        ),
        (
            "blanks around the username",
            json!({"username": " mallory ", "password": "x", "organisation": ORG}),
        ),
        (
            "unknown organisation",
            json!({"username": "mallory", "password": "x", "organisation": "Nowhere"}),
        ),
        (
            "100 levels of nesting in an unknown field",
            json!({"username": "mallory", "password": "x", "organisation": ORG,
                "extra": serde_json::from_str::<Value>(&format!("{}{}", "[".repeat(100), "]".repeat(100)))
                    .unwrap_or_default()}),
        ),
    ] {
        t.counted_login(format!("login: {what}"), body, BAD_CREDENTIALS);
    }
    let duplicate =
        format!(r#"{{"username":"{USER}","username":"mallory","password":"x","organisation":"{ORG}"}}"#);
    t.post("login: duplicate username key", TOKEN, duplicate, BAD_CREDENTIALS);
    if let Some(case) = t.cases.last_mut() {
        case.counts_failure = true;
    }
    // A NUL in a name is refused before anything is looked up: no stored name can hold one (PostgreSQL's text
    // cannot), so a lookup carrying one would fail on PostgreSQL instead of finding nothing.
    for (what, body) in [
        (
            "NUL in the username",
            json!({"username": "mal\u{0}lory", "password": "x", "organisation": ORG}),
        ),
        (
            "NUL in the organisation",
            json!({"username": "mallory", "password": "x", "organisation": "Ac\u{0}me"}),
        ),
        (
            "NUL in the unit",
            json!({"username": USER, "password": PASSWORD, "organisation": ORG, "unit": "Ma\u{0}in"}),
        ),
    ] {
        t.post(format!("login: {what}"), TOKEN, body.to_string(), BAD_REQUEST);
    }
    // The right password with a unit that cannot exist: refused after the check, which a success forgets.
    for (what, unit) in [
        ("replacement character as the unit", "\u{fffd}"),
        ("percent sign as the unit", "%"),
    ] {
        let body = json!({"username": USER, "password": PASSWORD, "organisation": ORG, "unit": unit});
        t.post(format!("login: {what}"), TOKEN, body.to_string(), BAD_UNIT);
    }

    // Key logins: garbage Basic credentials, on POST and GET.
    let long_basic = format!("Basic {}", "A".repeat(10 * 1024)).into_bytes();
    let key_headers: Vec<(&str, Headers)> = vec![
        ("no authorization", vec![]),
        ("Basic alone", vec![("authorization", b"Basic".to_vec())]),
        ("Basic and blanks", vec![("authorization", b"Basic    ".to_vec())]),
        ("Basic not base64", vec![("authorization", b"Basic !!!".to_vec())]),
        ("Basic of a colon", vec![("authorization", basic(b":"))]),
        ("Basic of a NUL key", vec![("authorization", basic(b"\0ABC:"))]),
        (
            "Basic of invalid utf-8",
            vec![("authorization", basic(b"\xff\xfe:"))],
        ),
        (
            "Basic of a 300-character key",
            vec![("authorization", basic(&[b'K'; 300]))],
        ),
        (
            "Basic of an unknown key",
            vec![("authorization", basic(b"00000000000000000000000000000000:"))],
        ),
        (
            "Basic of the key in lower case",
            vec![(
                "authorization",
                basic(format!("{}:", key.to_lowercase()).as_bytes()),
            )],
        ),
        ("Basic of 10 KB", vec![("authorization", long_basic)]),
        ("the key as a Bearer token", vec![("authorization", bearer(key))]),
        (
            "another scheme",
            vec![("authorization", b"Negotiate YIIB".to_vec())],
        ),
        (
            "obs-text bytes",
            vec![("authorization", b"Basic \xff\xfe\xfd".to_vec())],
        ),
        (
            "garbage before the real key",
            vec![
                ("authorization", b"Basic !!!".to_vec()),
                ("authorization", basic(format!("{key}:").as_bytes())),
            ],
        ),
        (
            "two garbage headers",
            vec![
                ("authorization", b"Basic".to_vec()),
                ("authorization", b"Bearer x".to_vec()),
            ],
        ),
    ];
    for (what, headers) in key_headers {
        for method in [Method::POST, Method::GET] {
            t.headers(
                format!("{method} {KEY}: {what}"),
                method,
                KEY,
                headers.clone(),
                BAD_CREDENTIALS,
            );
        }
    }
    // Key logins with the real key and a bad unit.
    let auth = || vec![("authorization", basic(format!("{key}:").as_bytes()))];
    for (what, body, want) in [
        ("unit a number", br#"{"unit":5}"#.to_vec(), BAD_REQUEST),
        ("unit an array", br#"{"unit":["Main"]}"#.to_vec(), BAD_REQUEST),
        (
            "unit of 257 characters",
            format!(r#"{{"unit":"{}"}}"#, "u".repeat(257)).into_bytes(),
            BAD_REQUEST,
        ),
        (
            "NUL in the unit",
            br#"{"unit":"Ma\u0000in"}"#.to_vec(),
            BAD_REQUEST,
        ),
    ] {
        t.http(
            format!("POST {KEY}: {what}"),
            Method::POST,
            t.api(KEY),
            auth(),
            Some(body),
            want,
        );
    }

    // Refresh, release and validate: garbage in the Authorization header.
    let token_headers: Vec<(&str, Headers)> = vec![
        ("no token anywhere", vec![]),
        ("Bearer alone", vec![("authorization", b"Bearer".to_vec())]),
        (
            "Bearer and blanks",
            vec![("authorization", b"Bearer    ".to_vec())],
        ),
        ("three dots", vec![("authorization", b"Bearer ...".to_vec())]),
        ("a.b.c", vec![("authorization", b"Bearer a.b.c".to_vec())]),
        (
            "Bearer of 10 KB",
            vec![("authorization", bearer(&"a".repeat(10 * 1024)))],
        ),
        (
            "obs-text bytes",
            vec![("authorization", b"Bearer \xff\xfe.\xfd".to_vec())],
        ),
        ("Basic scheme", vec![("authorization", basic(b"token:"))]),
        ("tab separator", vec![("authorization", b"Bearer\tabc".to_vec())]),
        (
            "garbage before the real token",
            vec![
                ("authorization", bearer("garbage")),
                ("authorization", bearer(token)),
            ],
        ),
        (
            "two garbage tokens",
            vec![
                ("authorization", bearer("x.y.z")),
                ("authorization", bearer("1.2.3")),
            ],
        ),
    ];
    for (what, headers) in token_headers {
        for (method, path) in [
            (Method::POST, REFRESH),
            (Method::POST, RELEASE),
            (Method::GET, VALIDATE),
            (Method::POST, VALIDATE),
        ] {
            t.headers(
                format!("{method} {path}: {what}"),
                method,
                path,
                headers.clone(),
                BAD_TOKEN,
            );
        }
    }
    // Refresh, release and validate: the body's token of the wrong type, empty or over its limit.
    for (what, body, want) in [
        ("token a number", json!({"token": 5}), BAD_REQUEST),
        ("token an array", json!({"token": [token]}), BAD_REQUEST),
        ("token an object", json!({"token": {"token": token}}), BAD_REQUEST),
        ("token a boolean", json!({"token": true}), BAD_REQUEST),
        (
            "token of 8193 characters",
            json!({"token": "a".repeat(8193)}),
            BAD_REQUEST,
        ),
        ("token null", json!({"token": null}), BAD_TOKEN),
        ("token empty", json!({"token": ""}), BAD_TOKEN),
        (
            "token with a NUL",
            json!({"token": format!("{token}\u{0}")}),
            BAD_TOKEN,
        ),
        (
            "token of non-ascii segments",
            json!({"token": "ü.ü.ü"}),
            BAD_TOKEN,
        ),
    ] {
        for path in [REFRESH, RELEASE, VALIDATE] {
            t.post(format!("POST {path}: {what}"), path, body.to_string(), want);
        }
    }

    // Query strings with broken percent-encoding (sent raw, so that no URL parser tidies them up).
    for (what, query, want) in [
        ("token %zz", "token=%zz".to_owned(), BAD_TOKEN),
        ("token a lone %", "token=%".to_owned(), BAD_TOKEN),
        ("token %ff%fe", "token=%ff%fe".to_owned(), BAD_TOKEN),
        ("token %00", "token=%00".to_owned(), BAD_TOKEN),
        ("token empty", "token=".to_owned(), BAD_TOKEN),
        ("token twice", "token=a&token=b".to_owned(), BAD_TOKEN),
        ("token[]", "token[]=x".to_owned(), BAD_TOKEN),
        ("only separators", "=&&&=".to_owned(), BAD_TOKEN),
        ("broken key", "%zz=%zz".to_owned(), BAD_TOKEN),
        (
            "token of 10k characters",
            format!("token={}", "a".repeat(10_000)),
            BAD_REQUEST,
        ),
    ] {
        let target = t.api(&format!("{VALIDATE}?{query}"));
        t.raw(
            format!("GET {VALIDATE}?: {what}"),
            "GET",
            target.as_bytes(),
            &[],
            b"",
            want,
        );
    }
    for path in [REFRESH, RELEASE] {
        for query in ["token=%zz", "token=%ff%fe%"] {
            let target = t.api(&format!("{path}?{query}"));
            t.raw(
                format!("POST {path}?{query}"),
                "POST",
                target.as_bytes(),
                &[],
                b"",
                BAD_TOKEN,
            );
        }
    }
    let auth_line = format!("authorization: Basic {}", STANDARD.encode(format!("{key}:")));
    for (query, want) in [
        ("unit=%zz", BAD_UNIT),
        ("unit=%", BAD_UNIT),
        ("unit=%ff", BAD_UNIT),
        ("unit=%00", BAD_REQUEST),
        ("unit=Ma%00in", BAD_REQUEST),
    ] {
        let target = t.api(&format!("{KEY}?{query}"));
        t.raw(
            format!("GET {KEY}?{query}"),
            "GET",
            target.as_bytes(),
            &[auth_line.as_bytes()],
            b"",
            want,
        );
    }
    let long_unit = t.api(&format!("{KEY}?unit={}", "u".repeat(257)));
    t.raw(
        "GET key token?unit of 257 characters",
        "GET",
        long_unit.as_bytes(),
        &[auth_line.as_bytes()],
        b"",
        BAD_REQUEST,
    );
    let target = t.api(&format!("{KEY}?unit=%zz"));
    t.raw(
        "GET key token?unit=%zz without a key",
        "GET",
        target.as_bytes(),
        &[],
        b"",
        BAD_CREDENTIALS,
    );

    // Wrong methods on every path.
    let custom = Method::from_bytes(b"FOO").unwrap_or(Method::PUT);
    let api_methods: [(&str, Vec<Method>); 5] = [
        (
            TOKEN,
            vec![
                Method::GET,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                Method::OPTIONS,
                custom.clone(),
            ],
        ),
        (
            KEY,
            vec![
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                Method::OPTIONS,
                custom.clone(),
            ],
        ),
        (
            REFRESH,
            vec![
                Method::GET,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                Method::OPTIONS,
            ],
        ),
        (
            RELEASE,
            vec![
                Method::GET,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                custom.clone(),
            ],
        ),
        (
            VALIDATE,
            vec![
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                Method::OPTIONS,
                custom.clone(),
            ],
        ),
    ];
    for (path, methods) in api_methods {
        for method in methods {
            t.headers(format!("{method} {path}"), method, path, Vec::new(), BAD_METHOD);
        }
        t.headers(
            format!("HEAD {path}"),
            Method::HEAD,
            path,
            Vec::new(),
            Want::Head(405),
        );
    }
    for (path, methods) in [
        ("/health/live", vec![Method::POST, Method::PUT, Method::DELETE]),
        (
            "/health/ready",
            vec![Method::POST, Method::DELETE, custom.clone()],
        ),
        ("/metrics", vec![Method::POST, Method::PUT, Method::DELETE]),
        ("/openapi.json", vec![Method::POST]),
    ] {
        for method in methods {
            let url = path.to_owned();
            t.http(
                format!("{method} {path}"),
                method,
                url,
                Vec::new(),
                None,
                BAD_METHOD,
            );
        }
    }
    // A method in lower case is another method, not GET.
    t.raw(
        "lower-case get /health/ready",
        "get",
        b"/health/ready",
        &[],
        b"",
        BAD_METHOD,
    );

    // Unknown paths, sent raw so that they arrive exactly as written.
    let unknown = [
        t.api("/authentication"),
        t.api("/authentication/token/"),
        t.api("/authentication/token/refresh/extra"),
        t.api(""),
        "/crmapi/rest/v3/authentication/token".to_owned(),
        "/CRMAPI/REST/V2/authentication/token".to_owned(),
        t.api("/authentication/%2e%2e/token"),
        t.api("/authentication/token%00"),
        format!("/{}", t.api("/authentication/token")),
        "/health".to_owned(),
        "/metrics/x".to_owned(),
        "/%ff%fe".to_owned(),
        "/..%2f..%2fetc%2fpasswd".to_owned(),
        format!("/{}", "a".repeat(10_000)),
    ];
    for path in unknown {
        let shown: String = path.chars().take(60).collect();
        for method in ["GET", "POST"] {
            t.raw(
                format!("{method} {shown}"),
                method,
                path.as_bytes(),
                &[],
                b"",
                NOT_FOUND,
            );
        }
    }

    // Headers reqwest would not send, and bytes that are not HTTP.
    let validate = t.api(VALIDATE);
    let v = validate.as_bytes();
    t.raw(
        "Bearer of invalid utf-8",
        "GET",
        v,
        &[b"authorization: Bearer \xff\xfe\xfd"],
        b"",
        BAD_TOKEN,
    );
    t.raw(
        "Basic of invalid utf-8",
        "POST",
        t.api(KEY).as_bytes(),
        &[b"authorization: Basic \xc3\x28"],
        b"",
        BAD_CREDENTIALS,
    );
    // Header sections over the server's own limits (32 KiB, 64 fields) but within actix's (128 KiB, 96) reach
    // the application, so they get the envelope; actix used to answer them as if nothing were wrong.
    for (kib, want) in [(40, BAD_REQUEST), (120, BAD_REQUEST), (31, BAD_TOKEN)] {
        t.raw(
            format!("{kib} KB of an unknown header"),
            "GET",
            v,
            &[format!("x-junk: {}", "j".repeat(kib * 1024)).as_bytes()],
            b"",
            want,
        );
    }
    let spread: Vec<String> = (0..40)
        .map(|i| format!("x-h{i:02}: {}", "s".repeat(1000)))
        .collect();
    let spread: Vec<&[u8]> = spread.iter().map(|h| h.as_bytes()).collect();
    t.raw("40 headers of 1 KB", "GET", v, &spread, b"", BAD_REQUEST);
    // `raw` adds Host and Connection: 62 more make 64 fields, 63 more make 65.
    for (extra, want) in [(62, BAD_TOKEN), (63, BAD_REQUEST), (90, BAD_REQUEST)] {
        let fields: Vec<String> = (0..extra).map(|i| format!("x-h{i}: {i}")).collect();
        let fields: Vec<&[u8]> = fields.iter().map(|h| h.as_bytes()).collect();
        t.raw(
            format!("{} header fields", extra + 2),
            "GET",
            v,
            &fields,
            b"",
            want,
        );
    }
    t.raw(
        "10 KB of an unknown header",
        "GET",
        v,
        &[format!("x-junk: {}", "j".repeat(10 * 1024)).as_bytes()],
        b"",
        BAD_TOKEN,
    );
    let body = br#"{"token":"x"}"#;
    let head = |extra: &str| {
        format!("POST {validate} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}\r\n").into_bytes()
    };
    let with_body = |mut head: Vec<u8>| {
        head.extend_from_slice(body);
        head
    };
    let chunked = |chunks: &str| [head("transfer-encoding: chunked\r\n"), chunks.into()].concat();
    t.raw_bytes(
        "chunked junk body",
        chunked("5\r\n{nope\r\n0\r\n\r\n"),
        BAD_REQUEST,
    );
    let big: String = (0..20)
        .map(|_| format!("400\r\n{}\r\n", " ".repeat(1024)))
        .chain(["0\r\n\r\n".to_owned()])
        .collect();
    t.raw_bytes("chunked body over the limit", chunked(&big), TOO_LARGE);
    t.raw_bytes(
        "chunk size not hex",
        chunked("zz\r\n{}\r\n0\r\n\r\n"),
        BAD_REQUEST,
    );

    let many: String = (0..100).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    // Requests HTTP/1.1 itself refuses, with the status the protocol layer answers.
    let protocol_errors: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "two equal Content-Length",
            with_body(head("content-length: 13\r\ncontent-length: 13\r\n")),
            400,
        ),
        (
            "two different Content-Length",
            with_body(head("content-length: 13\r\ncontent-length: 5\r\n")),
            400,
        ),
        (
            "Content-Length not a number",
            with_body(head("content-length: abc\r\n")),
            400,
        ),
        (
            "negative Content-Length",
            with_body(head("content-length: -13\r\n")),
            400,
        ),
        (
            "Content-Length and Transfer-Encoding",
            with_body(head("content-length: 13\r\ntransfer-encoding: chunked\r\n")),
            400,
        ),
        (
            "NUL in a header value",
            head("authorization: Bearer a\0b\r\n"),
            400,
        ),
        ("space in a header name", head("bad header: x\r\n"), 400),
        ("header line without a colon", head("no-colon-here\r\n"), 400),
        ("obsolete line folding", head("x-folded: a\r\n b\r\n"), 400),
        (
            "140 KB header",
            head(&format!("x-big: {}\r\n", "b".repeat(140 * 1024))),
            431,
        ),
        ("100 headers", head(&many), 431),
        ("two Host headers", head("host: other\r\n"), 400),
        (
            "no Host in HTTP/1.1",
            format!("GET {validate} HTTP/1.1\r\nconnection: close\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "two Transfer-Encoding",
            head("transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n"),
            400,
        ),
        ("Transfer-Encoding gzip", head("transfer-encoding: gzip\r\n"), 400),
        (
            "Content-Length with a plus sign",
            with_body(head("content-length: +13\r\n")),
            400,
        ),
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "unknown HTTP version",
            format!("GET {validate} HTTP/9.9\r\nhost: x\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "request line without a version",
            format!("GET {validate}\r\nhost: x\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "invalid utf-8 in the path",
            b"GET /\xff\xfe HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in the path",
            b"GET /a\0b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (name, bytes, status) in protocol_errors {
        t.raw_bytes(name, bytes, Want::Protocol(status));
    }

    // Requests that are fine except for the path's characters.
    t.raw(
        "tab in the query",
        "GET",
        format!("{validate}?token=a%09b").as_bytes(),
        &[],
        b"",
        BAD_TOKEN,
    );
    t
}

/// An answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Sends one case and reads its answer; a dropped connection or a timeout is an error.
async fn send(http: &reqwest::Client, url: &str, addr: SocketAddr, wire: &Wire) -> anyhow::Result<Answer> {
    match wire {
        Wire::Http {
            method,
            path,
            headers,
            body,
        } => {
            let mut req = http.request(method.clone(), format!("{url}{path}"));
            for (name, value) in headers {
                req = req.header(HeaderName::from_static(name), HeaderValue::from_bytes(value)?);
            }
            if let Some(body) = body {
                req = req.body(body.clone());
            }
            let res = req.send().await?;
            let status = res.status().as_u16();
            let content_type = header(&res, "content-type");
            let body = res.bytes().await?.to_vec();
            Ok(Answer {
                status,
                content_type,
                body,
            })
        }
        Wire::Raw(bytes) => {
            let bytes = bytes.clone();
            tokio::task::spawn_blocking(move || exchange(addr, &bytes)).await?
        }
    }
}

/// Writes `request` on a new connection and reads one answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> anyhow::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    // The server may answer and close before it has read everything; the answer is what counts.
    let _ = stream.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(answer) = parse_answer(&buf, false)? {
            return Ok(answer);
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !buf.is_empty() => break,
            Err(e) => return Err(e.into()),
        }
    }
    parse_answer(&buf, true)?.ok_or_else(|| {
        anyhow::anyhow!(
            "the connection closed without a complete answer: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

/// Parses an HTTP/1.1 answer once it is complete; `closed` says no more bytes will come.
fn parse_answer(buf: &[u8], closed: bool) -> anyhow::Result<Option<Answer>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?
        .parse()?;
    let mut content_type = None;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value.to_owned()),
            "content-length" => length = Some(value.parse::<usize>()?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let rest = &buf[end + 4..];
    let body = if chunked {
        match dechunk(rest) {
            Some(body) => body,
            None if closed => anyhow::bail!("truncated chunked answer"),
            None => return Ok(None),
        }
    } else if let Some(length) = length {
        if rest.len() < length {
            return if closed {
                Err(anyhow::anyhow!("truncated answer"))
            } else {
                Ok(None)
            };
        }
        rest[..length].to_vec()
    } else if closed {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Answer {
        status,
        content_type,
        body,
    }))
}

/// The body of a complete chunked encoding, or `None` while it is incomplete.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Why an answer is not what the case wants, if it is not.
fn judge(answer: &Answer, want: Want) -> Option<String> {
    let status = answer.status;
    if !(400..500).contains(&status) {
        return Some(format!("status {status}, not a 4xx"));
    }
    match want {
        Want::Head(want) | Want::Protocol(want) => {
            (status != want).then(|| format!("status {status}, want {want}"))
        }
        Want::Envelope(want, code) => {
            if status != want {
                return Some(format!(
                    "status {status}, want {want}: {}",
                    String::from_utf8_lossy(&answer.body)
                ));
            }
            if answer.content_type.as_deref() != Some("application/json") {
                return Some(format!("content type {:?}", answer.content_type));
            }
            let Ok(envelope) = serde_json::from_slice::<Value>(&answer.body) else {
                return Some(format!("not JSON: {:?}", String::from_utf8_lossy(&answer.body)));
            };
            let message = envelope["status"]["message"].as_str().unwrap_or_default();
            if envelope["status"]["code"] != code
                || envelope["data"] != json!({})
                || message.is_empty()
                || !envelope["status"]["description"].is_string()
            {
                return Some(format!("envelope {envelope}, want code {code}"));
            }
            None
        }
    }
}

/// Rows of sessions, users, api_keys and login_failures.
fn counts(app: &TestApp) -> anyhow::Result<[i64; 4]> {
    let conn = &mut *app.conn()?;
    Ok([
        schema::sessions::table.count().get_result(conn)?,
        schema::users::table.count().get_result(conn)?,
        schema::api_keys::table.count().get_result(conn)?,
        schema::login_failures::table.count().get_result(conn)?,
    ])
}

async fn every_malformed_request_gets_a_4xx_and_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let token = app.login().await?;
    let addr: SocketAddr = app.url.trim_start_matches("http://").parse()?;
    let table = table(&app.state.settings.http.base_path, token.as_str(), &app.key);
    anyhow::ensure!(table.cases.len() >= 200, "only {} cases", table.cases.len());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    // Cases that never reach a credential check first: they must leave every table as it was. Then those
    // that reach the password check, which may each add a login_failures row and nothing else.
    let (counted, uncounted): (Vec<&Case>, Vec<&Case>) = table.cases.iter().partition(|c| c.counts_failure);
    let mut failures = Vec::new();
    let before = counts(&app)?;
    for case in &uncounted {
        match send(&http, &app.url, addr, &case.wire).await {
            Ok(answer) => {
                failures.extend(judge(&answer, case.want).map(|why| format!("{}: {why}", case.name)))
            }
            Err(e) => failures.push(format!("{}: no answer: {e:#}", case.name)),
        }
    }
    let after = counts(&app)?;
    assert_eq!(after, before, "sessions, users, api_keys, login_failures");
    for case in &counted {
        match send(&http, &app.url, addr, &case.wire).await {
            Ok(answer) => {
                failures.extend(judge(&answer, case.want).map(|why| format!("{}: {why}", case.name)))
            }
            Err(e) => failures.push(format!("{}: no answer: {e:#}", case.name)),
        }
    }
    let last = counts(&app)?;
    assert_eq!(last[..3], before[..3], "sessions, users, api_keys");
    assert!(
        last[3] <= before[3] + i64::try_from(counted.len())?,
        "login_failures grew by more than one row per counted attempt"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        table.cases.len(),
        failures.join("\n")
    );

    // Still healthy: ready, and both kinds of login work.
    let res = http.get(format!("{}/health/ready", app.url)).send().await?;
    assert_eq!(res.status().as_u16(), 200);
    app.login().await?;
    app.client.token(&Credentials::api_key(&app.key)).await?;
    app.client.validate(token.as_str()).await?;
    Ok(())
}
