//! Turning a stage's policy grants into what the helper enforces.
//!
//! Owns: the one function per sandbox kind that maps grants to concrete kernel rules
//! ([`confinement_for`]) and the one function that builds a command's environment from
//! scratch ([`command_env`]): named roots become paths, toolchains on PATH are located, the
//! protected files of the run become read-only mounts. Must not: apply anything itself (the
//! helper does, in `confine`) or decide what is granted (the policy does).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::{self, NamedRoot, Network, PathGrant, StageGrants};

/// The OS directories readable (and executable) under the `system` root.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/srv",
    "/var/lib", "/run", "/proc", "/sys", "/dev",
];

/// Device files commands may write to; the rest of /dev stays read-only (a raw disk owned by
/// the runner's user must never be writable).
const WRITABLE_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
    "/dev/shm",
];

/// Network as the helper sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetMode {
    /// A new network namespace with only loopback.
    Isolated,
    /// The host's network.
    Host,
    /// A new network namespace whose only way out is the runner's proxy, reached through a
    /// forwarder listening on `127.0.0.1:port` inside it.
    Proxy { socket: PathBuf, port: u16 },
}

/// Resource limits applied with setrlimit in the command's process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RLimits {
    pub address_space: Option<u64>,
    pub processes: Option<u64>,
    pub file_size: Option<u64>,
    pub open_files: Option<u64>,
}

/// Everything the helper enforces for one command. Paths are host paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Landlock: read and execute beneath these.
    pub read_exec: Vec<PathBuf>,
    /// Landlock: every access beneath these.
    pub read_write: Vec<PathBuf>,
    /// Hidden by a mount (an empty read-only tmpfs over a directory, /dev/null over a file).
    pub hide: Vec<PathBuf>,
    /// Bind-mounted read-only over themselves (protected files inside writable areas).
    pub read_only: Vec<PathBuf>,
    /// Bind-mounted writable again inside a read-only area (the declared metrics file).
    pub writable: Vec<PathBuf>,
    pub network: Option<NetMode>,
    /// Join the user and network namespaces of this helper (a deploy service's session).
    pub join: Option<i32>,
    pub limits: RLimits,
}

/// What a run knows that grants are resolved against.
#[derive(Debug, Clone, Default)]
pub struct RunPaths {
    pub repo: PathBuf,
    pub artifacts: PathBuf,
    /// The private temp dir, also HOME.
    pub tmp: PathBuf,
    /// The runner's HOME, for `~/` in grants.
    pub home: Option<PathBuf>,
    /// The runner's PATH, for `toolchains`.
    pub path_var: Option<String>,
    /// Files and dirs commands must not change (plan, pipeline, policy, .git, .aider_fsm).
    pub protected: Vec<PathBuf>,
    /// Files inside protected dirs that commands may write (the metrics file).
    pub writable: Vec<PathBuf>,
}

fn expand(grant: &PathGrant, paths: &RunPaths) -> Vec<PathBuf> {
    match grant {
        PathGrant::Root(NamedRoot::System) => SYSTEM_DIRS.iter().map(PathBuf::from).collect(),
        PathGrant::Root(NamedRoot::Toolchains) => toolchain_prefixes(paths),
        PathGrant::Root(NamedRoot::Repo) => vec![paths.repo.clone()],
        PathGrant::Root(NamedRoot::Tmp) => vec![paths.tmp.clone()],
        PathGrant::Root(NamedRoot::Artifacts) => vec![paths.artifacts.clone()],
        PathGrant::Path(p) => match (p.strip_prefix('~'), &paths.home) {
            (Some(rest), Some(home)) => vec![home.join(rest.trim_start_matches('/'))],
            (Some(_), None) => Vec::new(),
            (None, _) => vec![PathBuf::from(p)],
        },
    }
}

