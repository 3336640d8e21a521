//! The model: an OpenAI-compatible chat client, and the scripted server that stands in for a
//! model in the demo, the tests and the benchmark.
//!
//! Owns: the endpoint rules (`OPENAI_API_BASE` with or without `/v1`), request timeouts,
//! retries with backoff on 429, 5xx and transport errors (honouring `Retry-After`), and turning
//! every other answer into a typed error that says what to check. Must not: know about plans,
//! phases or edits; it sends messages and returns text with its usage.

pub mod scripted;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The endpoint used when `OPENAI_API_BASE` is not set.
pub const DEFAULT_API_BASE: &str = "https://api.openai.com/v1";
/// Retry waits never exceed this, whatever a server's `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// A reply body larger than this is refused, not buffered: a hostile or broken server cannot
/// make the runner hold gigabytes.
const MAX_REPLY_BYTES: usize = 32 << 20;
/// How much of an error body is quoted in a message.
const BODY_EXCERPT: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("cannot start the HTTP client: {0}")]
    Setup(String),
    #[error("{url}: 401 Unauthorized: the server refused the API key (check OPENAI_API_KEY){body}")]
    Unauthorized { url: String, body: String },
    #[error(
        "{url}: 404 Not Found: unknown model `{model}` or wrong endpoint (check --model and OPENAI_API_BASE){body}"
    )]
    NotFound {
        url: String,
        model: String,
        body: String,
    },
    #[error("{url}: HTTP {status}{body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("{url}: the reply is not a chat completion ({reason}){body}")]
    Malformed {
        url: String,
        reason: String,
        body: String,
    },
    #[error("{url}: the reply has no choices or an empty message")]
    EmptyChoices { url: String },
}

/// Where and how to reach the model.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The API base as given; normalised by [`chat_completions_url`].
    pub api_base: String,
    pub api_key: String,
    pub model: String,
    /// The whole request, from connect to the last byte of the reply.
    pub request_timeout: Duration,
    /// Retries after the first attempt, for 429, 5xx and transport errors.
    pub max_retries: u32,
    /// The first backoff; it doubles each retry.
    pub backoff: Duration,
}

