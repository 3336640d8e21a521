//! `http-health`: a URL answers with the expected status (and optionally a body substring).
//!
//! Config: `{"url": "http://127.0.0.1:8000/health", "expect_status": 200,
//! "body_contains": "ok"}`. The host must grant the URL's host; others are denied inside the
//! guest.

wit_bindgen::generate!({ path: "../../wit", world: "verifier" });

use fsm_runner::verifier::types::{Finding, Severity};
use plugin_util::{config_str, http_get, parse_config};

struct HttpHealth;

impl Guest for HttpHealth {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "http-health".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: "0.1.0".into(),
        }
    }

    fn verify(request: Request) -> Result<Report, String> {
        let config = parse_config(&request.config)?;
        let url = config_str(&config, "url").ok_or("config needs `url`")?;
        let expect = config
            .get("expect_status")
            .and_then(|v| v.as_u64())
            .unwrap_or(200);
        let needle = config_str(&config, "body_contains");
        let mut findings = Vec::new();
        let mut fail = |rule: &str, message: String| {
            findings.push(Finding {
                rule: rule.into(),
                severity: Severity::Error,
                message,
                path: None,
                line: None,
            });
        };
        match http_get(url, 1024 * 1024) {
            Err(e) => fail("http.request", e),
            Ok(resp) => {
                if u64::from(resp.status) != expect {
                    fail(
                        "http.status",
                        format!("GET {url} answered {}, expected {expect}", resp.status),
                    );
                }
                if let Some(needle) = needle.filter(|n| !resp.body.contains(n)) {
                    fail(
                        "http.body",
                        format!("GET {url}: body does not contain `{needle}`"),
                    );
                }
            }
        }
        let passed = findings.is_empty();
        let summary = if passed {
            format!("GET {url} is healthy")
        } else {
            format!("GET {url} is not healthy")
        };
        Ok(Report {
            passed,
            findings,
            summary,
        })
    }
}

export!(HttpHealth);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_required() {
        let request = Request {
            config: "{}".into(),
            dirs: Vec::new(),
        };
        assert_eq!(
            HttpHealth::verify(request).err().as_deref(),
            Some("config needs `url`")
        );
    }
}
