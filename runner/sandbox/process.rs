//! The runner's side of a sandboxed command: start the helper, hand it the spec, pump the
//! output pipes without ever blocking on them, and collect the helper's report.
//!
//! Protocol: the helper reads one JSON line (the spec) from fd 3, a socket; the runner keeps
//! its end open as the session's control channel (closing it ends the session). The helper
//! writes one JSON report to fd 4 and closes it when the command has ended.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::helper::HelperReport;
use super::{Capture, CommandOutcome, CommandSpec, HELPER_ARG, Lifetime, SandboxError};

/// How long to keep reading output after the helper reported, for bytes still in flight.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Extra time the helper gets beyond the command's own timeout before the runner kills it.
const HELPER_BACKSTOP: Duration = Duration::from_secs(30);
/// A larger pipe means fewer wake-ups when a command prints a lot.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Processes a `Session` command left running, with the helper that holds them. Dropping it
/// closes the control channel; the helper then kills them all and exits.
pub struct Background {
    helper: Child,
    control: Option<UnixStream>,
    drains: Vec<JoinHandle<()>>,
}

impl Background {
    /// The helper holding the session's processes (and namespaces).
    pub fn helper_pid(&self) -> i32 {
        self.helper.id() as i32
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.control.take());
        let _ = self.helper.wait();
        for drain in self.drains.drain(..) {
            let _ = drain.join();
        }
    }
}

/// A pipe whose ends sit at fds >= 10 so that placing them at 3 and 4 cannot clobber them.
fn high_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((dup_high(r)?, dup_high(w)?))
}

/// A connected socket pair at fds >= 10.
fn high_socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = UnixStream::pair()?;
    Ok((dup_high(a.into())?, dup_high(b.into())?))
}

fn dup_high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl on an fd we own; the new fd is returned to an OwnedFd at once.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: plain fcntl flag updates on an fd the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
}

