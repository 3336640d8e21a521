//! Helpers shared by fsm-runner's verifier plugins. Plain Rust, no WIT types: each plugin
//! crate generates its own bindings and turns these results into findings.
//!
//! Owns: reading the JSON config, resolving guest paths against the granted directories,
//! numeric comparisons on JSON values, and a blocking HTTP GET over `wasi:http`.

use serde_json::Value;

/// The config a plugin received, parsed; an empty string is an empty object.
pub fn parse_config(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| format!("config is not valid JSON: {e}"))
}

/// A string field of the config.
pub fn config_str<'a>(config: &'a Value, key: &str) -> Option<&'a str> {
    config.get(key).and_then(Value::as_str)
}

/// A relative path is taken from the first granted directory (the repo, usually).
pub fn guest_path(path: &str, first_dir: Option<&str>) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    match first_dir {
        Some(dir) => format!(
            "{}/{}",
            dir.trim_end_matches('/'),
            path.trim_start_matches("./")
        ),
        None => path.to_string(),
    }
}

/// Looks up `a.b.c` in a JSON value.
pub fn lookup<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(value, |v, key| v.get(key))
}

/// A comparison such as `score >= 0.8`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub key: String,
    pub op: String,
    pub threshold: f64,
}

/// Parses `key OP number` with OP one of >=, <=, ==, !=, >, <.
pub fn parse_check(text: &str) -> Result<Check, String> {
    for op in [">=", "<=", "==", "!=", ">", "<"] {
        if let Some((key, value)) = text.split_once(op) {
            let threshold = value
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("`{text}`: `{}` is not a number", value.trim()))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("`{text}`: missing key"));
            }
            return Ok(Check {
                key: key.to_string(),
                op: op.to_string(),
                threshold,
            });
        }
    }
    Err(format!(
        "`{text}`: expected `key OP number` with OP one of >= <= == != > <"
    ))
}

impl Check {
    pub fn holds(&self, actual: f64) -> bool {
        match self.op.as_str() {
            ">=" => actual >= self.threshold,
            "<=" => actual <= self.threshold,
            ">" => actual > self.threshold,
            "<" => actual < self.threshold,
            "==" => actual == self.threshold,
            _ => actual != self.threshold,
        }
    }
}

/// A response to a GET.
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// GET `url` (http or https) through `wasi:http`. The host decides whether the host is
/// granted; a denied request comes back as an error.
pub fn http_get(url: &str, max_body: usize) -> Result<HttpResponse, String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};

    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(format!("`{url}` is not an http(s) URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|_| "bad method")?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|_| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|_| format!("bad authority `{authority}`"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|_| format!("bad path `{path}`"))?;
    let future =
        outgoing_handler::handle(request, None).map_err(|e| format!("GET {url}: {e:?}"))?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|_| format!("GET {url}: response already taken"))?
        .map_err(|e| format!("GET {url}: {e:?}"))?;
    let status = response.status();
    let body = response
        .consume()
        .map_err(|_| "response body unavailable")?;
    let stream = body.stream().map_err(|_| "response stream unavailable")?;
    let mut bytes = Vec::new();
    while bytes.len() < max_body {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    bytes.truncate(max_body);
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse_and_compare() {
        let c = parse_check("score >= 0.8").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.key.as_str(), c.op.as_str(), c.threshold),
            ("score", ">=", 0.8)
        );
        assert!(c.holds(0.8) && !c.holds(0.79));
        assert!(parse_check("latency.p95<200").is_ok_and(|c| c.holds(199.0)));
        assert!(parse_check("score ~ 1").is_err());
        assert!(parse_check(">= 1").is_err());
    }

    #[test]
    fn nested_lookup_and_paths() {
        let v: Value = serde_json::json!({"a": {"b": {"c": 3}}});
        assert_eq!(lookup(&v, "a.b.c"), Some(&Value::from(3)));
        assert_eq!(lookup(&v, "a.x"), None);
        assert_eq!(guest_path("m.json", Some("/repo")), "/repo/m.json");
        assert_eq!(guest_path("/data/m.json", Some("/repo")), "/data/m.json");
    }
}