/// `{base}/chat/completions`, with `/v1` added when the base does not end with it.
pub fn chat_completions_url(base: &str) -> String {
    let trimmed = base.trim().trim_end_matches('/');
    if trimmed.ends_with("/v1") {
        format!("{trimmed}/chat/completions")
    } else {
        format!("{trimmed}/v1/chat/completions")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// An assistant message's calls of offered tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message answers this call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: &str, content: String) -> Self {
        Message {
            role: role.into(),
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content.into())
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content.into())
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content.into())
    }
    pub fn tool(call_id: &str, content: String) -> Self {
        Message {
            tool_call_id: Some(call_id.to_string()),
            ..Self::new("tool", content)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the model wrote it.
    #[serde(default)]
    pub arguments: String,
}

/// Read-only tools offered to a model that can call them. The client knows nothing of what
/// they do; errors go back to the model as text.
pub trait ToolHost {
    /// The request's `tools` array.
    fn definitions(&self) -> serde_json::Value;
    fn call(&self, name: &str, arguments: &str) -> String;
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// One answered call.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    pub content: String,
    pub usage: Usage,
    /// From the first attempt's start to the answer, retries and waits included.
    pub latency_ms: u64,
    pub attempts: u32,
    /// Rounds of tool calls answered before the reply.
    pub tool_rounds: u32,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a serde_json::Value>,
}

/// One answered request.
struct Completion {
    content: String,
    tool_calls: Vec<ToolCall>,
    usage: Usage,
    attempts: u32,
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<ChoiceMessage>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

/// A blocking client: the loop is sequential, so each call runs to completion on a private
/// single-threaded runtime.
pub struct ChatClient {
    config: ClientConfig,
    url: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// Set when the server refused a request offering tools; later requests offer none.
    tools_refused: std::cell::Cell<bool>,
}

/// What one attempt ended with, for the retry decision.
enum Attempt {
    Done(Result<(String, Vec<ToolCall>, Usage), LlmError>),
    Retry {
        reason: String,
        wait: Option<Duration>,
    },
}

impl ChatClient {
    pub fn new(config: ClientConfig) -> Result<Self, LlmError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LlmError::Setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(config.request_timeout))
            .timeout(config.request_timeout)
            .user_agent(concat!("fsm-runner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Setup(e.to_string()))?;
        Ok(ChatClient {
            url: chat_completions_url(&config.api_base),
            config,
            http,
            runtime,
            tools_refused: std::cell::Cell::new(false),
        })
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the conversation and returns the first choice's text.
    pub fn chat(&self, messages: &[Message]) -> Result<Reply, LlmError> {
        let started = Instant::now();
        let done = self.runtime.block_on(self.complete(messages, None))?;
        self.reply(done, started, 0)
    }

    /// Like [`chat`](Self::chat), offering `tools`: tool calls are answered and the
    /// conversation sent again, at most `max_rounds` times; then the model must answer in
    /// text. A server that refuses the `tools` field (400 or 422) is asked again without it,
    /// and not offered tools again.
    pub fn chat_with_tools(
        &self,
        messages: &[Message],
        tools: &dyn ToolHost,
        max_rounds: u32,
    ) -> Result<Reply, LlmError> {
        let started = Instant::now();
        let definitions = tools.definitions();
        let mut conversation = messages.to_vec();
        let mut usage = Usage::default();
        let mut attempts = 0;
        let mut rounds = 0;
        loop {
            let offer = rounds < max_rounds && !self.tools_refused.get();
            let result = self
                .runtime
                .block_on(self.complete(&conversation, offer.then_some(&definitions)));
            let done = match result {
                Err(LlmError::Http {
                    status: 400 | 422, ..
                }) if offer => {
                    self.tools_refused.set(true);
                    continue;
                }
                other => other?,
            };
            usage.prompt_tokens += done.usage.prompt_tokens;
            usage.completion_tokens += done.usage.completion_tokens;
            usage.total_tokens += done.usage.total_tokens;
            attempts += done.attempts;
            if done.tool_calls.is_empty() || !offer {
                let done = Completion {
                    usage,
                    attempts,
                    ..done
                };
                return self.reply(done, started, rounds);
            }
            rounds += 1;
            conversation.push(Message {
                tool_calls: done.tool_calls.clone(),
                ..Message::assistant(done.content)
            });
            for call in &done.tool_calls {
                let answer = tools.call(&call.function.name, &call.function.arguments);
                conversation.push(Message::tool(&call.id, answer));
            }
        }
    }

    fn reply(
        &self,
        done: Completion,
        started: Instant,
        tool_rounds: u32,
    ) -> Result<Reply, LlmError> {
        if done.content.trim().is_empty() {
            return Err(LlmError::EmptyChoices {
                url: self.url.clone(),
            });
        }
        Ok(Reply {
            content: done.content,
            usage: done.usage,
            latency_ms: started.elapsed().as_millis() as u64,
            attempts: done.attempts,
            tool_rounds,
        })
    }

    /// One request with retries.
    async fn complete(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> Result<Completion, LlmError> {
        let request = ChatRequest {
            model: &self.config.model,
            messages,
            tools,
        };
        let attempts = self.config.max_retries + 1;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(&request).await {
                Attempt::Done(result) => {
                    return result.map(|(content, tool_calls, usage)| Completion {
                        content,
                        tool_calls,
                        usage,
                        attempts: attempt,
                    });
                }
                Attempt::Retry { reason, wait } => {
                    last = reason;
                    if attempt < attempts {
                        let backoff = self
                            .config
                            .backoff
                            .saturating_mul(1 << (attempt - 1).min(16));
                        tokio::time::sleep(wait.unwrap_or(backoff).min(MAX_WAIT)).await;
                    }
                }
            }
        }
        Err(LlmError::GaveUp {
            url: self.url.clone(),
            attempts,
            last,
        })
    }

    async fn attempt(&self, request: &ChatRequest<'_>) -> Attempt {
        let sent = self
            .http
            .post(&self.url)
            .bearer_auth(&self.config.api_key)
            .json(request)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    reason: describe_transport(&e),
                    wait: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let body = match read_capped(response).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Attempt::Done(Err(LlmError::Malformed {
                    url: self.url.clone(),
                    reason: format!("the reply is larger than {MAX_REPLY_BYTES} bytes"),
                    body: String::new(),
                }));
            }
            Err(e) => {
                return Attempt::Retry {
                    reason: describe_transport(&e),
                    wait: None,
                };
            }
        };
        let url = self.url.clone();
        match status {
            200..=299 => Attempt::Done(parse_completion(&url, &body)),
            429 | 500..=599 => Attempt::Retry {
                reason: format!("HTTP {status}{}", excerpt(&body)),
                wait: retry_after,
            },
            401 | 403 => Attempt::Done(Err(LlmError::Unauthorized {
                url,
                body: excerpt(&body),
            })),
            404 => Attempt::Done(Err(LlmError::NotFound {
                url,
                model: self.config.model.clone(),
                body: excerpt(&body),
            })),
            _ => Attempt::Done(Err(LlmError::Http {
                url,
                status,
                body: excerpt(&body),
            })),
        }
    }
}

/// The body, or `None` when it exceeds [`MAX_REPLY_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

fn parse_completion(url: &str, body: &[u8]) -> Result<(String, Vec<ToolCall>, Usage), LlmError> {
    let parsed: ChatResponse = serde_json::from_slice(body).map_err(|e| LlmError::Malformed {
        url: url.to_string(),
        reason: e.to_string(),
        body: excerpt(body),
    })?;
    let message = parsed.choices.into_iter().next().and_then(|c| c.message);
    let (content, tool_calls) = match message {
        Some(m) => (
            m.content.unwrap_or_default(),
            m.tool_calls.unwrap_or_default(),
        ),
        None => (String::new(), Vec::new()),
    };
    if content.trim().is_empty() && tool_calls.is_empty() {
        return Err(LlmError::EmptyChoices {
            url: url.to_string(),
        });
    }
    Ok((content, tool_calls, parsed.usage.unwrap_or_default()))
}

fn describe_transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    // reqwest's Display hides the cause (connection refused, DNS, ...); walk the chain.
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `: <first bytes of the body>` for error messages, or nothing for an empty body.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let cut: String = text.chars().take(BODY_EXCERPT).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!(" (server said: {cut}{more})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_with_or_without_v1() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/v1",
            "http://h:1/v1/",
        ] {
            assert_eq!(chat_completions_url(base), "http://h:1/v1/chat/completions");
        }
        assert_eq!(
            chat_completions_url("https://x.ai/api/v1"),
            "https://x.ai/api/v1/chat/completions"
        );
    }

    #[test]
    fn completion_parsing_errors_are_typed() {
        let ok = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let (text, _, usage) = match parse_completion("u", ok) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(text, "hi");
        assert_eq!(usage.total_tokens, 4);
        assert!(matches!(
            parse_completion("u", b"<html>"),
            Err(LlmError::Malformed { .. })
        ));
        assert!(matches!(
            parse_completion("u", br#"{"choices":[]}"#),
            Err(LlmError::EmptyChoices { .. })
        ));
        assert!(matches!(
            parse_completion("u", br#"{"choices":[{"message":{"content":"  "}}]}"#),
            Err(LlmError::EmptyChoices { .. })
        ));
    }
}
