//! `fsm-runner doctor`: what this machine can enforce.

use serde::Serialize;

use super::{DoctorArgs, exit};
use crate::sandbox::confine::{PidsCgroup, landlock_abi};

#[derive(Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    needed_for: &'static str,
}

/// Tries `unshare(flags)` in a forked child, so this process keeps its namespaces.
fn can_unshare(flags: libc::c_int) -> bool {
    // SAFETY: the runner is single-threaded here; the child only calls unshare and _exit.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let code = if libc::unshare(flags) == 0 { 0 } else { 1 };
            libc::_exit(code);
        }
        if pid < 0 {
            return false;
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}

fn checks() -> Vec<Check> {
    let abi = landlock_abi();
    // SAFETY: PR_GET_SECCOMP only queries.
    let seccomp_mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let seccomp = seccomp_mode >= 0
        && std::path::Path::new("/proc/sys/kernel/seccomp/actions_avail").exists();
    let userns = can_unshare(libc::CLONE_NEWUSER);
    let mountns = can_unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS);
    let netns = can_unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET);
    let cgroup2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let pids_cgroup = PidsCgroup::current_base();
    let process_limits = !root || pids_cgroup.is_some();
    vec![
        Check {
            name: "landlock",
            ok: abi >= 1,
            detail: if abi >= 1 {
                format!(
                    "ABI {abi}{}",
                    if abi >= 6 {
                        " (signal and abstract-socket scoping)"
                    } else {
                        ""
                    }
                )
            } else {
                "not available".into()
            },
            needed_for: "every confined command (filesystem grants)",
        },
        Check {
            name: "user namespaces",
            ok: userns,
            detail: if userns {
                "available".into()
            } else {
                "unshare(CLONE_NEWUSER) refused".into()
            },
            needed_for: "every confined command (no capabilities, private mounts)",
        },
        Check {
            name: "mount namespaces",
            ok: mountns,
            detail: if mountns {
                "available".into()
            } else {
                "refused".into()
            },
            needed_for: "read-only protected files, hidden secrets (deny lists)",
        },
        Check {
            name: "network namespaces",
            ok: netns,
            detail: if netns {
                "available".into()
            } else {
                "refused".into()
            },
            needed_for: "network: none and host allowlists",
        },
        Check {
            name: "seccomp",
            ok: seccomp,
            detail: if seccomp {
                "filter mode available".into()
            } else {
                "not available".into()
            },
            needed_for: "denying ptrace, bpf, io_uring, mount, namespaces, kernel modules",
        },
        Check {
            name: "process limits",
            ok: process_limits,
            detail: match (root, &pids_cgroup) {
                (false, _) => "RLIMIT_NPROC (not running as root)".into(),
                (true, Some(base)) => format!("pids cgroup under {}", base.display()),
                (true, None) => {
                    "running as root and no writable pids cgroup: RLIMIT_NPROC does not bind root"
                        .into()
                }
            },
            needed_for: "limits.processes (fork bombs)",
        },
        Check {
            name: "cgroups v2",
            ok: cgroup2,
            detail: if cgroup2 {
                "mounted at /sys/fs/cgroup".into()
            } else {
                "not mounted".into()
            },
            needed_for: "nothing yet (limits use rlimits); informational",
        },
    ]
}

pub fn run(args: &DoctorArgs) -> anyhow::Result<u8> {
    let checks = checks();
    let enforce_ok = checks
        .iter()
        .filter(|c| c.name != "cgroups v2")
        .all(|c| c.ok);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "checks": checks, "sandbox_enforce_supported": enforce_ok })
        );
        return Ok(exit::OK);
    }
    for c in &checks {
        println!(
            "{:<20} {:<4} {:<45} needed for: {}",
            c.name,
            if c.ok { "ok" } else { "NO" },
            c.detail,
            c.needed_for
        );
    }
    if enforce_ok {
        println!(
            "\nsandbox: policies with `sandbox: enforce` (the default) can be enforced on this machine."
        );
    } else {
        println!(
            "\nsandbox: this machine cannot enforce every grant; stages that need a missing feature are refused."
        );
        println!(
            "hint: fix the missing features, or run with `--sandbox off` (or `sandbox: off` in the policy) to run unconfined."
        );
    }
    Ok(exit::OK)
}
