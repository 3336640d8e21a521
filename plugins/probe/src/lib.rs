//! `probe`: a test plugin that tries one thing named in its config and reports what happened.
//! Used by the runner's tests to show what a plugin can and cannot do; not a verifier.
//!
//! Config: `{"action": "read"|"write"|"env"|"http"|"loop"|"alloc"|"panic", "arg": "..."}`.

wit_bindgen::generate!({ path: "../../wit", world: "verifier" });

use plugin_util::{config_str, http_get, parse_config};

struct Probe;

fn outcome(passed: bool, summary: String) -> Result<Report, String> {
    Ok(Report {
        passed,
        findings: Vec::new(),
        summary,
    })
}

impl Guest for Probe {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: "0.1.0".into(),
        }
    }

    fn verify(request: Request) -> Result<Report, String> {
        let config = parse_config(&request.config)?;
        let arg = config_str(&config, "arg").unwrap_or_default().to_string();
        match config_str(&config, "action").unwrap_or_default() {
            "read" => match std::fs::read_to_string(&arg) {
                Ok(text) => outcome(true, format!("read {}: {}", arg, text.trim())),
                Err(e) => outcome(false, format!("cannot read {arg}: {e}")),
            },
            "write" => match std::fs::write(&arg, "written by probe\n") {
                Ok(()) => outcome(true, format!("wrote {arg}")),
                Err(e) => outcome(false, format!("cannot write {arg}: {e}")),
            },
            "env" => match std::env::var(&arg) {
                Ok(v) => outcome(true, format!("{arg}={v}")),
                Err(_) => outcome(false, format!("{arg} is not set")),
            },
            "http" => match http_get(&arg, 4096) {
                Ok(resp) => outcome(true, format!("{} {}", resp.status, resp.body.trim())),
                Err(e) => outcome(false, e),
            },
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    blocks.push(vec![1u8; 16 * 1024 * 1024]);
                    std::hint::black_box(&blocks);
                }
            }
            "panic" => panic!("probe was asked to panic"),
            other => Err(format!("unknown action `{other}`")),
        }
    }
}

export!(Probe);
