//! Kernel confinement, applied by the helper (see `helper`) around one command.
//!
//! Owns, in order: user + mount (+ network) namespaces or joining a session's; the mounts that
//! hide denied paths and make protected files read-only; loopback and the proxy forwarder's
//! listener; the Landlock ruleset and the seccomp filters, prepared before `fork` and applied
//! in the child between `fork` and `exec` together with rlimits and a cleared capability
//! bounding set. Must not: be used outside the helper (it changes the calling process's
//! namespaces), or continue when something the grants ask for cannot be enforced: every
//! failure is returned and the command is refused.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, Scope, make_bitflags, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use super::grants::{Confinement, NetMode, RLimits};

/// The uid commands run as inside their user namespace when the runner is root: anything but
/// 0, so that `execve` leaves them no capabilities.
const SANDBOX_UID: u32 = 1000;

type Result<T> = std::result::Result<T, String>;

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// What is ready to be applied in the child.
pub struct Prepared {
    ruleset: Option<RulesetCreated>,
    filters: Vec<BpfProgram>,
    limits: RLimits,
    /// The proxy forwarder's listener inside the command's network namespace.
    pub forwarder: Option<(TcpListener, std::path::PathBuf)>,
    /// The pids cgroup the helper and the command run in, removed when the helper ends.
    pub cgroup: Option<PidsCgroup>,
}

/// A pids cgroup made for one command. RLIMIT_NPROC does not bind processes whose real user
/// is root (the kernel exempts it), so when the runner is root the process limit is enforced
/// with the pids controller instead.
pub struct PidsCgroup {
    dir: std::path::PathBuf,
}

impl PidsCgroup {
    /// Where this process's pids cgroup lives (cgroup v1 `pids` hierarchy, or v2).
    pub fn current_base() -> Option<std::path::PathBuf> {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let rel = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "pids") {
                return Some(Path::new("/sys/fs/cgroup/pids").join(rel));
            }
            if controllers.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                let base = Path::new("/sys/fs/cgroup").join(rel);
                let delegated = std::fs::read_to_string(base.join("cgroup.subtree_control"))
                    .unwrap_or_default();
                if delegated.split_whitespace().any(|c| c == "pids") {
                    return Some(base);
                }
            }
        }
        None
    }

    /// Creates a cgroup limited to `max` processes and moves this process into it.
    pub fn enter(max: u64) -> Result<PidsCgroup> {
        let base = Self::current_base()
            .ok_or("no writable pids cgroup to enforce the process limit as root")?;
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let dir = base.join(format!("fsm-runner-{pid}"));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let group = PidsCgroup { dir };
        // The helper and its timer and forwarder threads count too.
        write_file(
            &group.dir.join("pids.max").display().to_string(),
            &(max + 8).to_string(),
        )?;
        write_file(
            &group.dir.join("cgroup.procs").display().to_string(),
            &pid.to_string(),
        )?;
        Ok(group)
    }

    /// Moves this process back to the parent group and removes the command's group.
    pub fn leave(self) {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::write(parent.join("cgroup.procs"), pid.to_string());
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The Landlock ABI the kernel offers (0 when Landlock is unavailable).
pub fn landlock_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attr and size 0 only queries.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if v < 0 { 0 } else { v as i32 }
}

/// Sets up namespaces and mounts in the calling (helper) process and prepares the rules the
/// child applies. The helper must still be single-threaded.
pub fn prepare(c: &Confinement) -> Result<Prepared> {
    // SAFETY: geteuid has no preconditions.
    let cgroup = match c.limits.processes {
        Some(max) if unsafe { libc::geteuid() } == 0 => Some(PidsCgroup::enter(max)?),
        _ => None,
    };
    enter_namespaces(c)?;
    mount_view(c)?;
    let forwarder = match &c.network {
        Some(NetMode::Isolated) => {
            loopback_up()?;
            None
        }
        Some(NetMode::Proxy { socket, port }) => {
            loopback_up()?;
            let listener = TcpListener::bind(("127.0.0.1", *port))
                .map_err(|e| format!("proxy forwarder: {e}"))?;
            Some((listener, socket.clone()))
        }
        Some(NetMode::Host) | None => None,
    };
    Ok(Prepared {
        ruleset: Some(landlock_ruleset(c)?),
        filters: seccomp_filters()?,
        limits: c.limits.clone(),
        forwarder,
        cgroup,
    })
}

