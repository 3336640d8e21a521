//! The WASI verifier-plugin host: components under wasmtime with explicit grants.
//!
//! Owns: loading a plugin (built-in by name, or a `.wasm` component by path; never a
//! precompiled artifact someone supplied), the on-disk cache of compiled code keyed by the
//! wasm's hash and the engine's compatibility hash, `InstancePre` reuse, the one function that
//! turns a plugin's grants into a `WasiCtx` ([`wasi_ctx`]), the HTTP allowlist hook, fuel and
//! memory limits, and turning traps into verdicts. Must not: grant anything the
//! [`PluginGrants`] do not name, or let a guest fault reach the runner as a crash.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::policy::HostRule;

mod bindings {
    wasmtime::component::bindgen!({ path: "wit", world: "verifier" });
}

pub use bindings::fsm_runner::verifier::types::{
    Finding, GrantedDir, PluginInfo, Report, Request, Severity,
};
use bindings::{Verifier, VerifierPre};

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Default CPU budget: enough for parsing large reports, small enough that a loop ends in
/// seconds.
pub const DEFAULT_FUEL: u64 = 2_000_000_000;
/// Default memory limit per plugin instance.
pub const DEFAULT_MEMORY_BYTES: usize = 256 * 1024 * 1024;
/// Captured guest stdout/stderr, per stream.
const OUTPUT_CAP: usize = 256 * 1024;

/// A directory a plugin may see, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

/// Everything a plugin is granted; nothing else is available to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PluginGrants {
    pub dirs: Vec<DirGrant>,
    /// Variables passed by name, with their values.
    pub env: Vec<(String, String)>,
    /// Hosts outgoing HTTP may reach; empty means no HTTP.
    pub http: Vec<HostRule>,
    pub fuel: u64,
    pub memory_bytes: usize,
}

/// The outcome of one plugin call: a report, or a failure that never crashed the runner.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub plugin: String,
    pub passed: bool,
    pub summary: String,
    pub findings: Vec<FindingRecord>,
    /// Why the plugin failed to produce a report (a trap, a limit, an `err`).
    pub error: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub fuel_used: u64,
}

/// A finding, as recorded in artifacts.
#[derive(Debug, Clone, Serialize)]
pub struct FindingRecord {
    pub rule: String,
    pub severity: &'static str,
    pub message: String,
    pub path: Option<String>,
    pub line: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("unknown plugin `{0}`; built-in plugins are {list}", list = builtin_names().join(", "))]
    Unknown(String),
    #[error("cannot read plugin `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` is not a WebAssembly component: {1}")]
    NotAComponent(String, &'static str),
    #[error("`{0}` does not export the fsm-runner:verifier world: {1}")]
    WrongWorld(String, String),
    #[error("the plugin engine failed: {0}")]
    Engine(String),
}

/// The names of the built-in plugins.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// A plugin's bytes: a built-in name, else a path to a `.wasm` component.
pub fn plugin_source(name_or_path: &str) -> Result<(String, Vec<u8>), PluginError> {
    if let Some((name, bytes)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        return Ok((name.to_string(), bytes.to_vec()));
    }
    let path = Path::new(name_or_path);
    if !name_or_path.contains('/') && !name_or_path.ends_with(".wasm") {
        return Err(PluginError::Unknown(name_or_path.to_string()));
    }
    let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((name_or_path.to_string(), bytes))
}

/// Refuses anything but a component binary, with a message that says what it is instead.
fn check_component_bytes(name: &str, bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.starts_with(b"\x7fELF") {
        return Err(PluginError::NotAComponent(
            name.into(),
            "it is a precompiled artifact, which is never loaded",
        ));
    }
    if !bytes.starts_with(b"\0asm") || bytes.len() < 8 {
        return Err(PluginError::NotAComponent(
            name.into(),
            "it is not WebAssembly",
        ));
    }
    // Bytes 4..8: version 1 with layer 0 is a core module; layer 1 is a component.
    if bytes[6..8] != [1, 0] {
        return Err(PluginError::NotAComponent(
            name.into(),
            "it is a core WebAssembly module; build it for wasm32-wasip2 (a component)",
        ));
    }
    Ok(())
}

