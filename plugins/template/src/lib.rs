//! A template verifier plugin: every path in `config.paths` must exist under the granted
//! repository. Copy the crate and replace `verify`.
//!
//! Config: `{"paths": ["README.md", "src"]}`.

wit_bindgen::generate!({ path: "../../wit", world: "verifier" });

use fsm_runner::verifier::types::{Finding, Severity};
use plugin_util::{guest_path, parse_config};

struct FilesExist;

impl Guest for FilesExist {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "files-exist".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: "0.1.0".into(),
        }
    }

    fn verify(request: Request) -> Result<Report, String> {
        let config = parse_config(&request.config)?;
        let repo = request.dirs.first().map(|d| d.guest_path.as_str());
        let paths: Vec<&str> = config
            .get("paths")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let findings: Vec<Finding> = paths
            .iter()
            .filter(|p| std::fs::metadata(guest_path(p, repo)).is_err())
            .map(|p| Finding {
                rule: "files.exist".into(),
                severity: Severity::Error,
                message: format!("`{p}` does not exist"),
                path: Some(p.to_string()),
                line: None,
            })
            .collect();
        Ok(Report {
            passed: findings.is_empty(),
            summary: format!(
                "{} of {} path(s) present",
                paths.len() - findings.len(),
                paths.len()
            ),
            findings,
        })
    }
}

export!(FilesExist);
