//! A scripted HTTP/1.1 responder for unit tests of the client's own logic (retries, sessions): it records what
//! arrives and answers from a list, so no crm-auth server is needed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crm_auth_core::{Claims, DateFormat, Envelope, ErrorCode, Keyring, SigningKey, TokenResponse, issue};

/// One request as it arrived.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    /// E.g. `POST /crmapi/rest/v2/authentication/token HTTP/1.1`.
    pub(crate) head_line: String,
    /// Header names in lower case.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn path(&self) -> &str {
        self.head_line.split(' ').nth(1).unwrap_or_default()
    }
}

/// How to answer one request.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// Status, extra headers, body.
    Http(u16, Vec<(String, String)>, String),
    /// Read the request, never answer.
    Silent,
    /// Wait, then answer.
    After(Duration, Box<Reply>),
}

impl Reply {
    pub(crate) fn token(token: &str) -> Reply {
        let body = serde_json::to_string(&Envelope::ok(TokenResponse {
            token: token.to_owned(),
        }))
        .unwrap_or_default();
        Reply::Http(200, Vec::new(), body)
    }

    pub(crate) fn empty() -> Reply {
        let body = serde_json::to_string(&Envelope::ok(crm_auth_core::Empty {})).unwrap_or_default();
        Reply::Http(200, Vec::new(), body)
    }

    /// An `"OK"` envelope around `data`, with this HTTP status.
    pub(crate) fn data(status: u16, data: &impl serde::Serialize) -> Reply {
        let body = serde_json::to_string(&Envelope::ok(data)).unwrap_or_default();
        Reply::Http(status, Vec::new(), body)
    }

    pub(crate) fn error(code: ErrorCode, retry_after: Option<u64>) -> Reply {
        let body =
            serde_json::to_string(&Envelope::error(code, code.default_message(), "")).unwrap_or_default();
        let headers = retry_after
            .map(|s| vec![("Retry-After".to_owned(), s.to_string())])
            .unwrap_or_default();
        Reply::Http(code.http_status(), headers, body)
    }

    pub(crate) fn after(self, delay: Duration) -> Reply {
        Reply::After(delay, Box::new(self))
    }
}

struct Script {
    replies: Vec<Reply>,
    next: usize,
    requests: Vec<Recorded>,
}

/// A responder on a free local port; the last reply repeats once the list is used up.
pub(crate) struct TestServer {
    port: u16,
    script: Arc<Mutex<Script>>,
}

impl TestServer {
    pub(crate) fn start(replies: Vec<Reply>) -> std::io::Result<TestServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let script = Arc::new(Mutex::new(Script {
            replies,
            next: 0,
            requests: Vec::new(),
        }));
        let shared = Arc::clone(&script);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let script = Arc::clone(&shared);
                thread::spawn(move || serve(stream, &script));
            }
        });
        Ok(TestServer { port, script })
    }

    /// A local port nothing listens on.
    pub(crate) fn closed_port() -> std::io::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr().map(|a| a.port())
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .requests
            .clone()
    }

    /// Replaces the replies still to come.
    pub(crate) fn script(&self, replies: Vec<Reply>) {
        let mut script = self.script.lock().unwrap_or_else(PoisonError::into_inner);
        script.replies = replies;
        script.next = 0;
    }
}

fn serve(stream: TcpStream, script: &Mutex<Script>) {
    let Some(request) = read_request(&stream) else {
        return;
    };
    let reply = {
        let mut script = script.lock().unwrap_or_else(PoisonError::into_inner);
        script.requests.push(request);
        let index = script.next.min(script.replies.len().saturating_sub(1));
        script.next += 1;
        script.replies.get(index).cloned()
    };
    if let Some(reply) = reply {
        answer(stream, reply);
    }
}

fn answer(mut stream: TcpStream, reply: Reply) {
    match reply {
        Reply::Http(status, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        Reply::Silent => thread::sleep(Duration::from_secs(60)),
        Reply::After(delay, reply) => {
            thread::sleep(delay);
            answer(stream, *reply);
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Recorded> {
    let mut reader = BufReader::new(stream);
    let mut head_line = String::new();
    reader.read_line(&mut head_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        head_line: head_line.trim_end().to_owned(),
        headers,
        body,
    })
}

/// Claims of a test token of session `jti`.
pub(crate) fn claims(jti: &str, iat: i64, exp: i64, r#gen: u64) -> Claims {
    Claims::new(jti, "alice", "Acme", "Main", iat, exp)
        .issued_by("crm-auth")
        .at_generation(r#gen)
}

/// A signed token of session `jti`, generation 0.
pub(crate) fn mint(jti: &str, iat: i64, exp: i64) -> anyhow::Result<String> {
    mint_claims(&claims(jti, iat, exp, 0))
}

/// A signed token with these claims.
pub(crate) fn mint_claims(claims: &Claims) -> anyhow::Result<String> {
    let keyring = Keyring::new(vec![SigningKey::new("test", vec![7; 32])?])?;
    Ok(issue(&keyring, claims, DateFormat::Numeric))
}