/// Counts memory growth and remembers whether the limit was what stopped it.
struct MemoryLimiter {
    max: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Lets outgoing HTTP through only to granted hosts; others get `HttpRequestDenied`.
struct HttpGrant {
    allowed: Vec<HostRule>,
}

impl WasiHttpHooks for HttpGrant {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        if !self.allowed.iter().any(|r| r.allows(&host, port)) {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

struct PluginState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: HttpGrant,
    table: ResourceTable,
    limiter: MemoryLimiter,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The one place a plugin's grants become a `WasiCtx`: preopens with their permissions, the
/// named environment variables, captured stdio; no sockets, no name lookup, no stdin.
fn wasi_ctx(
    grants: &PluginGrants,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
) -> Result<WasiCtx, String> {
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(stdout).stderr(stderr);
    for (k, v) in &grants.env {
        builder.env(k, v);
    }
    for dir in &grants.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| format!("cannot grant {} as {}: {e}", dir.host.display(), dir.guest))?;
    }
    builder
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    Ok(builder.build())
}

/// Compiles, caches and instantiates plugins. One per process is enough.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<PluginState>,
    cache_dir: Option<PathBuf>,
    loaded: Mutex<HashMap<String, Arc<VerifierPre<PluginState>>>>,
}

impl PluginHost {
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        Ok(PluginHost {
            engine,
            linker,
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// The cache key: the wasm's SHA-256 and the engine's compatibility hash.
    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{:016x}", hasher.finish())
    }

    /// Compiled code for `bytes`, from the cache when it is there.
    fn component(&self, name: &str, bytes: &[u8], key: &str) -> Result<Component, PluginError> {
        check_component_bytes(name, bytes)?;
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{key}.cwasm")));
        if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the file was written by `precompile_component` of an engine with the
            // same compatibility hash into the runner's own cache directory; user-supplied
            // precompiled files are never read (see `check_component_bytes`).
            if let Ok(component) = unsafe { Component::deserialize_file(&self.engine, path) } {
                return Ok(component);
            }
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| PluginError::NotAComponent(name.into(), leak_reason(&e.to_string())))?;
        if let Some(path) = &cached {
            let _ = store_cache(path, &compiled);
        }
        // SAFETY: `compiled` was produced just now by this engine.
        unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| PluginError::Engine(e.to_string()))
    }

    /// Loads (and keeps) a pre-instantiated plugin.
    fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<VerifierPre<PluginState>>, PluginError> {
        let key = self.cache_key(bytes);
        if let Some(pre) = self.loaded.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(pre);
        }
        let component = self.component(name, bytes, &key)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::WrongWorld(name.into(), e.to_string()))?;
        let pre = Arc::new(
            VerifierPre::new(instance_pre)
                .map_err(|e| PluginError::WrongWorld(name.into(), e.to_string()))?,
        );
        if let Ok(mut map) = self.loaded.lock() {
            map.insert(key, pre.clone());
        }
        Ok(pre)
    }

    fn store(
        &self,
        grants: &PluginGrants,
        out: &MemoryOutputPipe,
        err: &MemoryOutputPipe,
    ) -> Result<Store<PluginState>, String> {
        let state = PluginState {
            wasi: wasi_ctx(grants, out.clone(), err.clone())?,
            http: WasiHttpCtx::new(),
            hooks: HttpGrant {
                allowed: grants.http.clone(),
            },
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max: grants.memory_bytes,
                hit: false,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(grants.fuel).map_err(|e| e.to_string())?;
        Ok(store)
    }

    /// Loads a plugin without running it: finds it, compiles it (or takes it from the
    /// cache) and checks that it exports the verifier world.
    pub fn check(&self, name_or_path: &str) -> Result<(), PluginError> {
        let (name, bytes) = plugin_source(name_or_path)?;
        self.load(&name, &bytes).map(|_| ())
    }

    /// The plugin's `info()`.
    pub fn info(&self, name_or_path: &str) -> Result<PluginInfo, PluginError> {
        let (name, bytes) = plugin_source(name_or_path)?;
        let pre = self.load(&name, &bytes)?;
        let grants = PluginGrants {
            fuel: DEFAULT_FUEL,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            ..PluginGrants::default()
        };
        let (out, err) = (
            MemoryOutputPipe::new(OUTPUT_CAP),
            MemoryOutputPipe::new(OUTPUT_CAP),
        );
        let mut store = self
            .store(&grants, &out, &err)
            .map_err(PluginError::Engine)?;
        let verifier = pre
            .instantiate(&mut store)
            .map_err(|e| PluginError::WrongWorld(name.clone(), e.to_string()))?;
        verifier
            .call_info(&mut store)
            .map_err(|e| PluginError::WrongWorld(name, e.to_string()))
    }

    /// Runs `verify`. Every failure after loading becomes a failed verdict with a reason.
    pub fn verify(
        &self,
        name_or_path: &str,
        config_json: &str,
        grants: &PluginGrants,
    ) -> Result<Verdict, PluginError> {
        let (name, bytes) = plugin_source(name_or_path)?;
        let pre = self.load(&name, &bytes)?;
        let (out, err) = (
            MemoryOutputPipe::new(OUTPUT_CAP),
            MemoryOutputPipe::new(OUTPUT_CAP),
        );
        let mut verdict = Verdict {
            plugin: name.clone(),
            passed: false,
            summary: String::new(),
            findings: Vec::new(),
            error: None,
            stdout: String::new(),
            stderr: String::new(),
            fuel_used: 0,
        };
        let mut store = match self.store(grants, &out, &err) {
            Ok(s) => s,
            Err(e) => {
                verdict.error = Some(e);
                return Ok(verdict);
            }
        };
        let request = Request {
            config: config_json.to_string(),
            dirs: grants
                .dirs
                .iter()
                .map(|d| GrantedDir {
                    guest_path: d.guest.clone(),
                    writable: d.writable,
                })
                .collect(),
        };
        let result = pre
            .instantiate(&mut store)
            .and_then(|verifier: Verifier| verifier.call_verify(&mut store, &request));
        verdict.fuel_used = grants.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        match result {
            Ok(Ok(report)) => {
                verdict.passed = report.passed;
                verdict.summary = report.summary;
                verdict.findings = report.findings.into_iter().map(record).collect();
            }
            Ok(Err(message)) => {
                verdict.error = Some(format!("the plugin reported an error: {message}"))
            }
            Err(e) => verdict.error = Some(trap_reason(&e, store.data().limiter.hit, grants)),
        }
        verdict.stdout = String::from_utf8_lossy(&out.contents()).into_owned();
        verdict.stderr = String::from_utf8_lossy(&err.contents()).into_owned();
        if verdict.error.is_some() {
            verdict.passed = false;
            verdict.summary = verdict.error.clone().unwrap_or_default();
        }
        Ok(verdict)
    }
}

