//! The human text format: one line per event, aligned columns.
//!
//! ```text
//!   12.345678  python3         1234/1236   mmap      NULL 1.0 MiB rw- MAP_PRIVATE|MAP_ANONYMOUS = 0x7f3a12340000
//! ```
//!
//! Everything that comes from a traced process (comm, paths) goes through
//! [`escape_text`], so a line never holds a control character beyond the
//! escape codes of our own colours (and none at all without colour).

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};

use super::json::Names;
use super::names::{
    advice_str, dev_str, errno_name, escape_text, escape_text_into, hex, human_size,
    mlock2_flags_str, mlockall_flags_str, mremap_flags_str, prot_str, remap_file_pages_flags_str,
    shmat_flags_str, signal_name, uffd_mode_str,
};
use crate::event::{split_status, Body, Event, StackSource, SysResult};

/// The colours of the parts of a line.
struct Palette {
    time: Style,
    syscall: Style,
    fault: Style,
    process: Style,
    error: Style,
    lost: Style,
}

const PALETTE: Palette = Palette {
    time: Style::new().dimmed(),
    syscall: Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Cyan))),
    fault: Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Yellow))),
    process: Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Green))),
    error: Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red))),
    lost: Style::new()
        .bold()
        .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red))),
};

/// Writes `text` to `out`, in `style` when colouring.
pub(super) fn styled(out: &mut String, color: bool, style: Style, text: &str) {
    if color {
        let _ = write!(out, "{}{text}{}", style.render(), style.render_reset());
    } else {
        out.push_str(text);
    }
}

/// "12.345678": seconds with 6 decimals, from ns.
pub(super) fn seconds(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, ns % 1_000_000_000 / 1_000)
}

/// The style of an event's name.
fn family_style(body: &Body) -> Style {
    match body {
        Body::Brk { .. }
        | Body::Mmap { .. }
        | Body::Munmap { .. }
        | Body::Mremap { .. }
        | Body::Mprotect { .. }
        | Body::Madvise { .. }
        | Body::PkeyMprotect { .. }
        | Body::Mlock { .. }
        | Body::Mlock2 { .. }
        | Body::Munlock { .. }
        | Body::Mlockall { .. }
        | Body::Munlockall { .. }
        | Body::Mseal { .. }
        | Body::Shmat { .. }
        | Body::Shmdt { .. }
        | Body::RemapFilePages { .. }
        | Body::Userfaultfd { .. } => PALETTE.syscall,
        Body::Fault { .. } | Body::FaultSummary { .. } | Body::Stack { .. } => PALETTE.fault,
        Body::Exec { .. } | Body::Fork { .. } | Body::Exit { .. } => PALETTE.process,
        Body::OomKill { .. } => PALETTE.error,
        Body::Lost { .. } => PALETTE.lost,
    }
}

/// Appends `s` right-aligned in `width` characters.
fn push_right(out: &mut String, s: &str, width: usize) {
    for _ in s.chars().count()..width {
        out.push(' ');
    }
    out.push_str(s);
}

/// Pads what was appended to `out` since `start` to `width` characters
/// (left-aligned).
fn pad_from(out: &mut String, start: usize, width: usize) {
    let n = if out.as_bytes()[start..].is_ascii() {
        out.len() - start
    } else {
        out[start..].chars().count()
    };
    for _ in n..width {
        out.push(' ');
    }
}

fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Digits are ASCII.
    out.push_str(std::str::from_utf8(&buf[at..]).unwrap_or_default());
}

fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

/// `0x` and lowercase hex digits, as `{:#x}` writes them.
fn push_hex(out: &mut String, mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 18];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    at -= 2;
    buf[at] = b'0';
    buf[at + 1] = b'x';
    out.push_str(std::str::from_utf8(&buf[at..]).unwrap_or_default());
}

/// Appends " = <value>" or " = -ERRNO" (in red).
fn result(out: &mut String, color: bool, ret: SysResult, as_addr: bool) {
    out.push_str(" = ");
    match ret {
        SysResult::Ok(v) if as_addr => push_hex(out, v),
        SysResult::Ok(v) => push_u64(out, v),
        SysResult::Err(e) => styled(out, color, PALETTE.error, &format!("-{}", errno_name(e))),
    }
}

