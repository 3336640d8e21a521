//! Builds the verifier plugins (plugins/, target wasm32-wasip2) and embeds the built-in ones
//! in the binary, so `fsm-runner` finds them by name.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in plugins: (name, crate file name).
const BUILTIN: &[(&str, &str)] = &[
    ("metrics-threshold", "metrics_threshold"),
    ("junit-report", "junit_report"),
    ("http-health", "http_health"),
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let plugins = root.join("plugins");
    for path in ["wit", "plugins/Cargo.toml", "plugins/Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    for entry in std::fs::read_dir(&plugins).into_iter().flatten().flatten() {
        let src = entry.path().join("src");
        if src.is_dir() {
            println!("cargo:rerun-if-changed={}", src.display());
            println!(
                "cargo:rerun-if-changed={}",
                entry.path().join("Cargo.toml").display()
            );
        }
    }
    let target_dir = plugins.join("target");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(plugins.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // The outer build's settings are for the host, not for wasm.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status();
    if !matches!(status, Ok(s) if s.success()) {
        panic!(
            "building the verifier plugins in plugins/ failed ({status:?}).\n\
             hint: install the target with `rustup target add wasm32-wasip2` (scripts/setup.sh does)"
        );
    }
    let out = target_dir.join("wasm32-wasip2/release");
    let mut code = String::from(
        "/// Built-in verifier plugins: (name, component bytes).\npub const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, file) in BUILTIN {
        let wasm = out.join(format!("{file}.wasm"));
        assert!(Path::new(&wasm).is_file(), "missing {}", wasm.display());
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    code.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("builtin_plugins.rs");
    if let Err(e) = std::fs::write(&dest, code) {
        panic!("cannot write {}: {e}", dest.display());
    }
}
