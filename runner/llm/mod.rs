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
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: "assistant".into(),
            content: content.into(),
        }
    }
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
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
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
}

/// A blocking client: the loop is sequential, so each call runs to completion on a private
/// single-threaded runtime.
pub struct ChatClient {
    config: ClientConfig,
    url: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// What one attempt ended with, for the retry decision.
enum Attempt {
    Done(Result<(String, Usage), LlmError>),
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
        self.runtime.block_on(self.chat_async(messages))
    }

    async fn chat_async(&self, messages: &[Message]) -> Result<Reply, LlmError> {
        let started = Instant::now();
        let request = ChatRequest {
            model: &self.config.model,
            messages,
        };
        let attempts = self.config.max_retries + 1;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(&request).await {
                Attempt::Done(result) => {
                    return result.map(|(content, usage)| Reply {
                        content,
                        usage,
                        latency_ms: started.elapsed().as_millis() as u64,
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

fn parse_completion(url: &str, body: &[u8]) -> Result<(String, Usage), LlmError> {
    let parsed: ChatResponse = serde_json::from_slice(body).map_err(|e| LlmError::Malformed {
        url: url.to_string(),
        reason: e.to_string(),
        body: excerpt(body),
    })?;
    let content = parsed
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message)
        .and_then(|m| m.content)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| LlmError::EmptyChoices {
            url: url.to_string(),
        })?;
    Ok((content, parsed.usage.unwrap_or_default()))
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
        let (text, usage) = match parse_completion("u", ok) {
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
