//! Checks made before anything is loaded: privileges, kernel features,
//! tracefs. Each failure names exactly what is missing.

use std::path::Path;

use aya::maps::MapType;

use super::tracefs::TRACEFS;
use crate::error::{Error, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
fn effective_caps() -> u64 {
    super::proc::status_field("self", "CapEff")
        .ok()
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0)
}

/// mmtrace needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which root has).
pub fn check_privileges() -> Result<()> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    Err(Error::Privileges(format!(
        "mmtrace must run as root or with CAP_BPF and CAP_PERFMON (missing: {})",
        missing.join(", ")
    )))
}

/// Whether a tracefs is mounted at [`TRACEFS`].
fn tracefs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some(TRACEFS) && f.next() == Some("tracefs")
        })
    })
}

/// tracefs, where aya reads tracepoint ids, mounted and readable; mounted
/// here if it is not.
pub fn ensure_tracefs() -> Result<()> {
    let events = Path::new(TRACEFS).join("events");
    match std::fs::read_dir(&events) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Error::Privileges(format!(
                "tracefs is mounted at {TRACEFS} but this user cannot read it ({e}): \
                 run mmtrace as root, or give it read access to {}",
                events.display()
            )))
        }
        Err(_) if tracefs_mounted() => {
            return Err(Error::Kernel(format!(
                "tracefs is mounted at {TRACEFS} but has no events directory"
            )))
        }
        Err(_) => {}
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: constant, NUL-terminated arguments.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        let how = format!("mount it with `mount -t tracefs nodev {TRACEFS}`");
        return Err(if err.kind() == std::io::ErrorKind::PermissionDenied {
            Error::Privileges(format!(
                "tracefs is not mounted at {TRACEFS}, and mounting it needs CAP_SYS_ADMIN \
                 ({err}): run mmtrace as root, or {how}"
            ))
        } else {
            Error::Kernel(format!(
                "tracefs is not mounted at {TRACEFS} and mounting it failed ({err}); {how}"
            ))
        });
    }
    if !events.is_dir() {
        return Err(Error::Kernel(format!(
            "tracefs mounted at {TRACEFS} has no events directory"
        )));
    }
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(())
}

/// BTF and ring buffers: without either mmtrace cannot work.
pub fn check_kernel() -> Result<()> {
    if !Path::new(crate::kernel::btf::VMLINUX_BTF).exists() {
        return Err(Error::Kernel(format!(
            "this kernel has no BTF ({} is missing): mmtrace needs CONFIG_DEBUG_INFO_BTF=y",
            crate::kernel::btf::VMLINUX_BTF
        )));
    }
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::Kernel(
                "this kernel has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8+)".into(),
            ))
        }
        Err(e) => {
            return Err(Error::Kernel(format!(
                "cannot probe for BPF ring buffer support: {e}"
            )))
        }
    }
    Ok(())
}

/// The tgid of a pid (a thread id names its process), or a clear error.
pub fn process_of(pid: u32) -> Result<u32> {
    super::proc::tgid(pid).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Usage(format!("no process with pid {pid}")),
        _ => Error::Usage(format!("cannot read the process of pid {pid}: {e}")),
    })
}