/// The real prefixes of the tools on PATH: for `X/bin` or `X/shims`, `X` (so a pyenv or
/// rustup install brings its versions along), and the prefix of where each entry really
/// points. rustup's proxies in `~/.cargo/bin` also need `~/.rustup`.
pub fn toolchain_prefixes(paths: &RunPaths) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let Some(path_var) = &paths.path_var else {
        return out;
    };
    let system = |p: &Path| SYSTEM_DIRS.iter().any(|s| p.starts_with(s));
    for entry in std::env::split_paths(path_var) {
        let Ok(real) = std::fs::canonicalize(&entry) else {
            continue;
        };
        let prefix = match real.file_name().and_then(|n| n.to_str()) {
            Some("bin" | "shims" | "sbin") => {
                real.parent().map(Path::to_path_buf).unwrap_or(real.clone())
            }
            _ => real.clone(),
        };
        // Entries inside the OS directories come with the `system` root.
        if system(&real) || prefix == Path::new("/") {
            continue;
        }
        if let Some(home) = &paths.home
            && prefix == *home
        {
            // `~/bin` on PATH must not grant the whole home: keep only the bin dir.
            push_unique(&mut out, real);
            continue;
        }
        if prefix.ends_with(".cargo") {
            let rustup = std::env::var_os("RUSTUP_HOME")
                .map(PathBuf::from)
                .or_else(|| prefix.parent().map(|p| p.join(".rustup")));
            if let Some(rustup) = rustup.filter(|r| r.is_dir()) {
                push_unique(&mut out, rustup);
            }
        }
        push_unique(&mut out, prefix);
    }
    out
}

fn push_unique(list: &mut Vec<PathBuf>, p: PathBuf) {
    if !list.contains(&p) {
        list.push(p);
    }
}

/// Maps a stage's grants to the helper's rules. `None` when the sandbox is off.
pub fn confinement_for(
    grants: &StageGrants,
    paths: &RunPaths,
    proxy: Option<(&Path, u16)>,
) -> Option<Confinement> {
    if grants.sandbox == policy::SandboxMode::Off {
        return None;
    }
    let existing = |list: &[PathGrant]| -> Vec<PathBuf> {
        let mut out = Vec::new();
        for g in list {
            for p in expand(g, paths) {
                if p.exists() {
                    push_unique(&mut out, p);
                }
            }
        }
        out
    };
    let mut read_write = existing(&grants.write);
    let mut read_exec = existing(&grants.read);
    read_exec.retain(|p| !read_write.contains(p));
    if read_exec.iter().any(|p| p == Path::new("/dev")) {
        for dev in WRITABLE_DEVICES {
            let dev = PathBuf::from(dev);
            if dev.exists() {
                push_unique(&mut read_write, dev);
            }
        }
    }
    let network = match &grants.network {
        Network::None => NetMode::Isolated,
        Network::All => NetMode::Host,
        Network::Hosts(_) => match proxy {
            Some((socket, port)) => NetMode::Proxy {
                socket: socket.to_path_buf(),
                port,
            },
            None => NetMode::Isolated,
        },
    };
    let mb = |v: Option<u64>| v.map(|m| m.saturating_mul(1024 * 1024));
    Some(Confinement {
        read_exec,
        read_write,
        hide: existing(&grants.deny),
        read_only: paths
            .protected
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect(),
        writable: paths
            .writable
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect(),
        network: Some(network),
        join: None,
        limits: RLimits {
            address_space: mb(grants.limits.memory_mb),
            processes: grants.limits.processes,
            file_size: mb(grants.limits.file_size_mb),
            open_files: grants.limits.open_files,
        },
    })
}

/// The port the proxy forwarder listens on inside a command's network namespace.
pub const PROXY_PORT: u16 = 3128;

/// A command's environment, built from scratch: the granted names from the runner's
/// environment, HOME and TMPDIR pointing at the private temp dir, proxy variables when the
/// network goes through the proxy. Stage `env` from the pipeline is added by the caller.
pub fn command_env(
    grants: &StageGrants,
    runner_env: &[(String, String)],
    tmp: &Path,
    confinement: Option<&Confinement>,
) -> Vec<(String, String)> {
    let mut env = policy::filter_env(&grants.env, runner_env.iter().cloned());
    let tmp = tmp.display().to_string();
    for key in ["HOME", "TMPDIR", "TMP", "TEMP"] {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), tmp.clone()));
    }
    if let Some(NetMode::Proxy { port, .. }) = confinement.and_then(|c| c.network.as_ref()) {
        let url = format!("http://127.0.0.1:{port}");
        for key in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            env.retain(|(k, _)| k != key);
            env.push((key.to_string(), url.clone()));
        }
        // `localhost` stays inside the sandbox; every other name and address, 127.0.0.1
        // included, means the host's side and goes through the proxy.
        env.push(("NO_PROXY".into(), "localhost".into()));
        env.push(("no_proxy".into(), "localhost".into()));
    }
    env
}

