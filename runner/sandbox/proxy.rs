//! The network allowlist: an HTTP/HTTPS (CONNECT) proxy run by the runner, and the forwarder
//! that makes it reachable from inside a command's network namespace.
//!
//! Owns: deciding each request against the granted hosts, logging every decision, relaying
//! allowed connections. The proxy listens only on a unix socket in the run's private
//! directory; a command reaches it through the helper's forwarder on `127.0.0.1:PORT` in its
//! own namespace, which has no other way out. Must not: resolve or connect to anything not
//! granted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::policy::HostRule;

/// Longest request head the proxy reads before deciding.
const MAX_HEAD: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One decision, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub ts: String,
    pub method: String,
    pub host: String,
    pub port: u16,
    pub allowed: bool,
    pub reason: String,
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    socket: PathBuf,
    log: Arc<Mutex<Vec<Decision>>>,
}

impl Proxy {
    /// Starts a proxy listening on `socket` that allows only `rules`.
    pub fn start(socket: &Path, rules: Vec<HostRule>) -> std::io::Result<Proxy> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new(rules);
        let thread_log = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let rules = rules.clone();
                let log = thread_log.clone();
                std::thread::spawn(move || serve(conn, &rules, &log));
            }
        });
        Ok(Proxy {
            socket: socket.to_path_buf(),
            log,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every decision so far.
    pub fn decisions(&self) -> Vec<Decision> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Unblock the accept loop, then remove the socket file.
        let _ = UnixStream::connect(&self.socket);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `CONNECT host:port` or an absolute-form `GET http://host[:port]/path`.
fn parse_target(line: &str) -> Option<(String, String, u16, Option<String>)> {
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let version = parts.next().unwrap_or("HTTP/1.1");
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = target.rsplit_once(':')?;
        return Some((
            method,
            host.trim_matches(['[', ']']).to_string(),
            port.parse().ok()?,
            None,
        ));
    }
    let rest = target.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().ok()?),
        None => (authority.to_string(), 80),
    };
    let origin_line = format!("{method} {path} {version}");
    Some((method, host, port, Some(origin_line)))
}

fn record(
    log: &Mutex<Vec<Decision>>,
    method: &str,
    host: &str,
    port: u16,
    allowed: bool,
    reason: &str,
) {
    if let Ok(mut l) = log.lock() {
        l.push(Decision {
            ts: chrono::Utc::now().to_rfc3339(),
            method: method.to_string(),
            host: host.to_string(),
            port,
            allowed,
            reason: reason.to_string(),
        });
    }
}

fn serve(conn: UnixStream, rules: &[HostRule], log: &Mutex<Vec<Decision>>) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half.take(MAX_HEAD as u64));
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let end = line == "\r\n" || line == "\n";
        head.push(line);
        if end {
            break;
        }
    }
    let mut client = conn;
    let Some((method, host, port, origin_line)) =
        head.first().and_then(|l| parse_target(l.trim_end()))
    else {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if !rules.iter().any(|r| r.allows(&host, port)) {
        record(
            log,
            &method,
            &host,
            port,
            false,
            "host not granted by the policy",
        );
        let body = format!("fsm-runner: {host}:{port} is not granted by the policy\n");
        let _ = write!(
            client,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut addrs| {
            addrs.find_map(|a| TcpStream::connect_timeout(&a, CONNECT_TIMEOUT).ok())
        });
    let Some(mut upstream) = upstream else {
        record(
            log,
            &method,
            &host,
            port,
            true,
            "granted, but the connection failed",
        );
        let _ = client.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    };
    record(log, &method, &host, port, true, "granted");
    let sent = match origin_line {
        None => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n"),
        Some(first) => {
            let mut request = format!("{first}\r\n");
            for line in &head[1..] {
                let lower = line.to_ascii_lowercase();
                if !lower.starts_with("proxy-connection:")
                    && !lower.starts_with("proxy-authorization:")
                {
                    request.push_str(line);
                }
            }
            upstream.write_all(request.as_bytes())
        }
    };
    if sent.is_err() {
        return;
    }
    // Anything the client sent past the head is already buffered in the reader.
    let buffered = reader.buffer().to_vec();
    if !buffered.is_empty() && upstream.write_all(&buffered).is_err() {
        return;
    }
    relay(client, upstream);
}

/// Copies both ways until either side closes.
fn relay<A, B>(a: A, b: B)
where
    A: Read + Write + Send + TryCloneShutdown + 'static,
    B: Read + Write + Send + TryCloneShutdown + 'static,
{
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone_box(), b.try_clone_box()) else {
        return;
    };
    let (mut a, mut b) = (a, b);
    let upward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b2);
        b2.shutdown_write();
    });
    let _ = std::io::copy(&mut b, &mut a2);
    a2.shutdown_write();
    let _ = upward.join();
}

/// The stream operations `relay` needs from TCP and unix sockets alike.
pub trait TryCloneShutdown: Sized {
    fn try_clone_box(&self) -> std::io::Result<Self>;
    fn shutdown_write(&self);
}

impl TryCloneShutdown for TcpStream {
    fn try_clone_box(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl TryCloneShutdown for UnixStream {
    fn try_clone_box(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Inside the helper: forwards every connection made to `listener` (in the command's
/// network namespace) to the runner's proxy socket.
pub fn forward(listener: TcpListener, socket: PathBuf) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let socket = socket.clone();
            std::thread::spawn(move || {
                if let Ok(upstream) = UnixStream::connect(&socket) {
                    relay(conn, upstream);
                }
            });
        }
    });
}
