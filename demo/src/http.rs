//! A minimal HTTP/1.1 GET client over a plain TCP connection: enough for the demo's outbound
//! traffic, without pulling an HTTP client stack into a static binary.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response read; the rest is ignored.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// An `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .trim()
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, rest) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("{s:?}: unclosed '['"))?;
                (h, rest.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{s:?}: invalid port {p:?}"))?,
            None => 80,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(format!("{s:?}: invalid host"));
        }
        Ok(Target {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// GETs the target and returns the response's status code.
pub async fn get(target: &Target, timeout: Duration) -> Result<u16, String> {
    tokio::time::timeout(timeout, get_inner(target))
        .await
        .map_err(|_| format!("timed out after {} ms", timeout.as_millis()))?
}

async fn get_inner(target: &Target) -> Result<u16, String> {
    let mut stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: defender-demo/{}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host,
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    parse_status(&response).ok_or_else(|| "malformed HTTP response".to_owned())
}

/// Status code of an HTTP/1.x response (`HTTP/1.1 200 OK`).
pub fn parse_status(response: &[u8]) -> Option<u16> {
    let line_end = response.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&response[..line_end]).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t: Target = "http://task-b:8080/slow?ms=2000".parse().unwrap();
        assert_eq!(
            t,
            Target {
                host: "task-b".into(),
                port: 8080,
                path: "/slow?ms=2000".into()
            }
        );
        assert_eq!(t.to_string(), "http://task-b:8080/slow?ms=2000");
        let t: Target = "http://console:8083".parse().unwrap();
        assert_eq!((t.port, t.path.as_str()), (8083, "/"));
        let t: Target = "http://example.com/x".parse().unwrap();
        assert_eq!(t.port, 80);
        let t: Target = "http://[::1]:9/".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert_eq!(t.to_string(), "http://[::1]:9/");
        let t: Target = "http://[::1]".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert!("https://x/".parse::<Target>().is_err());
        assert!("http://:80/".parse::<Target>().is_err());
        assert!("http://x:notaport/".parse::<Target>().is_err());
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\nok"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[tokio::test]
    async fn get_reads_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
        });
        let target: Target = format!("http://127.0.0.1:{port}/healthz").parse().unwrap();
        assert_eq!(get(&target, Duration::from_secs(5)).await, Ok(204));
        server.await.unwrap();
    }
}
