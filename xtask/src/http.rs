//! A minimal HTTP/1.1 client on `std::net::TcpStream`, enough for the tasks that drive a running server
//! (`schemathesis`, `soak`): one request at a time on a kept-alive connection, `Content-Length` or chunked
//! response bodies, no TLS, no redirects; and the Basic credentials and JSON strings the tasks send.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// Most bytes of response body read; the server's answers are a few hundred bytes.
const MAX_BODY_BYTES: usize = 4 << 20;

/// An answer: the status code and the body as text.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The string value of `"name":"..."` in a JSON body, for the few fields the tasks read (`token`); `None`
    /// when absent or not a plain string without escapes.
    pub fn json_str(&self, name: &str) -> Option<&str> {
        json_str(&self.body, name)
    }
}

/// A connection to one server, reopened when the server closes it.
pub struct Client {
    /// The server's address.
    addr: SocketAddr,
    /// How long connecting, writing and reading may each take.
    timeout: Duration,
    /// The kept-alive connection, if one is open.
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    /// A client of the server at `addr`; connects on the first request.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Client {
        Client {
            addr,
            timeout,
            conn: None,
        }
    }

    /// Sends one request and reads its answer. `headers` are `(name, value)` pairs; a body is sent with its
    /// length. A request on a kept-alive connection that the server had already closed is sent once more on
    /// a new connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let request = [head.as_bytes(), body.unwrap_or_default().as_bytes()].concat();

        let reused = self.conn.is_some();
        match self.exchange(&request) {
            Ok(response) => Ok(response),
            Err(Exchange::Stale) if reused => {
                self.conn = None;
                self.exchange(&request).map_err(Exchange::into_error)
            }
            Err(err) => Err(err.into_error()),
        }
        .with_context(|| format!("{method} {path}"))
    }

    /// Writes `request` and reads the answer on the open connection, or a new one.
    fn exchange(&mut self, request: &[u8]) -> Result<Response, Exchange> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect_timeout(&self.addr, self.timeout)
                    .with_context(|| format!("cannot connect to {}", self.addr))
                    .map_err(Exchange::Failed)?;
                stream
                    .set_read_timeout(Some(self.timeout))
                    .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
                    .and_then(|()| stream.set_nodelay(true))
                    .context("cannot set socket options")
                    .map_err(Exchange::Failed)?;
                self.conn.insert(BufReader::new(stream))
            }
        };
        if let Err(err) = conn.get_mut().write_all(request) {
            self.conn = None;
            return Err(Exchange::stale_or(err, "cannot send the request"));
        }
        let mut status_line = String::new();
        match conn.read_line(&mut status_line) {
            Ok(0) => {
                self.conn = None;
                return Err(Exchange::Stale);
            }
            Ok(_) => {}
            Err(err) => {
                self.conn = None;
                return Err(Exchange::stale_or(err, "cannot read the status line"));
            }
        }
        let result = read_rest(conn, &status_line);
        match &result {
            Ok((_, keep_alive)) if *keep_alive => {}
            _ => self.conn = None,
        }
        result.map(|(response, _)| response).map_err(Exchange::Failed)
    }
}

/// Why an exchange failed: the kept-alive connection was closed under it (worth one retry), or anything else.
enum Exchange {
    /// The server had closed the connection before the request reached it.
    Stale,
    /// Any other failure.
    Failed(anyhow::Error),
}

impl Exchange {
    /// A reset or broken pipe on a reused connection is a stale connection; anything else fails.
    fn stale_or(err: std::io::Error, what: &str) -> Exchange {
        match err.kind() {
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                Exchange::Stale
            }
            _ => Exchange::Failed(anyhow::Error::new(err).context(what.to_owned())),
        }
    }

    /// The failure as an error.
    fn into_error(self) -> anyhow::Error {
        match self {
            Exchange::Stale => anyhow::anyhow!("the server closed the connection without answering"),
            Exchange::Failed(err) => err,
        }
    }
}

/// Reads the headers and body that follow `status_line`; also says whether the connection stays open.
fn read_rest(conn: &mut BufReader<TcpStream>, status_line: &str) -> Result<(Response, bool)> {
    let mut words = status_line.split_whitespace();
    let status = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .with_context(|| format!("bad status line {status_line:?}"))?,
        _ => bail!("bad status line {status_line:?}"),
    };
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = status_line.starts_with("HTTP/1.1");
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).context("cannot read a header")? == 0 {
            bail!("the connection closed in the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            bail!("bad header line {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    let body = if chunked {
        read_chunked(conn)?
    } else if let Some(length) = length {
        if length > MAX_BODY_BYTES {
            bail!("a body of {length} bytes is over the limit");
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).context("cannot read the body")?;
        body
    } else {
        // Neither length nor chunks: the body runs to the end of the connection.
        keep_alive = false;
        let mut body = Vec::new();
        conn.take(MAX_BODY_BYTES as u64)
            .read_to_end(&mut body)
            .context("cannot read the body")?;
        body
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok((Response { status, body }, keep_alive))
}

/// Reads a chunked body up to and including its last chunk and trailers.
fn read_chunked(conn: &mut BufReader<TcpStream>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        conn.read_line(&mut size).context("cannot read a chunk size")?;
        let size = size.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).with_context(|| format!("bad chunk size {size:?}"))?;
        if size == 0 {
            // Trailers, then the blank line that ends the body.
            loop {
                let mut line = String::new();
                if conn.read_line(&mut line).context("cannot read a trailer")? == 0 || line.trim().is_empty()
                {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            bail!("a chunked body is over the limit");
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])
            .context("cannot read a chunk")?;
        let mut crlf = [0; 2];
        conn.read_exact(&mut crlf).context("cannot read a chunk end")?;
    }
}

/// The string value of `"name":"..."` in `json`, if it is a plain string without escapes.
fn json_str<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\"");
    let after = &json[json.find(&key)? + key.len()..];
    let after = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let value = &after[..after.find('"')?];
    (!value.contains('\\')).then_some(value)
}

/// Standard base64 with padding, for Basic credentials.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `text` as a JSON string literal, for request bodies.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    //! The soak test reads tokens out of answers with [`json_str`]; a wrong read would show up as errors
    //! that the server did not make.

    use super::*;

    /// Plain strings are read wherever the member sits and however it is spaced.
    #[test]
    fn reads_plain_string_members() {
        let body = r#"{"data": {"token" : "eyJ.a-b_c.d"}, "status": {"code":"OK"}}"#;
        assert_eq!(json_str(body, "token"), Some("eyJ.a-b_c.d"));
        assert_eq!(json_str(body, "code"), Some("OK"));
    }

    /// Absent members, non-strings and escaped strings are `None` rather than a wrong value.
    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(json_str(r#"{"data":{}}"#, "token"), None);
        assert_eq!(json_str(r#"{"token":null}"#, "token"), None);
        assert_eq!(json_str(r#"{"token":"a\"b"}"#, "token"), None);
    }

    /// RFC 4648's test vectors.
    #[test]
    fn encodes_base64() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    /// Quotes, backslashes and control characters are escaped.
    #[test]
    fn quotes_json_strings() {
        assert_eq!(json_string("admin"), r#""admin""#);
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
        assert_eq!(json_string("p\"w"), r#""p\"w""#);
    }
}