fn write_file(path: &str, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))
}

fn enter_namespaces(c: &Confinement) -> Result<()> {
    if let Some(pid) = c.join {
        // Open both before entering either: once inside the session's user namespace this
        // process could no longer open the other.
        let mut files = Vec::new();
        for (ns, flag) in [("user", libc::CLONE_NEWUSER), ("net", libc::CLONE_NEWNET)] {
            let file = File::open(format!("/proc/{pid}/ns/{ns}"))
                .map_err(|e| format!("joining the session's {ns} namespace: {e}"))?;
            files.push((ns, flag, file));
        }
        for (ns, flag, file) in files {
            // SAFETY: setns on a namespace fd we just opened.
            if unsafe { libc::setns(file.as_raw_fd(), flag) } != 0 {
                return Err(os_err(&format!("setns({ns})")));
            }
        }
        // SAFETY: plain unshare of a mount namespace for this process.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(os_err("mount namespace (unshare CLONE_NEWNS)"));
        }
        return Ok(());
    }
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS;
    if !matches!(c.network, Some(NetMode::Host) | None) {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: unshare with namespace flags; the helper is single-threaded here.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(os_err(
            "user namespaces are not available (unshare CLONE_NEWUSER)",
        ));
    }
    let inner = if uid == 0 { SANDBOX_UID } else { uid };
    let inner_gid = if gid == 0 { SANDBOX_UID } else { gid };
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("{inner} {uid} 1\n"))?;
    write_file("/proc/self/gid_map", &format!("{inner_gid} {gid} 1\n"))?;
    Ok(())
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("path with a NUL byte: {}", p.display()))
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let src_c = src.map(cstr).transpose()?;
    let target_c = cstr(target)?;
    let fstype_c = fstype.map(|f| CString::new(f).unwrap_or_default());
    let data_c = data.map(|d| CString::new(d).unwrap_or_default());
    // SAFETY: every pointer is either null or a valid NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            src_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data_c
                .as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if r != 0 {
        return Err(os_err(&format!("mount on {}", target.display())));
    }
    Ok(())
}

/// The flags a bind remount must keep: in a user namespace, dropping a locked flag is refused.
fn locked_flags(path: &Path) -> Result<libc::c_ulong> {
    let c = cstr(path)?;
    // SAFETY: an all-zero statvfs is valid for statvfs to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(os_err(&format!("statvfs {}", path.display())));
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

fn bind(path: &Path, read_only: bool) -> Result<()> {
    mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None)?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | locked_flags(path)?;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    mount(None, path, None, flags, None)
}

fn mount_view(c: &Confinement) -> Result<()> {
    // Nothing done here may propagate back to the host.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    for path in &c.hide {
        if path.is_dir() {
            mount(
                None,
                path,
                Some("tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=4k,mode=0555"),
            )
            .map_err(|e| format!("hiding {}: {e}", path.display()))?;
        } else if path.exists() {
            mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(|e| format!("hiding {}: {e}", path.display()))?;
        }
    }
    for path in &c.read_only {
        bind(path, true).map_err(|e| format!("protecting {}: {e}", path.display()))?;
    }
    for path in &c.writable {
        bind(path, false).map_err(|e| format!("re-opening {}: {e}", path.display()))?;
    }
    Ok(())
}

fn loopback_up() -> Result<()> {
    // SAFETY: a datagram socket used only for one ioctl; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket for loopback"));
    }
    // SAFETY: an all-zero ifreq is valid; the name fits in IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS with a valid ifreq.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err(os_err("reading loopback flags"))
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
                Err(os_err("bringing loopback up"))
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

