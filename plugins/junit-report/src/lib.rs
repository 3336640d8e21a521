//! `junit-report`: a JUnit XML report has no failures or errors and enough tests.
//!
//! Config: `{"path": "reports/junit.xml", "min_tests": 1, "max_failures": 0,
//! "max_errors": 0}`. Counts `<testcase>` elements and their `<failure>` / `<error>`
//! children, so it reads pytest, JUnit, Go and cargo2junit reports alike.

wit_bindgen::generate!({ path: "../../wit", world: "verifier" });

use fsm_runner::verifier::types::{Finding, Severity};
use plugin_util::{config_str, guest_path, parse_config};
use quick_xml::events::Event;

struct JunitReport;

#[derive(Default)]
struct Counts {
    tests: u64,
    failures: u64,
    errors: u64,
    skipped: u64,
    /// (test name, kind, message) of each failing case.
    failed: Vec<(String, &'static str, String)>,
}

fn attr(e: &quick_xml::events::BytesStart<'_>, name: &str) -> String {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .map(|a| a.value.to_string())
        .unwrap_or_default()
}

fn count(xml: &str) -> Result<Counts, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut counts = Counts::default();
    let mut current = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("invalid XML at byte {}: {e}", reader.buffer_position()))?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            Event::Eof => break,
            _ => (None, false),
        };
        let Some(e) = start else { continue };
        match e.name().as_ref() {
            "testcase" => {
                counts.tests += 1;
                let class = attr(e, "classname");
                let name = attr(e, "name");
                current = if class.is_empty() {
                    name
                } else {
                    format!("{class}.{name}")
                };
                let _ = empty;
            }
            "failure" => {
                counts.failures += 1;
                counts
                    .failed
                    .push((current.clone(), "failure", attr(e, "message")));
            }
            "error" => {
                counts.errors += 1;
                counts
                    .failed
                    .push((current.clone(), "error", attr(e, "message")));
            }
            "skipped" => counts.skipped += 1,
            _ => {}
        }
    }
    Ok(counts)
}

impl Guest for JunitReport {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "junit-report".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: "0.1.0".into(),
        }
    }

    fn verify(request: Request) -> Result<Report, String> {
        let config = parse_config(&request.config)?;
        let rel = config_str(&config, "path").unwrap_or("junit.xml");
        let path = guest_path(rel, request.dirs.first().map(|d| d.guest_path.as_str()));
        let xml =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
        let counts = count(&xml).map_err(|e| format!("`{path}`: {e}"))?;
        let number =
            |key: &str, default: u64| config.get(key).and_then(|v| v.as_u64()).unwrap_or(default);
        let (min_tests, max_failures, max_errors) = (
            number("min_tests", 1),
            number("max_failures", 0),
            number("max_errors", 0),
        );
        let mut findings: Vec<Finding> = counts
            .failed
            .iter()
            .map(|(test, kind, message)| Finding {
                rule: format!("junit.{kind}"),
                severity: Severity::Error,
                message: format!(
                    "{test}: {kind}{}",
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {message}")
                    }
                ),
                path: Some(path.clone()),
                line: None,
            })
            .collect();
        let mut limit = |ok: bool, rule: &str, message: String| {
            if !ok {
                findings.push(Finding {
                    rule: rule.into(),
                    severity: Severity::Error,
                    message,
                    path: Some(path.clone()),
                    line: None,
                });
            }
        };
        limit(
            counts.tests >= min_tests,
            "junit.min_tests",
            format!("{} test(s), at least {min_tests} required", counts.tests),
        );
        limit(
            counts.failures <= max_failures,
            "junit.max_failures",
            format!(
                "{} failure(s), at most {max_failures} allowed",
                counts.failures
            ),
        );
        limit(
            counts.errors <= max_errors,
            "junit.max_errors",
            format!("{} error(s), at most {max_errors} allowed", counts.errors),
        );
        let passed = counts.tests >= min_tests
            && counts.failures <= max_failures
            && counts.errors <= max_errors;
        Ok(Report {
            passed,
            findings,
            summary: format!(
                "{} tests, {} failures, {} errors, {} skipped in {path}",
                counts.tests, counts.failures, counts.errors, counts.skipped
            ),
        })
    }
}

export!(JunitReport);

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_cases_failures_and_errors() {
        let xml = r#"<testsuites><testsuite name="s"><testcase classname="a" name="ok"/>
            <testcase classname="a" name="bad"><failure message="boom">trace</failure></testcase>
            <testcase name="err"><error message="exc"/></testcase>
            <testcase name="skip"><skipped/></testcase></testsuite></testsuites>"#;
        let c = count(xml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.tests, c.failures, c.errors, c.skipped), (4, 1, 1, 1));
        assert_eq!(c.failed[0].0, "a.bad");
        assert!(count("<testsuite><testcase></testsuite>").is_err());
    }
}
