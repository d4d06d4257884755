//! A raw HTTP/1.1 client: it sends exactly the bytes asked for, so tests can
//! send duplicate headers, odd casing and non-UTF-8 values.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.extend_from_slice(b"host: localhost\r\n");
    }
    for (k, v) in headers {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        req.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"connection: close\r\n\r\n");
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let raw = read_response(&mut s)?;
    parse(&raw)
}

/// One keep-alive HTTP/1.1 connection: requests are sent on it one after
/// the other (a client that never reconnects).
pub struct KeepAlive {
    stream: TcpStream,
}

impl KeepAlive {
    pub fn connect(port: u16) -> std::io::Result<KeepAlive> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(KeepAlive { stream })
    }

    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
        let mut req = format!("GET {path} HTTP/1.1\r\n").into_bytes();
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.extend_from_slice(b"host: localhost\r\n");
        }
        for (k, v) in headers {
            req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        self.stream.write_all(&req)?;
        let raw = read_response(&mut self.stream)?;
        if raw.is_empty() {
            return Err(bad("the connection closed"));
        }
        parse(&raw)
    }
}

pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let h: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    send(port, "GET", path, &h, b"")
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Whether `raw` holds a complete response: the head, then a body framed by
/// content-length or chunked encoding (else the body runs to EOF).
fn complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    let header = |name: &str| {
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return body.len() >= len;
    }
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

/// Reads one response and stops when it is complete, without waiting for the
/// server to close: Envoy delays closing after a local reply until the peer
/// closes (delayed_close_timeout), which would cost a second per request.
fn read_response(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if complete(&raw) {
                    return Ok(raw);
                }
            }
            Err(e) if raw.is_empty() => return Err(e),
            Err(_) => return Ok(raw),
        }
    }
}

fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[(i + 4 + size).min(b.len())..];
    }
    out
}

/// Sends a request with a chunked body, one chunk at a time with a pause in
/// between so Envoy sees them as separate body callbacks. Write errors after
/// the head are tolerated: a proxy that rejects the body may close early.
pub fn send_chunked(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[Vec<u8>],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str("host: localhost\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes())?;
    for chunk in chunks {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        if s.write_all(&frame).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = s.write_all(b"0\r\n\r\n");
    // A reset after the response was sent still leaves the response readable.
    let raw = read_response(&mut s).unwrap_or_default();
    parse(&raw)
}

/// One HTTP/2 request (prior knowledge) by `tests/h2_client.py`, which
/// sends pseudo-headers and headers verbatim: `{"status", "headers",
/// "body", "trailers"}`. `args`: `--header k:v`, `--body`, `--trailer k:v`.
pub fn h2(port: u16, method: &str, path: &str, host: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(crate::python())
        .arg(crate::root().join("tests/h2_client.py"))
        .args([&port.to_string(), method, path, host])
        .args(args)
        .output()
        .expect("run tests/h2_client.py (make setup installs h2)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("h2_client output: {e}"))
}