fn helper_command(
    spec: &CommandSpec,
    spec_read: RawFd,
    report_write: RawFd,
) -> Result<Command, SandboxError> {
    let exe = std::env::current_exe().map_err(SandboxError::CurrentExe)?;
    let mut cmd = Command::new(exe);
    cmd.arg(HELPER_ARG)
        .env_clear()
        .stdin(if spec.interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only dup2, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(spec_read, 3) < 0 || libc::dup2(report_write, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

pub(super) fn run(
    spec: &CommandSpec,
    output_cap: usize,
) -> Result<(CommandOutcome, Option<Background>), SandboxError> {
    // A socket, not a pipe: writes to it never raise SIGPIPE if the helper is gone.
    let (spec_read, spec_write) = high_socketpair()?;
    let (report_read, report_write) = high_pipe()?;
    let mut cmd = helper_command(spec, spec_read.as_raw_fd(), report_write.as_raw_fd())?;
    let started = Instant::now();
    let mut helper = cmd.spawn().map_err(SandboxError::Spawn)?;
    drop((spec_read, report_write));

    let mut control = UnixStream::from(spec_write);
    let mut line = serde_json::to_vec(spec).map_err(|e| SandboxError::Io(e.into()))?;
    line.push(b'\n');
    if let Err(e) = control.write_all(&line) {
        let _ = helper.kill();
        let _ = helper.wait();
        return Err(SandboxError::Io(e));
    }
    let control = match spec.lifetime {
        Lifetime::Command => {
            drop(control);
            None
        }
        Lifetime::Session => Some(control),
    };

    let (Some(stdout), Some(stderr)) = (helper.stdout.take(), helper.stderr.take()) else {
        return Err(SandboxError::HelperDied("no output pipes".into()));
    };
    let backstop = spec.timeout.map(|t| started + t + HELPER_BACKSTOP);
    let mut pump = Pump::new(
        [
            File::from(OwnedFd::from(stdout)),
            File::from(OwnedFd::from(stderr)),
        ],
        report_read,
        output_cap,
    );
    let helper_ended = pump.run(backstop, &mut helper)?;
    let duration = started.elapsed();
    let report = match HelperReport::decode(&pump.report) {
        Some(report) => report,
        None => {
            let _ = helper.kill();
            let status = helper.wait()?;
            return Err(SandboxError::HelperDied(format!(
                "{status}; {helper_ended}"
            )));
        }
    };
    let [mut stdout, mut stderr] = pump.streams.map(|s| (s.capture, s.file));
    if let Some(error) = &report.error {
        stderr.0.push(format!("fsm-runner: {error}\n").as_bytes());
    }
    let outcome = CommandOutcome {
        rc: report.rc,
        timed_out: report.timed_out,
        duration,
        stdout: std::mem::replace(&mut stdout.0, Capture::new(0)),
        stderr: std::mem::replace(&mut stderr.0, Capture::new(0)),
    };
    if !report.background {
        drop(control);
        helper.wait()?;
        return Ok((outcome, None));
    }
    let drains = [stdout.1, stderr.1]
        .into_iter()
        .flatten()
        .map(|file| std::thread::spawn(move || drain_until_closed(file)))
        .collect();
    let background = Background {
        helper,
        control,
        drains,
    };
    Ok((outcome, Some(background)))
}

/// One output pipe being read.
struct Stream {
    file: Option<File>,
    capture: Capture,
}

/// Reads both output pipes and the report pipe with `poll`, so that neither a silent command
/// nor a grandchild holding a pipe open can block the runner.
struct Pump {
    streams: [Stream; 2],
    report_file: Option<File>,
    report: Vec<u8>,
}

impl Pump {
    fn new(files: [File; 2], report: OwnedFd, cap: usize) -> Self {
        for f in &files {
            set_nonblocking(f.as_raw_fd());
        }
        let report = File::from(report);
        set_nonblocking(report.as_raw_fd());
        Pump {
            streams: files.map(|f| Stream {
                file: Some(f),
                capture: Capture::new(cap),
            }),
            report_file: Some(report),
            report: Vec::new(),
        }
    }

    /// Pumps until the report is in and the outputs are closed (or quiet for the grace
    /// period). Returns how the pumping ended, for error messages.
    fn run(
        &mut self,
        backstop: Option<Instant>,
        helper: &mut Child,
    ) -> Result<&'static str, SandboxError> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut grace_until: Option<Instant> = None;
        loop {
            if self.report_file.is_none() && grace_until.is_none() {
                if HelperReport::decode(&self.report).is_some_and(|r| r.background) {
                    // The command has exited, so its own output is already in the pipes;
                    // what stays open belongs to the session's services.
                    self.read_available(&mut buf);
                    return Ok("finished; services keep running");
                }
                grace_until = Some(Instant::now() + DRAIN_GRACE);
            }
            let outputs_open = self.streams.iter().any(|s| s.file.is_some());
            if !outputs_open && self.report_file.is_none() {
                return Ok("finished");
            }
            let now = Instant::now();
            if grace_until.is_some_and(|g| now >= g) {
                // Output pipes held open by processes that outlive the command (a session
                // command's services) are left to the background drain.
                self.read_available(&mut buf);
                return Ok("finished with output still open");
            }
            if backstop.is_some_and(|b| now >= b) {
                let _ = helper.kill();
                return Ok("helper killed after its deadline");
            }
            let wait = [grace_until, backstop]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(now));
            self.poll_once(wait, &mut buf)?;
        }
    }

    fn fds(&self) -> [RawFd; 3] {
        let fd = |f: &Option<File>| f.as_ref().map_or(-1, |f| f.as_raw_fd());
        [
            fd(&self.streams[0].file),
            fd(&self.streams[1].file),
            fd(&self.report_file),
        ]
    }

    fn poll_once(&mut self, wait: Option<Duration>, buf: &mut [u8]) -> Result<(), SandboxError> {
        let mut pollfds = self.fds().map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let timeout_ms = wait.map_or(-1, |w| w.as_millis().clamp(1, i32::MAX as u128) as i32);
        // SAFETY: pollfds is a valid array of three pollfd structs; negative fds are ignored.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), 3, timeout_ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(err.into());
        }
        if pollfds.iter().any(|p| p.revents != 0) {
            self.read_available(buf);
        }
        Ok(())
    }

    /// Reads whatever every open pipe holds right now; closes pipes at end of file.
    fn read_available(&mut self, buf: &mut [u8]) {
        for stream in &mut self.streams {
            let capture = &mut stream.capture;
            if read_nonblocking(&mut stream.file, buf, |chunk| capture.push(chunk)) {
                stream.file = None;
            }
        }
        let report = &mut self.report;
        if read_nonblocking(&mut self.report_file, buf, |chunk| {
            // The report is a few hundred bytes; anything past 64 KiB is not ours.
            if report.len() < 64 * 1024 {
                report.extend_from_slice(chunk);
            }
        }) {
            self.report_file = None;
        }
    }
}

/// Reads until the pipe would block; returns true at end of file or on an error.
fn read_nonblocking(file: &mut Option<File>, buf: &mut [u8], mut sink: impl FnMut(&[u8])) -> bool {
    let Some(f) = file.as_mut() else {
        return false;
    };
    loop {
        match f.read(buf) {
            Ok(0) => return true,
            Ok(n) => sink(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Keeps reading (and discarding) the output of a session's background processes so they
/// never block on a full pipe, until the helper kills them and the pipe closes.
fn drain_until_closed(mut file: File) {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: fcntl flag update on an fd we own. Blocking reads are right here: the helper
    // closes every writer when the session ends.
    let blocking = unsafe {
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) >= 0
    };
    while blocking && matches!(file.read(&mut buf), Ok(n) if n > 0) {}
}