/// Appends one line (with its newline) for `ev` to `out`. Times print
/// relative to `start_ns`, saturating at 0.
///
/// Written piece by piece into `out`, with no allocation for the common
/// events: numbers by hand, names of flags and sizes from `names`.
pub(super) fn format_event(
    out: &mut String,
    ev: &Event,
    color: bool,
    start_ns: u64,
    names: &mut Names,
) {
    let ns = ev.ts_ns.saturating_sub(start_ns);
    // "12.345678": seconds with 6 decimals.
    let mut t = [0u8; 32];
    let mut at = t.len();
    let mut micros = ns % 1_000_000_000 / 1_000;
    for _ in 0..6 {
        at -= 1;
        t[at] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    at -= 1;
    t[at] = b'.';
    let mut secs = ns / 1_000_000_000;
    loop {
        at -= 1;
        t[at] = b'0' + (secs % 10) as u8;
        secs /= 10;
        if secs == 0 {
            break;
        }
    }
    let t = std::str::from_utf8(&t[at..]).unwrap_or_default();
    if color {
        let _ = write!(out, "{}", PALETTE.time.render());
        push_right(out, t, 11);
        let _ = write!(out, "{}", PALETTE.time.render_reset());
    } else {
        push_right(out, t, 11);
    }
    out.push_str("  ");
    let start = out.len();
    escape_text_into(out, &ev.comm);
    pad_from(out, start, 15);
    out.push(' ');
    let start = out.len();
    push_u64(out, u64::from(ev.pid));
    out.push('/');
    push_u64(out, u64::from(ev.tid));
    pad_from(out, start, 11);
    out.push(' ');
    let style = family_style(&ev.body);
    if color {
        let _ = write!(out, "{}", style.render());
    }
    let start = out.len();
    out.push_str(ev.body.name());
    pad_from(out, start, 9);
    if color {
        let _ = write!(out, "{}", style.render_reset());
    }
    out.push(' ');
    details(out, ev, color, names);
    out.push('\n');
}

fn details(out: &mut String, ev: &Event, color: bool, names: &mut Names) {
    match &ev.body {
        Body::Brk {
            requested,
            old_brk,
            new_brk,
            ..
        } => {
            if *requested == 0 {
                out.push_str("query");
            } else {
                push_hex(out, *requested);
            }
            out.push_str(" : ");
            // Unknown: see crate::event::breaks.
            match old_brk {
                Some(v) => push_hex(out, *v),
                None => out.push('?'),
            }
            out.push_str(" -> ");
            push_hex(out, *new_brk);
            // brk returns the requested break on success, the old one on
            // failure.
            if *requested != 0 && new_brk != requested {
                out.push(' ');
                styled(out, color, PALETTE.error, "(failed)");
            }
        }
        Body::Mmap {
            addr,
            len,
            prot,
            flags,
            fd,
            offset,
            ret,
            file,
        } => {
            if *addr == 0 {
                out.push_str("NULL");
            } else {
                push_hex(out, *addr);
            }
            out.push(' ');
            out.push_str(names.size(*len));
            out.push(' ');
            out.push_str(names.prot(*prot));
            out.push(' ');
            out.push_str(names.mmap_flags(*flags));
            if *flags & libc::MAP_ANONYMOUS as u64 == 0 {
                out.push_str(" fd=");
                push_i64(out, i64::from(*fd as i32));
                out.push_str(" off=");
                push_hex(out, *offset);
            }
            if let Some(f) = file {
                let _ = write!(
                    out,
                    " {}{} ({} {})",
                    if f.truncated { "..." } else { "" },
                    escape_text(&f.path),
                    dev_str(f.dev_major, f.dev_minor),
                    f.ino
                );
            }
            result(out, color, *ret, true);
        }
        Body::Munmap { addr, len, ret } => {
            push_hex(out, *addr);
            out.push(' ');
            out.push_str(names.size(*len));
            result(out, color, *ret, false);
        }
        Body::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            new_addr,
            ret,
        } => {
            let _ = write!(
                out,
                "{} {} -> {}",
                hex(*old_addr),
                human_size(*old_len),
                human_size(*new_len),
            );
            if *flags != 0 {
                let _ = write!(out, " {}", mremap_flags_str(*flags));
            }
            if *flags & libc::MREMAP_FIXED as u64 != 0 {
                let _ = write!(out, " to {}", hex(*new_addr));
            }
            result(out, color, *ret, true);
        }
        Body::Mprotect {
            addr,
            len,
            prot,
            ret,
        } => {
            push_hex(out, *addr);
            out.push(' ');
            out.push_str(names.size(*len));
            out.push(' ');
            out.push_str(names.prot(*prot));
            result(out, color, *ret, false);
        }
        Body::PkeyMprotect {
            addr,
            len,
            prot,
            pkey,
            ret,
        } => {
            let _ = write!(
                out,
                "{} {} {} pkey={pkey}",
                hex(*addr),
                human_size(*len),
                prot_str(*prot)
            );
            result(out, color, *ret, false);
        }
        Body::Madvise {
            addr,
            len,
            advice,
            ret,
        } => {
            let _ = write!(
                out,
                "{} {} {}",
                hex(*addr),
                human_size(*len),
                advice_str(*advice)
            );
            result(out, color, *ret, false);
        }
        Body::Mlock { addr, len, ret } | Body::Munlock { addr, len, ret } => {
            let _ = write!(out, "{} {}", hex(*addr), human_size(*len));
            result(out, color, *ret, false);
        }
        Body::Mlock2 {
            addr,
            len,
            flags,
            ret,
        } => {
            let _ = write!(
                out,
                "{} {} {}",
                hex(*addr),
                human_size(*len),
                mlock2_flags_str(*flags)
            );
            result(out, color, *ret, false);
        }
        Body::Mlockall { flags, ret } => {
            out.push_str(&mlockall_flags_str(*flags));
            result(out, color, *ret, false);
        }
        Body::Munlockall { ret } => {
            out.push_str("all");
            result(out, color, *ret, false);
        }
        Body::Mseal {
            addr,
            len,
            flags,
            ret,
        } => {
            let _ = write!(out, "{} {}", hex(*addr), human_size(*len));
            if *flags != 0 {
                let _ = write!(out, " flags={}", hex(*flags));
            }
            result(out, color, *ret, false);
        }
        Body::Userfaultfd {
            register,
            fd,
            range,
            mode,
            ret,
        } => {
            out.push_str(if *register {
                "register "
            } else {
                "unregister "
            });
            match range {
                Some((addr, len)) => {
                    let _ = write!(out, "{} {}", hex(*addr), human_size(*len));
                }
                None => out.push_str("(range unreadable)"),
            }
            if *register {
                let _ = write!(out, " mode={}", uffd_mode_str(*mode));
            }
            let _ = write!(out, " fd={fd}");
            result(out, color, *ret, false);
        }
        Body::Shmat {
            shmid,
            addr,
            flags,
            ret,
        } => {
            let _ = write!(out, "shmid={shmid} ");
            if *addr == 0 {
                out.push_str("NULL");
            } else {
                out.push_str(&hex(*addr));
            }
            if *flags != 0 {
                let _ = write!(out, " {}", shmat_flags_str(*flags));
            }
            result(out, color, *ret, true);
        }
        Body::Shmdt { addr, ret } => {
            out.push_str(&hex(*addr));
            result(out, color, *ret, false);
        }
        Body::RemapFilePages {
            addr,
            size,
            prot,
            pgoff,
            flags,
            ret,
        } => {
            let _ = write!(out, "{} {} pgoff={pgoff}", hex(*addr), human_size(*size));
            if *prot != 0 {
                let _ = write!(out, " prot={}", prot_str(*prot));
            }
            if *flags != 0 {
                let _ = write!(out, " {}", remap_file_pages_flags_str(*flags));
            }
            result(out, color, *ret, false);
        }
        Body::Fault {
            addr,
            ip,
            access,
            present,
        } => {
            let start = out.len();
            out.push_str(access.name());
            pad_from(out, start, 5);
            out.push(' ');
            push_hex(out, *addr);
            out.push_str(" ip=");
            push_hex(out, *ip);
            if *present {
                out.push_str(" present");
            }
        }
        Body::FaultSummary {
            interval_ns,
            read,
            write,
            exec,
            present,
        } => {
            let total = read.saturating_add(*write).saturating_add(*exec);
            let ms = interval_ns / 1_000_000;
            let _ = write!(
                out,
                "{total} faults in {}.{:03}s: read={read} write={write} exec={exec} present={present}",
                ms / 1000,
                ms % 1000
            );
        }
        Body::Stack {
            old_start,
            new_start,
            source,
        } => {
            let growth = if new_start <= old_start {
                format!("+{}", human_size(old_start - new_start))
            } else {
                format!("-{}", human_size(new_start - old_start))
            };
            let source = match source {
                StackSource::Fault => "fault",
                StackSource::Fexit => "fexit",
            };
            let _ = write!(
                out,
                "{} -> {} ({growth}) via {source}",
                hex(*old_start),
                hex(*new_start)
            );
        }
        Body::Exec {
            path,
            old_pid,
            abi,
            cgroup,
            ..
        } => {
            out.push_str(&escape_text(path));
            // A non-leader thread that execs takes over the process's pid.
            if *old_pid != ev.pid {
                let _ = write!(out, " (by thread {old_pid})");
            }
            // The v1 memory cgroup on hybrid hosts, else the v2 one.
            if let Some(path) = cgroup.as_deref().and_then(|c| c.main_path()) {
                out.push_str(" cgroup=");
                out.push_str(&escape_text(path));
            }
            if let Some(abi) = abi.filter(|a| !a.traced()) {
                out.push(' ');
                let note = format!("(32-bit, {}: its system calls are not traced)", abi.name());
                styled(out, color, PALETTE.error, &note);
            }
        }
        Body::Fork {
            child_pid,
            clone_flags,
        } => {
            let _ = write!(out, "child {child_pid}");
            if clone_flags & libc::CLONE_THREAD as u64 != 0 {
                out.push_str(" (thread)");
            }
        }
        Body::OomKill { victim_pid } => {
            let s = format!("victim {victim_pid} (chosen by the OOM killer)");
            styled(out, color, PALETTE.error, &s);
        }
        Body::Exit { status, .. } => match split_status(*status) {
            (Some(code), _) => {
                let _ = write!(out, "code {code}");
            }
            (None, Some(sig)) => {
                let mut s = format!("killed by {}", signal_name(sig));
                // WCOREDUMP
                if status & 0x80 != 0 {
                    s.push_str(" (core dumped)");
                }
                styled(out, color, PALETTE.error, &s);
            }
            (None, None) => {
                let _ = write!(out, "status {status:#x}");
            }
        },
        Body::Lost { count, kind } => {
            let what = match kind {
                Some(k) => format!("*** {count} {} events lost ***", k.name()),
                None => format!("*** {count} events lost ***"),
            };
            styled(out, color, PALETTE.lost, &what);
        }
    }
}

