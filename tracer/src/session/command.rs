//! Starting a command held: forked, but stopped before exec until its pid
//! is in the kernel's filter, so nothing it does is missed.

use std::{
    ffi::{CString, OsStr, OsString},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// Finds the program as execvp would, or says why it cannot be run.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf> {
    let bytes = program.as_bytes();
    let candidates: Vec<PathBuf> = if bytes.contains(&b'/') {
        vec![PathBuf::from(program)]
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .collect()
    };
    let shown = program.to_string_lossy();
    for c in &candidates {
        if let Ok(meta) = std::fs::metadata(c) {
            if meta.is_dir() {
                if bytes.contains(&b'/') {
                    return Err(Error::Usage(format!(
                        "cannot execute `{shown}`: is a directory"
                    )));
                }
                continue;
            }
            if executable(c) {
                return Ok(c.clone());
            }
            return Err(Error::Usage(format!(
                "cannot execute `{}`: permission denied",
                c.display()
            )));
        }
    }
    if bytes.contains(&b'/') {
        Err(Error::Usage(format!(
            "cannot execute `{shown}`: no such file"
        )))
    } else {
        Err(Error::Usage(format!(
            "cannot execute `{shown}`: not found in PATH"
        )))
    }
}

fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// A forked child waiting to exec.
pub struct HeldChild {
    pub pid: u32,
    go: libc::c_int,
    exec_err: libc::c_int,
    released: bool,
}

fn pipe_cloexec() -> Result<(libc::c_int, libc::c_int)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(anyhow::Error::from(std::io::Error::last_os_error())
            .context("pipe2")
            .into());
    }
    Ok((fds[0], fds[1]))
}

/// Forks a child that execs `argv` once released.
///
/// Must be called while the process has a single thread.
pub fn spawn_held(program: &Path, argv: &[OsString]) -> Result<HeldChild> {
    let c_program = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| Error::Usage("the command contains a NUL byte".into()))?;
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::Usage("an argument contains a NUL byte".into()))?;
    let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    c_argv.push(std::ptr::null());

    let (go_r, go_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    // SAFETY: single-threaded; the child only calls async-signal-safe
    // functions (read, execv, write, _exit) on memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(anyhow::Error::from(std::io::Error::last_os_error())
            .context("fork")
            .into());
    }
    if pid == 0 {
        unsafe {
            libc::close(go_w);
            libc::close(err_r);
            let mut b = 0u8;
            let n = libc::read(go_r, (&mut b as *mut u8).cast(), 1);
            if n != 1 {
                // mmtrace went away before releasing us: the command never
                // ran.
                libc::_exit(127);
            }
            crate::session::signals::unblock_all_in_child();
            libc::execv(c_program.as_ptr(), c_argv.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(err_w, (&errno as *const i32).cast(), 4);
            libc::_exit(127);
        }
    }
    // SAFETY: closing our copies of the child's ends.
    unsafe {
        libc::close(go_r);
        libc::close(err_w);
    }
    Ok(HeldChild {
        pid: pid as u32,
        go: go_w,
        exec_err: err_r,
        released: false,
    })
}

impl HeldChild {
    /// Lets the child exec; returns once exec succeeded or failed.
    pub fn release(&mut self, program: &Path) -> Result<()> {
        self.released = true;
        let b = 1u8;
        // SAFETY: writing one byte from a valid buffer to our pipe end.
        unsafe {
            libc::write(self.go, (&b as *const u8).cast(), 1);
            libc::close(self.go);
        }
        let mut errno = 0i32;
        // SAFETY: reading at most 4 bytes into an i32.
        let n = unsafe { libc::read(self.exec_err, (&mut errno as *mut i32).cast(), 4) };
        unsafe { libc::close(self.exec_err) };
        if n == 4 {
            let err = std::io::Error::from_raw_os_error(errno);
            return Err(Error::Usage(format!(
                "cannot execute `{}`: {err}",
                program.display()
            )));
        }
        Ok(())
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        if !self.released {
            // Never released (setup failed): closing the pipe makes it exit.
            unsafe {
                libc::close(self.go);
                libc::close(self.exec_err);
                let mut status = 0;
                libc::waitpid(self.pid as i32, &mut status, 0);
            }
        }
    }
}

/// Waits for the child; returns its wait status.
pub fn wait(pid: u32) -> std::io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if rc == pid as i32 {
            return Ok(status);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The exit code mmtrace gives for a child's wait status (as a shell does).
pub fn exit_code_of(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}
