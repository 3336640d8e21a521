//! The sandbox helper: this binary re-executed as `fsm-runner __sandbox-helper`.
//!
//! Owns: starting the command in its own process group, its timeout, and killing every
//! process the command started (the helper is a child subreaper, so even daemons that
//! double-fork or start their own session come back to it). Must not: read or write anything
//! but fds 3 (spec and control) and 4 (report); it runs before any runtime or thread exists.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CommandSpec, Lifetime, TIMEOUT_RC, confine, proxy};
use crate::policy::rules::REFUSED_RC;

/// What the helper tells the runner on fd 4.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HelperReport {
    pub rc: i32,
    pub timed_out: bool,
    /// Why the command could not be started, when it could not.
    pub error: Option<String>,
    /// Processes are still running and held until the control channel closes.
    pub background: bool,
}

impl HelperReport {
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    fn refused(rc: i32, error: String) -> Self {
        HelperReport {
            rc,
            error: Some(error),
            ..HelperReport::default()
        }
    }
}

/// Entry point, called by `main` before anything else when `argv[1]` is the helper flag.
pub fn main() -> ! {
    // SAFETY: the runner placed the spec pipe at fd 3 and the report pipe at fd 4 for us;
    // nothing else in this fresh process owns them.
    let (control, mut report_pipe) = unsafe { (File::from_raw_fd(3), File::from_raw_fd(4)) };
    set_cloexec(3);
    set_cloexec(4);
    let mut control = BufReader::new(control);
    let (report, leftovers) = run(&mut control);
    let encoded = serde_json::to_vec(&report).unwrap_or_default();
    let _ = report_pipe.write_all(&encoded);
    drop(report_pipe);
    if report.background {
        // Later commands of the run join this helper's namespaces to reach its services,
        // which needs /proc/<pid>/ns to be openable by the runner's user. Nothing secret is
        // left in this process: the runner's environment never reached it.
        prctl(libc::PR_SET_DUMPABLE, 1);
        // Hold the session's processes until the runner closes the control channel.
        let mut sink = Vec::new();
        let _ = control.read_to_end(&mut sink);
    }
    if let Some(group) = leftovers.group {
        kill_all_descendants(group);
    }
    if let Some(cgroup) = leftovers.cgroup {
        cgroup.leave();
    }
    std::process::exit(0)
}

fn set_cloexec(fd: i32) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(option, arg, 0, 0, 0);
    }
}

/// What the helper must clean up after reporting.
#[derive(Default)]
struct Leftovers {
    group: Option<i32>,
    cgroup: Option<confine::PidsCgroup>,
}

fn refused(rc: i32, error: String) -> (HelperReport, Leftovers) {
    (HelperReport::refused(rc, error), Leftovers::default())
}

/// Reads the spec from the control channel and runs it.
fn run(control: &mut BufReader<File>) -> (HelperReport, Leftovers) {
    let mut line = String::new();
    if let Err(e) = control.read_line(&mut line) {
        return refused(125, format!("cannot read the command spec: {e}"));
    }
    let spec: CommandSpec = match serde_json::from_str(&line) {
        Ok(spec) => spec,
        Err(e) => return refused(125, format!("bad command spec: {e}")),
    };
    prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        return refused(125, "the runner exited".into());
    }
    run_spec(&spec)
}

/// Runs `spec` with this process as the helper, its stdio passed straight to the command,
/// and cleans up after it. For `sandbox exec`, where the runner has nothing else to do: it
/// saves re-executing itself. The caller must be single-threaded (namespaces require it).
pub fn run_here(spec: &CommandSpec) -> (i32, Option<String>) {
    let (report, leftovers) = run_spec(spec);
    if let Some(group) = leftovers.group {
        kill_all_descendants(group);
    }
    if let Some(cgroup) = leftovers.cgroup {
        cgroup.leave();
    }
    (report.rc, report.error)
}

/// Confines (when asked), starts and waits for the command; returns the report and what to
/// clean up.
fn run_spec(spec: &CommandSpec) -> (HelperReport, Leftovers) {
    prctl(libc::PR_SET_DUMPABLE, 0);
    prctl(libc::PR_SET_CHILD_SUBREAPER, 1);

    let mut prepared = match spec.confinement.as_ref().map(confine::prepare).transpose() {
        Ok(p) => p,
        Err(e) => return refused(REFUSED_RC, format!("sandbox_unavailable: {e}")),
    };
    let forwarder = prepared.as_mut().and_then(|p| p.forwarder.take());
    let mut leftovers = Leftovers {
        group: None,
        cgroup: prepared.as_mut().and_then(|p| p.cgroup.take()),
    };
    let mut cmd = command(spec);
    if let Some(mut prepared) = prepared {
        // SAFETY: the helper is single-threaded here, so the child may allocate; everything
        // else `apply_in_child` does is a plain syscall.
        unsafe {
            cmd.pre_exec(move || prepared.apply_in_child());
        }
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.to_string().starts_with("sandbox: ") => {
            return (
                HelperReport::refused(REFUSED_RC, format!("sandbox_unavailable: {e}")),
                leftovers,
            );
        }
        Err(e) => {
            let rc = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let program = spec.argv.first().map_or("", String::as_str);
            let error = format!("cannot start `{program}` in `{}`: {e}", spec.cwd.display());
            return (HelperReport::refused(rc, error), leftovers);
        }
    };
    let group = child.id() as i32;
    leftovers.group = Some(group);
    if let Some((listener, socket)) = forwarder {
        proxy::forward(listener, socket);
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    if let Some(timeout) = spec.timeout {
        start_timer(timeout, group, timed_out.clone(), finished.clone());
    }
    let status = child.wait();
    finished.store(true, Ordering::SeqCst);
    let mut report = HelperReport::default();
    match status {
        Ok(status) => {
            report.rc = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(125);
        }
        Err(e) => report = HelperReport::refused(125, format!("cannot wait for the command: {e}")),
    }
    if timed_out.load(Ordering::SeqCst) {
        report.rc = TIMEOUT_RC;
        report.timed_out = true;
    }
    if spec.lifetime == Lifetime::Session && !report.timed_out {
        reap_exited();
        report.background = has_children();
    }
    (report, leftovers)
}

fn command(spec: &CommandSpec) -> Command {
    let (program, args) = match spec.argv.split_first() {
        Some((p, a)) => (p.as_str(), a),
        None => ("", &[][..]),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0);
    // SAFETY: only prctl, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    cmd
}

fn start_timer(
    timeout: Duration,
    group: i32,
    timed_out: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        if !finished.load(Ordering::SeqCst) {
            timed_out.store(true, Ordering::SeqCst);
            // SAFETY: kill with a negative pid signals the command's process group.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
    });
}

/// Reaps every child that has already exited, without blocking.
fn reap_exited() {
    // SAFETY: waitpid with WNOHANG on any child; the status is discarded.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// Whether any child (exited or not) is left.
fn has_children() -> bool {
    // SAFETY: waitpid with WNOHANG only reports; it reaps nothing when it returns 0.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    r >= 0
}

/// Kills the command's group, then every process that is (or becomes, by reparenting to this
/// subreaper) a child of the helper, until none is left.
fn kill_all_descendants(group: i32) {
    loop {
        // SAFETY: signalling a process group we created; ESRCH is fine.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        reap_exited();
        let children = live_children();
        if children.is_empty() {
            if !has_children() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for pid in children {
            // SAFETY: signalling our own child and the group it may lead.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// The helper's direct children, from /proc.
fn live_children() -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    pids
}
