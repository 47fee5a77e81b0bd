//! A minimal HTTP/1.1 client on std's `TcpStream` with keep-alive: enough to wait for the server and to log in
//! for the tokens the load runs need. Bodies are read by `Content-Length`, which is how the server answers.

#![expect(clippy::disallowed_methods, reason = "a benchmark measures wall-clock time")]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// One keep-alive connection.
pub struct Connection {
    /// The socket, buffered for reading.
    reader: BufReader<TcpStream>,
    /// Where it is connected, for the `Host` header.
    addr: SocketAddr,
}

/// A response: status and body.
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

impl Connection {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
            addr,
        })
    }

    /// Sends one request and reads its response.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Response> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.reader.get_mut().write_all(request.as_bytes())?;

        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .with_context(|| format!("not an HTTP status line: {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the connection closed inside the response headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().context("bad Content-Length")?;
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Waits until `GET /health/live` answers 200, for at most `limit`.
pub fn wait_live(addr: SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let answered = Connection::open(addr)
            .and_then(|mut c| c.send("GET", "/health/live", &[], ""))
            .is_ok_and(|r| r.status == 200);
        if answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server at {addr} did not answer /health/live within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the server at `addr` has hashed every password still queued (its
/// `crm_auth_password_hashes_in_flight` gauge reads 0 twice, 200 ms apart), for at most `limit`. Requests that
/// the load generator stopped waiting for are still hashed; a figure taken meanwhile would share the cores
/// with them.
pub fn wait_hashing_idle(addr: SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut idle_reads = 0;
    while idle_reads < 2 {
        if Instant::now() > deadline {
            bail!("the server at {addr} was still hashing after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
        let metrics = Connection::open(addr)?.send("GET", "/metrics", &[], "")?;
        let in_flight = metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix("crm_auth_password_hashes_in_flight "))
            .context("no crm_auth_password_hashes_in_flight in /metrics")?;
        idle_reads = if in_flight.trim() == "0" {
            idle_reads + 1
        } else {
            0
        };
    }
    Ok(())
}

/// The `token` of a `{"data":{"token":"..."}}` answer.
pub fn token_of(body: &str) -> Option<&str> {
    let start = body.find("\"token\":\"")? + "\"token\":\"".len();
    let len = body[start..].find('"')?;
    Some(&body[start..start + len])
}

#[cfg(test)]
mod tests {
    //! The helper that parses by hand.

    use super::*;

    /// The token is found inside the envelope, and nothing is found when there is none.
    #[test]
    fn finds_the_token() {
        let body = r#"{"data":{"token":"a.b.c"},"status":{"code":"OK","description":"","message":""}}"#;
        assert_eq!(token_of(body), Some("a.b.c"));
        assert_eq!(token_of(r#"{"data":{}}"#), None);
    }
}
