//! A scripted OpenAI-compatible server on loopback: it answers `POST .../chat/completions`
//! with canned replies, in order, and records every request. It is no model: `fsm-runner
//! demo` says so on screen, and the tests and the benchmark use it to play one.
//!
//! Owns: the script format and a minimal HTTP/1.1 exchange (one request per connection).
//! Must not: look at what it is asked; the order of the script is the whole behaviour.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Usage;

/// The replies, served in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Shown by the demo so nobody mistakes the replies for a model's.
    #[serde(default)]
    pub label: String,
    pub replies: Vec<ScriptedReply>,
}

/// One answer: a chat completion with `content`, or a raw `status` + `body`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReply {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: u64,
}

impl ScriptedReply {
    pub fn text(content: impl Into<String>) -> Self {
        ScriptedReply {
            content: Some(content.into()),
            ..Self::default()
        }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Self {
        ScriptedReply {
            status: Some(status),
            body: Some(body.into()),
            ..Self::default()
        }
    }
}

/// What the server was sent.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub authorization: Option<String>,
    /// The JSON body, or `Null` when it did not parse.
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// The text of every message, joined: what tests search for phase markers.
    pub fn messages_text(&self) -> String {
        self.body["messages"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m["content"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    next: usize,
    requests: Vec<RecordedRequest>,
}

/// A running server; stopped when dropped.
pub struct ScriptedServer {
    port: u16,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedServer {
    /// Binds 127.0.0.1 on a free port and starts answering.
    pub fn start(script: Script) -> std::io::Result<Self> {
        Self::start_on(script, 0)
    }

    /// Binds 127.0.0.1:`port` (0: a free one) and starts answering.
    pub fn start_on(script: Script, port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || serve(listener, script, shared, stop))
        };
        Ok(ScriptedServer {
            port,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>` (without `/v1`; the client adds it).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// How many replies of the script have been served.
    pub fn served(&self) -> usize {
        self.shared.lock().map(|s| s.next).unwrap_or_default()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, script: Script, shared: Arc<Mutex<Shared>>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        // One connection at a time keeps the script's order the order of the requests.
        let _ = handle(stream, &script, &shared);
    }
}

fn handle(stream: TcpStream, script: &Script, shared: &Mutex<Shared>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut content_length = 0usize;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_string();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value);
            }
        }
    }
    let mut body = vec![0u8; content_length.min(64 << 20)];
    reader.read_exact(&mut body)?;
    let reply = {
        let mut s = shared
            .lock()
            .map_err(|_| std::io::Error::other("scripted server state poisoned"))?;
        s.requests.push(RecordedRequest {
            path: path.clone(),
            authorization,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
        let reply = script.replies.get(s.next).cloned();
        if reply.is_some() {
            s.next += 1;
        }
        reply
    };
    let (status, headers, body) = match reply {
        _ if !path.ends_with("/chat/completions") => (
            404,
            BTreeMap::new(),
            r#"{"error":{"message":"scripted model: only /v1/chat/completions exists"}}"#.into(),
        ),
        None => (
            400,
            BTreeMap::new(),
            format!(
                r#"{{"error":{{"message":"scripted model: the script has no reply left (it has {})"}}}}"#,
                script.replies.len()
            ),
        ),
        Some(reply) => {
            std::thread::sleep(Duration::from_millis(reply.delay_ms));
            let body = match (&reply.body, &reply.content) {
                (Some(body), _) => body.clone(),
                (None, content) => completion_body(content.as_deref().unwrap_or(""), reply.usage),
            };
            (reply.status.unwrap_or(200), reply.headers, body)
        }
    };
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

fn completion_body(content: &str, usage: Option<Usage>) -> String {
    let usage = usage.unwrap_or(Usage {
        prompt_tokens: 0,
        completion_tokens: content.split_whitespace().count() as u64,
        total_tokens: content.split_whitespace().count() as u64,
    });
    serde_json::json!({
        "id": "scripted",
        "object": "chat.completion",
        "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage,
    })
    .to_string()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