/// Where a named root appears inside a plugin.
fn plugin_guest_path(grant: &PathGrant, host: &Path) -> Option<String> {
    match grant {
        PathGrant::Root(NamedRoot::Repo) => Some("/repo".into()),
        PathGrant::Root(NamedRoot::Tmp) => Some("/tmp".into()),
        PathGrant::Root(NamedRoot::Artifacts) => Some("/artifacts".into()),
        // Plugins have no use for the OS or the toolchains.
        PathGrant::Root(NamedRoot::System | NamedRoot::Toolchains) => None,
        PathGrant::Path(_) => Some(host.display().to_string()),
    }
}

/// Maps a plugin's grant (the policy's, plus any `grants:` from pipeline.yml) to what the
/// wasm host enforces. A deny that falls inside a granted directory cannot be carved out of
/// a WASI preopen, so it refuses the grant rather than silently allowing it.
pub fn plugin_grants(
    policy_grant: &policy::Grant,
    extra: Option<&policy::Grant>,
    paths: &RunPaths,
    runner_env: &[(String, String)],
) -> Result<crate::sandbox::wasm::PluginGrants, String> {
    use crate::sandbox::wasm::{DEFAULT_FUEL, DEFAULT_MEMORY_BYTES, DirGrant, PluginGrants};
    let pick = |f: fn(&policy::Grant) -> &Vec<PathGrant>| -> Vec<PathGrant> {
        let mut list = f(policy_grant).clone();
        if let Some(e) = extra {
            list.extend(f(e).iter().cloned());
        }
        list
    };
    let deny: Vec<PathBuf> = pick(|g| &g.deny)
        .iter()
        .flat_map(|g| expand(g, paths))
        .collect();
    let mut dirs: Vec<DirGrant> = Vec::new();
    for (list, writable) in [(pick(|g| &g.read), false), (pick(|g| &g.write), true)] {
        for grant in &list {
            for host in expand(grant, paths) {
                let Some(guest) = plugin_guest_path(grant, &host) else {
                    continue;
                };
                if !host.is_dir() {
                    continue;
                }
                if deny.iter().any(|d| host.starts_with(d)) {
                    continue;
                }
                if let Some(d) = deny.iter().find(|d| d.starts_with(&host)) {
                    return Err(format!(
                        "cannot grant {} to a plugin: the denied {} is inside it",
                        host.display(),
                        d.display()
                    ));
                }
                match dirs.iter_mut().find(|g| g.guest == guest) {
                    Some(existing) => existing.writable |= writable,
                    None => dirs.push(DirGrant {
                        host,
                        guest,
                        writable,
                    }),
                }
            }
        }
    }
    let mut names = policy_grant.env.clone();
    let mut network = match &policy_grant.network {
        Some(Network::Hosts(h)) => h.clone(),
        _ => Vec::new(),
    };
    let mut limits = policy_grant.limits.clone();
    if let Some(e) = extra {
        names.extend(e.env.iter().cloned());
        if let Some(Network::Hosts(h)) = &e.network {
            network.extend(h.iter().cloned());
        }
        if e.limits.fuel.is_some() {
            limits.fuel = e.limits.fuel;
        }
        if e.limits.memory_mb.is_some() {
            limits.memory_mb = e.limits.memory_mb;
        }
    }
    Ok(PluginGrants {
        dirs,
        env: policy::filter_env(&names, runner_env.iter().cloned()),
        http: network,
        fuel: limits.fuel.unwrap_or(DEFAULT_FUEL),
        memory_bytes: limits.memory_mb.map_or(DEFAULT_MEMORY_BYTES, |m| {
            (m as usize).saturating_mul(1024 * 1024)
        }),
    })
}
