//! An HTTP/1.1 echo upstream. Answers every request with JSON of the method,
//! path, headers and body it received, and records each request for asserts.
//! Test hooks: `x-echo-status` picks the status, `x-echo-delay-ms` delays,
//! `x-echo-response-header: name: value` adds a response header,
//! `x-echo-reset` drops the connection without a response.
//! `Echo::script` makes it answer a path prefix with a canned response
//! instead (a JWKS document, an auth service's verdict).

use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }
}

/// A scripted answer for requests under a path prefix.
#[derive(Debug, Clone, Default)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay_ms: u64,
}

impl Canned {
    pub fn new(status: u16, body: &[u8]) -> Canned {
        Canned {
            status,
            body: body.to_vec(),
            ..Canned::default()
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Canned {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn delay(mut self, ms: u64) -> Canned {
        self.delay_ms = ms;
        self
    }
}

type Scripts = Arc<Mutex<Vec<(String, Canned)>>>;

pub struct Echo {
    pub port: u16,
    seen: Arc<Mutex<Vec<Recorded>>>,
    scripts: Scripts,
}

impl Echo {
    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub fn start(port: u16) -> std::io::Result<Echo> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let scripts: Scripts = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let canned = scripts.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                let canned = canned.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &log, &canned);
                });
            }
        });
        Ok(Echo {
            port,
            seen,
            scripts,
        })
    }

    /// Answers requests whose path starts with `prefix` with `canned`
    /// (replacing an earlier script for the same prefix).
    pub fn script(&self, prefix: &str, canned: Canned) {
        if let Ok(mut scripts) = self.scripts.lock() {
            scripts.retain(|(p, _)| p != prefix);
            scripts.push((prefix.to_string(), canned));
            // Longest prefix first.
            scripts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
    }

    /// Recorded requests under a path prefix.
    pub fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.requests().pop()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().map(|v| v.len()).unwrap_or(0)
    }
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        // A connection closed mid-body is a truncated request, not the end of one.
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let size_hex = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers until the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let mut chunk = vec![0; size];
        r.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk);
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Recorded>>, scripts: &Scripts) -> std::io::Result<()> {
    // Answers go out in several writes: without this, Nagle's algorithm and
    // delayed ACKs add ~40 ms to every keep-alive exchange.
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if r.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let body = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            read_chunked(&mut r)?
        } else {
            let len: usize = get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut b = vec![0; len];
            r.read_exact(&mut b)?;
            b
        };
        let canned = scripts.lock().ok().and_then(|s| {
            s.iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, c)| c.clone())
        });
        if let Some(c) = canned {
            if let Ok(mut seen) = log.lock() {
                seen.push(Recorded {
                    method,
                    path,
                    headers,
                    body,
                });
            }
            thread::sleep(Duration::from_millis(c.delay_ms));
            let extra: String = c
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {v}\r\n"))
                .collect();
            write!(
                writer,
                "HTTP/1.1 {} Canned\r\ncontent-length: {}\r\n{extra}\r\n",
                c.status,
                c.body.len()
            )?;
            writer.write_all(&c.body)?;
            writer.flush()?;
            continue;
        }
        // `x-echo-reset`: drop the connection without answering.
        if get("x-echo-reset").is_some() {
            return Ok(());
        }
        let status: u16 = get("x-echo-status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        if let Some(ms) = get("x-echo-delay-ms").and_then(|v| v.parse().ok()) {
            thread::sleep(Duration::from_millis(ms));
        }
        // Headers as an object for people reading curl output; a repeated
        // header becomes an array of its values.
        let mut shown = serde_json::Map::new();
        for (k, v) in &headers {
            match shown.get_mut(k) {
                Some(serde_json::Value::Array(values)) => values.push(json!(v)),
                Some(first) => *first = json!([first.clone(), v]),
                None => {
                    shown.insert(k.clone(), json!(v));
                }
            }
        }
        let reply = json!({
            "method": method,
            "path": path,
            "headers": shown,
            "body": String::from_utf8_lossy(&body),
        });
        // `x-echo-response-header: name: value` (repeatable) adds a response header.
        let extra: String = headers
            .iter()
            .filter(|(k, _)| k == "x-echo-response-header")
            .filter_map(|(_, v)| v.split_once(':'))
            .map(|(n, v)| format!("{}: {}\r\n", n.trim(), v.trim()))
            .collect();
        if let Ok(mut seen) = log.lock() {
            seen.push(Recorded {
                method,
                path,
                headers,
                body,
            });
        }
        let text = serde_json::to_string_pretty(&reply).unwrap_or_default() + "\n";
        write!(
            writer,
            "HTTP/1.1 {status} Echo\r\ncontent-type: application/json\r\ncontent-length: {}\r\nserver: echo\r\n{extra}\r\n{text}",
            text.len()
        )?;
        writer.flush()?;
    }
}