/// The form the writer above replaced (a `format!` per field): the
/// reference its output is checked against.
#[cfg(test)]
mod old_form {
    use std::fmt::Write as _;

    use super::super::names::{
        advice_str, dev_str, errno_name, escape_text, hex, human_size, mlock2_flags_str,
        mlockall_flags_str, mmap_flags_str, mremap_flags_str, prot_str, remap_file_pages_flags_str,
        shmat_flags_str, signal_name, uffd_mode_str,
    };
    use super::{family_style, seconds, styled, PALETTE};
    use crate::event::{split_status, Body, Event, StackSource, SysResult};

    /// Appends " = <value>" or " = -ERRNO" (in red).
    fn result(out: &mut String, color: bool, ret: SysResult, as_addr: bool) {
        out.push_str(" = ");
        match ret {
            SysResult::Ok(v) if as_addr => out.push_str(&hex(v)),
            SysResult::Ok(v) => {
                let _ = write!(out, "{v}");
            }
            SysResult::Err(e) => styled(out, color, PALETTE.error, &format!("-{}", errno_name(e))),
        }
    }

    /// Appends one line (with its newline) for `ev` to `out`. Times print
    /// relative to `start_ns`, saturating at 0.
    pub(in crate::output) fn format_event(
        out: &mut String,
        ev: &Event,
        color: bool,
        start_ns: u64,
    ) {
        let t = seconds(ev.ts_ns.saturating_sub(start_ns));
        styled(out, color, PALETTE.time, &format!("{t:>11}"));
        let _ = write!(
            out,
            "  {:<15} {:<11} ",
            escape_text(&ev.comm),
            format!("{}/{}", ev.pid, ev.tid)
        );
        styled(
            out,
            color,
            family_style(&ev.body),
            &format!("{:<9}", ev.body.name()),
        );
        out.push(' ');
        details(out, ev, color);
        out.push('\n');
    }