fn landlock_ruleset(c: &Confinement) -> Result<RulesetCreated> {
    let abi_version = landlock_abi();
    if abi_version < 1 {
        return Err("Landlock is not available in this kernel".into());
    }
    let abi = ABI::from(abi_version);
    let err = |e: landlock::RulesetError| format!("Landlock: {e}");
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    if abi_version >= 6 {
        ruleset = ruleset
            .scope(make_bitflags!(Scope::{Signal | AbstractUnixSocket}))
            .map_err(err)?;
    }
    let existing = |paths: &[std::path::PathBuf]| {
        paths
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect::<Vec<_>>()
    };
    ruleset
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(
            existing(&c.read_exec),
            AccessFs::from_read(abi),
        ))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            existing(&c.read_write),
            AccessFs::from_all(abi),
        ))
        .map_err(err)
}

/// Syscalls a test suite has no business making, refused with EPERM.
const DENIED_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_userfaultfd,
];

/// Namespace flags `clone` may not carry (a new namespace would be a way around the rules).
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

fn arch() -> Result<seccompiler::TargetArch> {
    std::env::consts::ARCH.try_into().map_err(|_| {
        format!(
            "seccomp: unsupported architecture {}",
            std::env::consts::ARCH
        )
    })
}

fn seccomp_filters() -> Result<Vec<BpfProgram>> {
    let err = |e: seccompiler::BackendError| format!("seccomp: {e}");
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED_SYSCALLS.iter().map(|s| (*s, Vec::new())).collect();
    // `clone` is refused when it asks for any namespace: one rule per flag, rules are OR'ed.
    let mut clone_rules = Vec::new();
    for bit in 0..64 {
        let flag = 1u64 << bit;
        if NAMESPACE_FLAGS & flag != 0 {
            let cond = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(err)?;
            clone_rules.push(SeccompRule::new(vec![cond]).map_err(err)?);
        }
    }
    denied.insert(libc::SYS_clone, clone_rules);
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let deny_filter =
        SeccompFilter::new(denied, SeccompAction::Allow, eperm, arch()?).map_err(err)?;
    // clone3 passes its flags in memory the filter cannot read: answer ENOSYS so libc falls
    // back to clone, which the filter above can inspect.
    let clone3: BTreeMap<i64, Vec<SeccompRule>> =
        [(libc::SYS_clone3, Vec::new())].into_iter().collect();
    let enosys = SeccompAction::Errno(libc::ENOSYS as u32);
    let clone3_filter =
        SeccompFilter::new(clone3, SeccompAction::Allow, enosys, arch()?).map_err(err)?;
    [deny_filter, clone3_filter]
        .into_iter()
        .map(|f| BpfProgram::try_from(f).map_err(err))
        .collect()
}

impl Prepared {
    /// Applies rlimits, drops the capability bounding set, restricts with Landlock and
    /// installs seccomp. Runs in the child between `fork` and `exec` (the helper is
    /// single-threaded when it forks, so allocation here is safe).
    pub fn apply_in_child(&mut self) -> std::io::Result<()> {
        let fail = |what: &str| std::io::Error::other(format!("sandbox: {what}"));
        set_limits(&self.limits)?;
        for cap in 0..64 {
            // SAFETY: PR_CAPBSET_DROP with an integer; EINVAL past the last capability is fine.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        }
        let ruleset = self
            .ruleset
            .take()
            .ok_or_else(|| fail("Landlock ruleset already used"))?;
        match ruleset.restrict_self() {
            Ok(RestrictionStatus {
                ruleset: RulesetStatus::FullyEnforced,
                no_new_privs: true,
                ..
            }) => {}
            Ok(status) => {
                return Err(fail(&format!(
                    "Landlock not fully enforced ({:?})",
                    status.ruleset
                )));
            }
            Err(e) => return Err(fail(&format!("Landlock: {e}"))),
        }
        for filter in &self.filters {
            seccompiler::apply_filter(filter).map_err(|e| fail(&format!("seccomp: {e}")))?;
        }
        Ok(())
    }
}

fn set_limits(limits: &RLimits) -> std::io::Result<()> {
    for (resource, value) in [
        (libc::RLIMIT_AS, limits.address_space),
        (libc::RLIMIT_NPROC, limits.processes),
        (libc::RLIMIT_FSIZE, limits.file_size),
        (libc::RLIMIT_NOFILE, limits.open_files),
    ] {
        let Some(v) = value else { continue };
        let lim = libc::rlimit {
            rlim_cur: v as libc::rlim_t,
            rlim_max: v as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid rlimit struct.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
