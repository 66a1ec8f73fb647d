//! tracefs: which tracepoints this kernel has, and their record formats
//! (`events/<category>/<name>/format`), which the programs' record structs
//! (tracer-common's `tp.rs`) are checked against before anything is loaded.

use std::path::Path;

use tracer_common::{
    tp::{Field, Layout, SysEnter},
    Tracepoint,
};

pub const TRACEFS: &str = "/sys/kernel/tracing";

pub fn tracepoint_exists(category: &str, name: &str) -> bool {
    Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("id")
        .exists()
}

/// One `field:` line of a format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// The fields of a format file, in order, e.g. from
/// `field:char comm[16]; offset:12; size:16; signed:0;`
/// the field `comm` at 12, 16 bytes.
pub fn parse_format(text: &str) -> Vec<FormatField> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(';').map(str::trim);
            let decl = parts.next()?.strip_prefix("field:")?;
            let mut offset = None;
            let mut size = None;
            for part in parts {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            // The declaration's last word, without an array's brackets:
            // `__data_loc char[] filename`, `char comm[16]`.
            let last = decl.split_whitespace().last()?;
            let name = last.split('[').next()?;
            Some(FormatField {
                name: name.to_string(),
                offset: offset?,
                size: size?,
            })
        })
        .collect()
}

/// The fields of a tracepoint's record in this kernel.
pub fn read_format(category: &str, name: &str) -> std::io::Result<Vec<FormatField>> {
    let path = format!("{TRACEFS}/events/{category}/{name}/format");
    Ok(parse_format(&std::fs::read_to_string(path)?))
}

/// A field of a tracepoint's record, if this kernel's format has it.
pub fn field(category: &str, name: &str, field: &str) -> Option<FormatField> {
    read_format(category, name)
        .ok()?
        .into_iter()
        .find(|f| f.name == field)
}

/// Why a record struct does not fit this kernel's format.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("tracepoint {tracepoint}: this kernel's format has no field `{field}`")]
    Missing { tracepoint: String, field: String },
    #[error(
        "tracepoint {tracepoint}: field `{field}` is at offset {offset} ({size} bytes) in this \
         kernel's format, but mmtrace reads it at offset {expected_offset} ({expected_size} bytes)"
    )]
    Moved {
        tracepoint: String,
        field: String,
        offset: usize,
        size: usize,
        expected_offset: usize,
        expected_size: usize,
    },
    #[error(
        "tracepoint {tracepoint}: this kernel's format has {found} arguments, mmtrace reads {nargs}"
    )]
    Arguments {
        tracepoint: String,
        found: usize,
        nargs: usize,
    },
}

