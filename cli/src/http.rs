//! A minimal HTTP/1.1 client over a tokio `TcpStream`, for a node's admin listener
//! (`POST /drain`): one request per connection (`Connection: close`), a body read by
//! `Content-Length`, chunked, or to the end of the stream, at most [`MAX_RESPONSE`] bytes.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response read (head and body).
pub const MAX_RESPONSE: usize = 1024 * 1024;

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with an empty body to `addr` and reads the response. No timeout of
/// its own: the caller bounds it.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: actormesh-cli/{}\r\n\
         Accept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request to {addr}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // Bounded: every round reads at least one byte, and at most MAX_RESPONSE are kept.
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the response from {addr}: {e}"))?;
        let eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse(&buf, eof)? {
            return Ok(response);
        }
        if eof {
            return Err(format!(
                "{addr} closed the connection before a full response"
            ));
        }
        if buf.len() > MAX_RESPONSE {
            return Err(format!(
                "the response from {addr} exceeds {MAX_RESPONSE} bytes"
            ));
        }
    }
}

/// Parses a response from `buf`: `Ok(None)` when more bytes are needed (and the stream has
/// not ended: `eof` false).
pub fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| "the response head is not UTF-8".to_owned())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: `{status_line}`"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed status line `{status_line}`"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed header line `{line}`"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let rest = &buf[head_end + 4..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let chunked =
        header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        match dechunk(rest)? {
            Some(body) => body,
            None if eof => return Err("the chunked body ends early".to_owned()),
            None => return Ok(None),
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("malformed Content-Length `{length}`"))?;
        if rest.len() < length {
            return if eof {
                Err(format!(
                    "the body ends after {} of {length} bytes",
                    rest.len()
                ))
            } else {
                Ok(None)
            };
        }
        rest[..length].to_vec()
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response {
        status,
        headers,
        body,
    }))
}

/// The body of a chunked encoding, `None` while it is incomplete.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    // Bounded: each round consumes a chunk of the finite input.
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| "malformed chunk size".to_owned())?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("malformed chunk size `{size_text}`"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers (ignored) end with an empty line; the last CRLF may not have arrived.
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn a_response_with_a_length() {
        let raw = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"draining\":true}";
        assert_eq!(
            parse(&raw[..raw.len() - 1], false).unwrap(),
            None,
            "incomplete"
        );
        let r = parse(raw, false).unwrap().unwrap();
        assert_eq!(r.status, 202);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.text(), "{\"draining\":true}");
        assert!(parse(&raw[..raw.len() - 1], true).is_err(), "cut short");
    }

    #[test]
    fn a_chunked_response_and_one_read_to_the_end() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2;x=y\r\n1}\r\n0\r\n\r\n";
        assert_eq!(parse(&raw[..raw.len() - 9], false).unwrap(), None);
        assert_eq!(parse(raw, false).unwrap().unwrap().text(), "{\"a\":1}");
        let raw = b"HTTP/1.0 503 Service Unavailable\r\n\r\ndraining";
        assert_eq!(
            parse(raw, false).unwrap(),
            None,
            "no length: read to the end"
        );
        let r = parse(raw, true).unwrap().unwrap();
        assert_eq!((r.status, r.text().as_str()), (503, "draining"));
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
        assert!(parse(b"HTTP/1.1 abc\r\n\r\n", true).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n", true).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true).is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            true
        )
        .is_err());
    }

    /// A one-shot server on loopback that records the request and answers `response`.
    async fn serve_once(response: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while find(&request, b"\r\n\r\n").is_none() && request.len() < 64 * 1024 {
                let n = socket.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
            }
            // Two writes: the client must put the response together.
            let (head, body) = response.split_at(response.len() / 2);
            socket.write_all(head).await.unwrap();
            socket.flush().await.unwrap();
            tokio::task::yield_now().await;
            socket.write_all(body).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_post_to_a_server_keeping_the_drain_contract() {
        let (addr, server) = serve_once(
            b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{\"draining\":true}",
        )
        .await;
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            request(addr, "POST", "/drain"),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(response.status, 202);
        assert_eq!(response.text(), "{\"draining\":true}");
        let sent = server.await.unwrap();
        assert!(sent.starts_with("POST /drain HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains(&format!("Host: {addr}\r\n")), "{sent}");
        assert!(sent.contains("Content-Length: 0\r\n"), "{sent}");
    }

    #[tokio::test]
    async fn nobody_listening_is_a_clear_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = request(addr, "POST", "/drain").await.unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
