//! A static page server on 127.0.0.1: one HTML document for every path, so a
//! browser test can load a page from an origin of its own.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

pub struct PageServer {
    pub port: u16,
}

impl PageServer {
    pub fn start(html: String) -> std::io::Result<PageServer> {
        Self::start_with_headers(html, "")
    }

    /// With `headers` (`name: value\r\n` lines) on the page's response, e.g.
    /// `content-security-policy: sandbox allow-scripts`, which gives the
    /// document the opaque origin `null`.
    pub fn start_with_headers(html: String, headers: &str) -> std::io::Result<PageServer> {
        let headers = Arc::new(headers.to_string());
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let html = Arc::new(html);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let html = html.clone();
                let headers = headers.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    // Read the head; a page request has no body.
                    let mut line = String::new();
                    while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                        line.clear();
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n",
                        html.len()
                    );
                    let mut out = &stream;
                    let _ = out.write_all(head.as_bytes());
                    let _ = out.write_all(html.as_bytes());
                });
            }
        });
        Ok(PageServer { port })
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Headless Chromium (Debian's package): loads `url`, lets the page's
/// scripts and fetches finish (virtual time), returns the final DOM.
pub fn chromium_dom(url: &str) -> String {
    let binary = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    // One profile directory per run: two Chromiums on one directory share
    // its lock, and the second prints nothing.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile_dir =
        std::env::temp_dir().join(format!("meshware-chromium-{}-{run}", std::process::id()));
    let out = std::process::Command::new(&binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e} (make setup installs chromium)"));
    let _ = std::fs::remove_dir_all(&profile_dir);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