/// Checks that `tp`'s record, as the programs read it, fits `format`.
pub fn check_layout(tp: &Tracepoint, format: &[FormatField]) -> Result<(), LayoutError> {
    let tracepoint = format!("{}:{}", tp.category, tp.name);
    let check = |want: &Field, have: Option<&FormatField>| -> Result<(), LayoutError> {
        let Some(have) = have else {
            return Err(LayoutError::Missing {
                tracepoint: tracepoint.clone(),
                field: want.name.to_string(),
            });
        };
        if (have.offset, have.size) != (want.offset, want.size) {
            return Err(LayoutError::Moved {
                tracepoint: tracepoint.clone(),
                field: have.name.clone(),
                offset: have.offset,
                size: have.size,
                expected_offset: want.offset,
                expected_size: want.size,
            });
        }
        Ok(())
    };
    match tp.layout {
        Layout::Fields(fields) => {
            for want in fields {
                check(want, format.iter().find(|f| f.name == want.name))?;
            }
        }
        Layout::SysEnter { nargs } => {
            let nr = Field {
                name: "__syscall_nr",
                offset: std::mem::offset_of!(SysEnter, syscall_nr),
                size: size_of::<i32>(),
            };
            let at = format.iter().position(|f| f.name == nr.name);
            check(&nr, at.map(|i| &format[i]))?;
            // The arguments follow, whatever their names.
            let args = at.map_or(&[][..], |i| &format[i + 1..]);
            if args.len() < nargs {
                return Err(LayoutError::Arguments {
                    tracepoint,
                    found: args.len(),
                    nargs,
                });
            }
            for (i, have) in args.iter().take(nargs).enumerate() {
                let want = Field {
                    name: "",
                    offset: std::mem::offset_of!(SysEnter, args) + 8 * i,
                    size: 8,
                };
                check(&want, Some(have))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{EventKind, Source, TP_TASK_NEWTASK};

    const NEWTASK: &str = "name: task_newtask
ID: 140
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;
\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:40;\tsize:2;\tsigned:1;

print fmt: \"pid=%d comm=%s clone_flags=%llx oom_score_adj=%hd\", REC->pid, REC->comm, REC->clone_flags, REC->oom_score_adj
";

    #[test]
    fn formats_parse() {
        let fields = parse_format(NEWTASK);
        let names: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "common_type",
                "common_flags",
                "common_preempt_count",
                "common_pid",
                "pid",
                "comm",
                "clone_flags",
                "oom_score_adj"
            ]
        );
        assert_eq!(
            fields[5],
            FormatField {
                name: "comm".into(),
                offset: 12,
                size: 16
            }
        );
        assert_eq!(check_layout(&TP_TASK_NEWTASK, &fields), Ok(()));
    }

    #[test]
    fn a_moved_or_missing_field_is_named() {
        let moved = NEWTASK.replace("clone_flags;\toffset:32", "clone_flags;\toffset:40");
        let err = check_layout(&TP_TASK_NEWTASK, &parse_format(&moved)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tracepoint task:task_newtask: field `clone_flags` is at offset 40 (8 bytes) in this \
             kernel's format, but mmtrace reads it at offset 32 (8 bytes)"
        );
        let missing = NEWTASK.replace("pid_t pid;", "pid_t child;");
        let err = check_layout(&TP_TASK_NEWTASK, &parse_format(&missing)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tracepoint task:task_newtask: this kernel's format has no field `pid`"
        );
    }

    #[test]
    fn syscall_arguments_are_checked_by_position() {
        let Source::Syscall(mprotect) = EventKind::Mprotect.info().source else {
            panic!("mprotect is a syscall")
        };
        let format = |args: &[(&str, usize)]| {
            let mut v = vec![FormatField {
                name: "__syscall_nr".into(),
                offset: 8,
                size: 4,
            }];
            v.extend(args.iter().map(|(n, o)| FormatField {
                name: n.to_string(),
                offset: *o,
                size: 8,
            }));
            v
        };
        let ok = format(&[("start", 16), ("len", 24), ("prot", 32)]);
        assert_eq!(check_layout(&mprotect.enter, &ok), Ok(()));
        let short = format(&[("start", 16), ("len", 24)]);
        assert!(matches!(
            check_layout(&mprotect.enter, &short),
            Err(LayoutError::Arguments { found: 2, .. })
        ));
        let moved = format(&[("start", 16), ("len", 32), ("prot", 40)]);
        assert!(matches!(
            check_layout(&mprotect.enter, &moved),
            Err(LayoutError::Moved { offset: 32, .. })
        ));
    }

    /// Every tracepoint of the kinds table and of the duties fits this
    /// kernel's format (where tracefs is mounted and the tracepoint exists).
    #[test]
    fn every_record_fits_this_kernel() {
        if !Path::new(TRACEFS).join("events").is_dir() {
            eprintln!("tracefs is not mounted: nothing to check");
            return;
        }
        let all = EventKind::ALL.iter().fold(0, |m, k| m | k.bit());
        let plan =
            super::super::plan::plan(all, &tracer_common::Duty::ALL, 0, false, |_| true).unwrap();
        for tp in plan.tracepoints {
            match read_format(tp.category, tp.name) {
                Ok(format) => assert_eq!(check_layout(tp, &format), Ok(())),
                Err(e) => eprintln!("{}:{}: {e}", tp.category, tp.name),
            }
        }
    }
}