    fn details(out: &mut String, ev: &Event, color: bool) {
        match &ev.body {
            Body::Brk {
                requested,
                old_brk,
                new_brk,
                ..
            } => {
                if *requested == 0 {
                    out.push_str("query");
                } else {
                    out.push_str(&hex(*requested));
                }
                let old = old_brk.map_or_else(|| "?".to_string(), hex);
                let _ = write!(out, " : {old} -> {}", hex(*new_brk));
                // brk returns the requested break on success, the old one on
                // failure.
                if *requested != 0 && new_brk != requested {
                    out.push(' ');
                    styled(out, color, PALETTE.error, "(failed)");
                }
            }
            Body::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                offset,
                ret,
                file,
            } => {
                if *addr == 0 {
                    out.push_str("NULL");
                } else {
                    out.push_str(&hex(*addr));
                }
                let _ = write!(
                    out,
                    " {} {} {}",
                    human_size(*len),
                    prot_str(*prot),
                    mmap_flags_str(*flags)
                );
                if *flags & libc::MAP_ANONYMOUS as u64 == 0 {
                    let _ = write!(out, " fd={} off={}", *fd as i32, hex(*offset));
                }
                if let Some(f) = file {
                    let _ = write!(
                        out,
                        " {}{} ({} {})",
                        if f.truncated { "..." } else { "" },
                        escape_text(&f.path),
                        dev_str(f.dev_major, f.dev_minor),
                        f.ino
                    );
                }
                result(out, color, *ret, true);
            }
            Body::Munmap { addr, len, ret } => {
                let _ = write!(out, "{} {}", hex(*addr), human_size(*len));
                result(out, color, *ret, false);
            }
            Body::Mremap {
                old_addr,
                old_len,
                new_len,
                flags,
                new_addr,
                ret,
            } => {
                let _ = write!(
                    out,
                    "{} {} -> {}",
                    hex(*old_addr),
                    human_size(*old_len),
                    human_size(*new_len),
                );
                if *flags != 0 {
                    let _ = write!(out, " {}", mremap_flags_str(*flags));
                }
                if *flags & libc::MREMAP_FIXED as u64 != 0 {
                    let _ = write!(out, " to {}", hex(*new_addr));
                }
                result(out, color, *ret, true);
            }
            Body::Mprotect {
                addr,
                len,
                prot,
                ret,
            } => {
                let _ = write!(
                    out,
                    "{} {} {}",
                    hex(*addr),
                    human_size(*len),
                    prot_str(*prot)
                );
                result(out, color, *ret, false);
            }
            Body::PkeyMprotect {
                addr,
                len,
                prot,
                pkey,
                ret,
            } => {
                let _ = write!(
                    out,
                    "{} {} {} pkey={pkey}",
                    hex(*addr),
                    human_size(*len),
                    prot_str(*prot)
                );
                result(out, color, *ret, false);
            }
            Body::Madvise {
                addr,
                len,
                advice,
                ret,
            } => {
                let _ = write!(
                    out,
                    "{} {} {}",
                    hex(*addr),
                    human_size(*len),
                    advice_str(*advice)
                );
                result(out, color, *ret, false);
            }
            Body::Mlock { addr, len, ret } | Body::Munlock { addr, len, ret } => {
                let _ = write!(out, "{} {}", hex(*addr), human_size(*len));
                result(out, color, *ret, false);
            }
            Body::Mlock2 {
                addr,
                len,
                flags,
                ret,
            } => {
                let _ = write!(
                    out,
                    "{} {} {}",
                    hex(*addr),
                    human_size(*len),
                    mlock2_flags_str(*flags)
                );
                result(out, color, *ret, false);
            }
            Body::Mlockall { flags, ret } => {
                out.push_str(&mlockall_flags_str(*flags));
                result(out, color, *ret, false);
            }
            Body::Munlockall { ret } => {
                out.push_str("all");
                result(out, color, *ret, false);
            }
            Body::Mseal {
                addr,
                len,
                flags,
                ret,
            } => {
                let _ = write!(out, "{} {}", hex(*addr), human_size(*len));
                if *flags != 0 {
                    let _ = write!(out, " flags={}", hex(*flags));
                }
                result(out, color, *ret, false);
            }
            Body::Userfaultfd {
                register,
                fd,
                range,
                mode,
                ret,
            } => {
                out.push_str(if *register {
                    "register "
                } else {
                    "unregister "
                });
                match range {
                    Some((addr, len)) => {
                        let _ = write!(out, "{} {}", hex(*addr), human_size(*len));
                    }
                    None => out.push_str("(range unreadable)"),
                }
                if *register {
                    let _ = write!(out, " mode={}", uffd_mode_str(*mode));
                }
                let _ = write!(out, " fd={fd}");
                result(out, color, *ret, false);
            }
            Body::Shmat {
                shmid,
                addr,
                flags,
                ret,
            } => {
                let _ = write!(out, "shmid={shmid} ");
                if *addr == 0 {
                    out.push_str("NULL");
                } else {
                    out.push_str(&hex(*addr));
                }
                if *flags != 0 {
                    let _ = write!(out, " {}", shmat_flags_str(*flags));
                }
                result(out, color, *ret, true);
            }
            Body::Shmdt { addr, ret } => {
                out.push_str(&hex(*addr));
                result(out, color, *ret, false);
            }
            Body::RemapFilePages {
                addr,
                size,
                prot,
                pgoff,
                flags,
                ret,
            } => {
                let _ = write!(out, "{} {} pgoff={pgoff}", hex(*addr), human_size(*size));
                if *prot != 0 {
                    let _ = write!(out, " prot={}", prot_str(*prot));
                }
                if *flags != 0 {
                    let _ = write!(out, " {}", remap_file_pages_flags_str(*flags));
                }
                result(out, color, *ret, false);
            }
            Body::Fault {
                addr,
                ip,
                access,
                present,
            } => {
                let _ = write!(out, "{:<5} {} ip={}", access.name(), hex(*addr), hex(*ip));
                if *present {
                    out.push_str(" present");
                }
            }
            Body::FaultSummary {
                interval_ns,
                read,
                write,
                exec,
                present,
            } => {
                let total = read.saturating_add(*write).saturating_add(*exec);
                let ms = interval_ns / 1_000_000;
                let _ = write!(
                out,
                "{total} faults in {}.{:03}s: read={read} write={write} exec={exec} present={present}",
                ms / 1000,
                ms % 1000
            );
            }
            Body::Stack {
                old_start,
                new_start,
                source,
            } => {
                let growth = if new_start <= old_start {
                    format!("+{}", human_size(old_start - new_start))
                } else {
                    format!("-{}", human_size(new_start - old_start))
                };
                let source = match source {
                    StackSource::Fault => "fault",
                    StackSource::Fexit => "fexit",
                };
                let _ = write!(
                    out,
                    "{} -> {} ({growth}) via {source}",
                    hex(*old_start),
                    hex(*new_start)
                );
            }
            Body::Exec {
                path, old_pid, abi, ..
            } => {
                out.push_str(&escape_text(path));
                // A non-leader thread that execs takes over the process's pid.
                if *old_pid != ev.pid {
                    let _ = write!(out, " (by thread {old_pid})");
                }
                if let Some(abi) = abi.filter(|a| !a.traced()) {
                    out.push(' ');
                    let note = format!("(32-bit, {}: its system calls are not traced)", abi.name());
                    styled(out, color, PALETTE.error, &note);
                }
            }
            Body::Fork {
                child_pid,
                clone_flags,
            } => {
                let _ = write!(out, "child {child_pid}");
                if clone_flags & libc::CLONE_THREAD as u64 != 0 {
                    out.push_str(" (thread)");
                }
            }
            Body::OomKill { victim_pid } => {
                let s = format!("victim {victim_pid} (chosen by the OOM killer)");
                styled(out, color, PALETTE.error, &s);
            }
            Body::Exit { status, .. } => match split_status(*status) {
                (Some(code), _) => {
                    let _ = write!(out, "code {code}");
                }
                (None, Some(sig)) => {
                    let mut s = format!("killed by {}", signal_name(sig));
                    // WCOREDUMP
                    if status & 0x80 != 0 {
                        s.push_str(" (core dumped)");
                    }
                    styled(out, color, PALETTE.error, &s);
                }
                (None, None) => {
                    let _ = write!(out, "status {status:#x}");
                }
            },
            Body::Lost { count, kind } => {
                let what = match kind {
                    Some(k) => format!("*** {count} {} events lost ***", k.name()),
                    None => format!("*** {count} events lost ***"),
                };
                styled(out, color, PALETTE.lost, &what);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Abi, Access, MappedFile};
    use tracer_common::EventKind;

    fn ev(body: Body) -> Event {
        Event {
            ts_ns: 1_012_345_678_900,
            cpu: 0,
            pid: 1234,
            tid: 1236,
            comm: b"python3".to_vec(),
            body,
            counters: None,
        }
    }

    fn line(body: Body, color: bool) -> String {
        let mut s = String::new();
        format_event(
            &mut s,
            &ev(body),
            color,
            1_000_000_000_000,
            &mut Names::default(),
        );
        s
    }

    #[test]
    fn mmap_line() {
        let l = line(
            Body::Mmap {
                addr: 0,
                len: 1 << 20,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0,
                ret: SysResult::Ok(0x7f3a12340000),
                file: None,
            },
            false,
        );
        assert_eq!(
            l,
            "  12.345678  python3         1234/1236   mmap      \
             NULL 1.0 MiB rw- MAP_PRIVATE|MAP_ANONYMOUS = 0x7f3a12340000\n"
        );
    }

    #[test]
    fn mmap_file_and_error() {
        let l = line(
            Body::Mmap {
                addr: 0x7f0000000000,
                len: 8192,
                prot: 5,
                flags: 0x812,
                fd: 3,
                offset: 0x1000,
                ret: SysResult::Ok(0x7f0000000000),
                file: Some(MappedFile {
                    path: b"/usr/lib/libc.so.6".to_vec(),
                    dev_major: 0xfd,
                    dev_minor: 1,
                    ino: 1234567,
                    truncated: false,
                }),
            },
            false,
        );
        assert!(l.ends_with(
            "0x7f0000000000 8.0 KiB r-x MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE fd=3 off=0x1000 \
             /usr/lib/libc.so.6 (fd:01 1234567) = 0x7f0000000000\n"
        ));
        let l = line(
            Body::Mmap {
                addr: 0,
                len: 1 << 40,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0,
                ret: SysResult::Err(12),
                file: None,
            },
            false,
        );
        assert!(l.ends_with("= -ENOMEM\n"), "{l}");
        let l = line(
            Body::Mmap {
                addr: 0,
                len: 1 << 40,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0,
                ret: SysResult::Err(12),
                file: None,
            },
            true,
        );
        assert!(l.contains("\x1b["));
        assert!(l.contains("-ENOMEM"));
    }

    #[test]
    fn other_lines() {
        let cases: Vec<(Body, &str)> = vec![
            (
                Body::Brk {
                    requested: 0,
                    old_brk: Some(0x5000),
                    new_brk: 0x5000, start_brk: 0
                },
                "brk       query : 0x5000 -> 0x5000\n",
            ),
            (
                Body::Brk {
                    requested: 0x6000,
                    old_brk: Some(0x5000),
                    new_brk: 0x6000, start_brk: 0
                },
                "brk       0x6000 : 0x5000 -> 0x6000\n",
            ),
            (
                Body::Brk {
                    requested: 0x6000,
                    old_brk: Some(0x5000),
                    new_brk: 0x5000, start_brk: 0
                },
                "brk       0x6000 : 0x5000 -> 0x5000 (failed)\n",
            ),
            (
                Body::Munmap {
                    addr: 0x1000,
                    len: 4096,
                    ret: SysResult::Ok(0),
                },
                "munmap    0x1000 4.0 KiB = 0\n",
            ),
            (
                Body::Munmap {
                    addr: 0x1001,
                    len: 4096,
                    ret: SysResult::Err(22),
                },
                "munmap    0x1001 4.0 KiB = -EINVAL\n",
            ),
            (
                Body::Mremap {
                    old_addr: 0x1000,
                    old_len: 4096,
                    new_len: 8192,
                    flags: 1,
                    new_addr: 0,
                    ret: SysResult::Ok(0x9000),
                },
                "mremap    0x1000 4.0 KiB -> 8.0 KiB MREMAP_MAYMOVE = 0x9000\n",
            ),
            (
                Body::Mremap {
                    old_addr: 0x1000,
                    old_len: 4096,
                    new_len: 8192,
                    flags: 3,
                    new_addr: 0x20000,
                    ret: SysResult::Err(12),
                },
                "mremap    0x1000 4.0 KiB -> 8.0 KiB MREMAP_MAYMOVE|MREMAP_FIXED to 0x20000 = -ENOMEM\n",
            ),
            (
                Body::Mprotect {
                    addr: 0x1000,
                    len: 4096,
                    prot: 1,
                    ret: SysResult::Ok(0),
                },
                "mprotect  0x1000 4.0 KiB r-- = 0\n",
            ),
            (
                Body::PkeyMprotect {
                    addr: 0x1000,
                    len: 8192,
                    prot: 3,
                    pkey: -1,
                    ret: SysResult::Err(22),
                },
                "pkey_mprotect 0x1000 8.0 KiB rw- pkey=-1 = -EINVAL\n",
            ),
            (
                Body::Mlock {
                    addr: 0x1000,
                    len: 8192,
                    ret: SysResult::Ok(0),
                },
                "mlock     0x1000 8.0 KiB = 0\n",
            ),
            (
                Body::Mlock2 {
                    addr: 0x1000,
                    len: 4096,
                    flags: 1,
                    ret: SysResult::Ok(0),
                },
                "mlock2    0x1000 4.0 KiB MLOCK_ONFAULT = 0\n",
            ),
            (
                Body::Munlock {
                    addr: 0x1000,
                    len: 4096,
                    ret: SysResult::Err(12),
                },
                "munlock   0x1000 4.0 KiB = -ENOMEM\n",
            ),
            (
                Body::Mlockall {
                    flags: 3,
                    ret: SysResult::Ok(0),
                },
                "mlockall  MCL_CURRENT|MCL_FUTURE = 0\n",
            ),
            (
                Body::Munlockall {
                    ret: SysResult::Ok(0),
                },
                "munlockall all = 0\n",
            ),
            (
                Body::Mseal {
                    addr: 0x1000,
                    len: 4096,
                    flags: 0,
                    ret: SysResult::Err(1),
                },
                "mseal     0x1000 4.0 KiB = -EPERM\n",
            ),
            (
                Body::Shmat {
                    shmid: 32769,
                    addr: 0,
                    flags: 0o10000,
                    ret: SysResult::Ok(0x7f00_0000_0000),
                },
                "shmat     shmid=32769 NULL SHM_RDONLY = 0x7f0000000000\n",
            ),
            (
                Body::Shmdt {
                    addr: 0x7f00_0000_0000,
                    ret: SysResult::Ok(0),
                },
                "shmdt     0x7f0000000000 = 0\n",
            ),
            (
                Body::RemapFilePages {
                    addr: 0x1000,
                    size: 4096,
                    prot: 0,
                    pgoff: 3,
                    flags: 0,
                    ret: SysResult::Ok(0),
                },
                "remap_file_pages 0x1000 4.0 KiB pgoff=3 = 0\n",
            ),
            (
                Body::Fault {
                    addr: 0xdead000,
                    ip: 0x401000,
                    access: Access::Write,
                    present: true,
                },
                "fault     write 0xdead000 ip=0x401000 present\n",
            ),
            (
                Body::Fault {
                    addr: 0xdead000,
                    ip: 0x401000,
                    access: Access::Read,
                    present: false,
                },
                "fault     read  0xdead000 ip=0x401000\n",
            ),
            (
                Body::FaultSummary {
                    interval_ns: 1_000_000_000,
                    read: 10,
                    write: 5,
                    exec: 1,
                    present: 2,
                },
                "fault_summary 16 faults in 1.000s: read=10 write=5 exec=1 present=2\n",
            ),
            (
                Body::Stack {
                    old_start: 0x7ffd0000,
                    new_start: 0x7ffcf000,
                    source: StackSource::Fault,
                },
                "stack     0x7ffd0000 -> 0x7ffcf000 (+4.0 KiB) via fault\n",
            ),
            (
                Body::Exec {
                    path: b"/bin/ls".to_vec(),
                    old_pid: 1234,
                    start_time: 0,
                    abi: Some(Abi::X86_64),
                    cgroup: None,
                },
                "exec      /bin/ls\n",
            ),
            (
                Body::Exec {
                    path: b"/bin/ls".to_vec(),
                    old_pid: 1236,
                    start_time: 0,
                    abi: None,
                    cgroup: None,
                },
                "exec      /bin/ls (by thread 1236)\n",
            ),
            (
                Body::Exec {
                    path: b"/opt/old/prog".to_vec(),
                    old_pid: 1234,
                    start_time: 0,
                    abi: Some(Abi::I386),
                    cgroup: None,
                },
                "exec      /opt/old/prog (32-bit, i386: its system calls are not traced)\n",
            ),
            (
                Body::Fork {
                    child_pid: 99,
                    clone_flags: 0x11,
                },
                "fork      child 99\n",
            ),
            (
                Body::Fork {
                    child_pid: 99,
                    clone_flags: 0x10000,
                },
                "fork      child 99 (thread)\n",
            ),
            (Body::Exit { status: 3 << 8, start_time: 0 }, "exit      code 3\n"),
            (Body::Exit { status: 9, start_time: 0 }, "exit      killed by SIGKILL\n"),
            (
                Body::Exit { status: 0x8b, start_time: 0 },
                "exit      killed by SIGSEGV (core dumped)\n",
            ),
            (
                Body::Lost {
                    count: 7,
                    kind: Some(EventKind::Fault),
                },
                "lost      *** 7 fault events lost ***\n",
            ),
            (
                Body::Lost {
                    count: 7,
                    kind: None,
                },
                "lost      *** 7 events lost ***\n",
            ),
        ];
        for (body, want) in cases {
            let l = line(body.clone(), false);
            assert!(l.ends_with(want), "{body:?}:\n got {l:?}\nwant {want:?}");
            assert!(!l.contains('\x1b'));
            let c = line(body, true);
            assert!(c.contains("\x1b["), "{c:?}");
        }
    }

    #[test]
    fn time_saturates_and_aligns() {
        let mut s = String::new();
        let mut e = ev(Body::Exit {
            status: 0,
            start_time: 0,
        });
        e.ts_ns = 5;
        format_event(&mut s, &e, false, 10, &mut Names::default());
        assert!(s.starts_with("   0.000000  python3 "), "{s:?}");
    }

    #[test]
    fn hostile_comm_and_path() {
        let mut e = ev(Body::Exec {
            path: b"/tmp/\x1b]0;owned\x07\n\xff".to_vec(),
            old_pid: 1,
            start_time: 0,
            abi: None,
            cgroup: None,
        });
        e.comm = b"\x1b[2J\r\x9b".to_vec();
        for color in [false, true] {
            let mut s = String::new();
            format_event(&mut s, &e, color, 0, &mut Names::default());
            let body = s.strip_suffix('\n').unwrap();
            assert!(!body.contains('\n'));
            assert!(!body.contains('\r'));
            assert!(!body.contains('\x07'));
            if !color {
                assert!(!body.contains('\x1b'));
            }
            assert!(body.contains("\\x1b[2J\\r\\x9b"), "{body}");
            assert!(body.contains("/tmp/\\x1b]0;owned\\x07\\n\\xff"), "{body}");
        }
    }

    /// The writer writes the bytes the `format!` form wrote, for every
    /// kind of event, odd values and bytes included, with and without
    /// colour, and with its caches warm or cold.
    #[test]
    fn same_bytes_as_before() {
        let mut names = Names::default();
        for e in super::super::json::sample_events() {
            for color in [false, true] {
                let mut want = String::new();
                old_form::format_event(&mut want, &e, color, 1_000);
                for names in [&mut names, &mut Names::default()] {
                    let mut got = String::new();
                    format_event(&mut got, &e, color, 1_000, names);
                    assert_eq!(got, want, "{:?}", e.body);
                }
            }
        }
    }
}