fn record(f: Finding) -> FindingRecord {
    FindingRecord {
        rule: f.rule,
        severity: match f.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        },
        message: f.message,
        path: f.path,
        line: f.line,
    }
}

/// Names the limit or fault behind a trap.
fn trap_reason(e: &wasmtime::Error, memory_limit_hit: bool, grants: &PluginGrants) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!(
            "the plugin ran out of its CPU budget ({} fuel)",
            grants.fuel
        ),
        _ if memory_limit_hit => format!(
            "the plugin hit its memory limit ({} MiB): {}",
            grants.memory_bytes / (1024 * 1024),
            first_line(e)
        ),
        Some(trap) => format!("the plugin crashed ({trap}): {}", first_line(e)),
        None => format!("the plugin failed: {}", first_line(e)),
    }
}

fn first_line(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn leak_reason(message: &str) -> &'static str {
    // Engine messages are dynamic; keep the error enum simple with a fixed, useful reason.
    if message.contains("module") {
        "it is a core module, not a component"
    } else {
        "it failed to compile"
    }
}

/// Writes a compiled artifact into the runner's cache, atomically and privately.
fn store_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut file, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The runner's plugin cache: `$XDG_CACHE_HOME/fsm-runner/plugins`, else `~/.cache/...`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("fsm-runner").join("plugins"))
}
