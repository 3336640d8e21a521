//! `metrics-threshold`: a JSON metrics file has the required keys and its numbers meet
//! thresholds.
//!
//! Config: `{"path": "metrics.json", "required": ["score"], "checks": ["score >= 0.8",
//! "latency.p95 < 200"]}`. Keys may be nested (`a.b.c`). A relative path is taken from the
//! first granted directory.

wit_bindgen::generate!({ path: "../../wit", world: "verifier" });

use fsm_runner::verifier::types::{Finding, Severity};
use plugin_util::{config_str, guest_path, lookup, parse_check, parse_config};
use serde_json::Value;

struct MetricsThreshold;

fn finding(rule: &str, severity: Severity, message: String, path: &str) -> Finding {
    Finding {
        rule: rule.to_string(),
        severity,
        message,
        path: Some(path.to_string()),
        line: None,
    }
}

impl Guest for MetricsThreshold {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "metrics-threshold".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: "0.1.0".into(),
        }
    }

    fn verify(request: Request) -> Result<Report, String> {
        let config = parse_config(&request.config)?;
        let rel = config_str(&config, "path").unwrap_or("metrics.json");
        let path = guest_path(rel, request.dirs.first().map(|d| d.guest_path.as_str()));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
        let metrics: Value =
            serde_json::from_str(&text).map_err(|e| format!("`{path}` is not valid JSON: {e}"))?;
        if !metrics.is_object() {
            return Err(format!("`{path}` does not hold a JSON object"));
        }
        let mut findings = Vec::new();
        let strings = |key: &str| -> Vec<String> {
            config
                .get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        for key in strings("required") {
            if lookup(&metrics, &key).is_none() {
                findings.push(finding(
                    "metrics.required",
                    Severity::Error,
                    format!("missing key `{key}`"),
                    &path,
                ));
            }
        }
        let checks = strings("checks");
        for text in &checks {
            let check = parse_check(text)?;
            match lookup(&metrics, &check.key).and_then(Value::as_f64) {
                None => findings.push(finding(
                    "metrics.threshold",
                    Severity::Error,
                    format!("`{}` is missing or not a number", check.key),
                    &path,
                )),
                Some(actual) if !check.holds(actual) => findings.push(finding(
                    "metrics.threshold",
                    Severity::Error,
                    format!("`{text}` does not hold: {} is {actual}", check.key),
                    &path,
                )),
                Some(_) => {}
            }
        }
        let passed = findings.is_empty();
        let summary = if passed {
            format!("{} check(s) hold in {path}", checks.len())
        } else {
            format!("{} problem(s) in {path}", findings.len())
        };
        Ok(Report {
            passed,
            findings,
            summary,
        })
    }
}

export!(MetricsThreshold);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(metrics: &str, config: &str) -> Result<Report, String> {
        let dir = std::env::temp_dir().join(format!(
            "metrics-threshold-test-{}-{}",
            std::process::id(),
            metrics.len()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("m.json"), metrics).map_err(|e| e.to_string())?;
        let request = Request {
            config: config.to_string(),
            dirs: vec![fsm_runner::verifier::types::GrantedDir {
                guest_path: dir.display().to_string(),
                writable: false,
            }],
        };
        let report = MetricsThreshold::verify(request);
        let _ = std::fs::remove_dir_all(&dir);
        report
    }

    #[test]
    fn thresholds_and_required_keys() {
        let config = r#"{"path": "m.json", "required": ["score", "a.b"], "checks": ["score >= 0.8", "a.b < 3"]}"#;
        let pass =
            run(r#"{"score": 0.9, "a": {"b": 2}}"#, config).unwrap_or_else(|e| panic!("{e}"));
        assert!(pass.passed, "{:?}", pass.findings);
        let fail = run(r#"{"score": 0.5, "a": {}}"#, config).unwrap_or_else(|e| panic!("{e}"));
        assert!(!fail.passed);
        assert_eq!(fail.findings.len(), 3, "{:?}", fail.findings);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(run("[1]", r#"{"path": "m.json"}"#).is_err());
        assert!(run("{nope", r#"{"path": "m.json"}"#).is_err());
        assert!(run("{}", r#"{"path": "m.json", "checks": ["score ~ 1"]}"#).is_err());
    }
}
