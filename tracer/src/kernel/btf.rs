//! Kernel struct field offsets, read from the running kernel's BTF.
//!
//! rustc cannot emit CO-RE relocations, so the programs read kernel
//! structures at offsets resolved here and handed to them as a global.

use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Btf, Type};
use tracer_common::Offsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Loads the kernel's BTF.
pub fn load_kernel_btf() -> Result<Btf> {
    if !std::path::Path::new(VMLINUX_BTF).exists() {
        bail!(
            "this kernel has no BTF ({VMLINUX_BTF} is missing): mmtrace needs a kernel built \
             with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Btf::from_file(VMLINUX_BTF).with_context(|| format!("cannot parse {VMLINUX_BTF}"))
}

/// Byte offset of `path` (dot-separated members, through anonymous structs
/// and unions) inside struct `name`.
pub fn field_offset(btf: &Btf, name: &str, path: &str) -> Result<u64> {
    let mut ty = find_struct(btf, name)?;
    let mut total_bits: u64 = 0;
    for field in path.split('.') {
        let (bits, member_ty) = find_member(btf, &ty, field)?
            .ok_or_else(|| anyhow!("kernel BTF: struct {name} has no field `{path}`"))?;
        total_bits += bits;
        ty = member_ty;
    }
    if !total_bits.is_multiple_of(8) {
        bail!("kernel BTF: {name}.{path} is a bitfield");
    }
    Ok(total_bits / 8)
}

fn find_struct(btf: &Btf, name: &str) -> Result<Type> {
    let types = btf
        .resolve_types_by_name(name)
        .with_context(|| format!("kernel BTF has no type `{name}`"))?;
    types
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
        .ok_or_else(|| anyhow!("kernel BTF has no struct `{name}`"))
}

/// Strips typedefs and qualifiers.
fn resolve(btf: &Btf, mut ty: Type) -> Result<Type> {
    loop {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t)?,
            Type::Const(t) => btf.resolve_chained_type(t)?,
            Type::Volatile(t) => btf.resolve_chained_type(t)?,
            Type::Restrict(t) => btf.resolve_chained_type(t)?,
            Type::TypeTag(t) => btf.resolve_chained_type(t)?,
            _ => return Ok(ty),
        };
    }
}

/// Finds member `field` in a struct or union, searching anonymous members
/// too. Returns its bit offset and its (resolved) type.
fn find_member(btf: &Btf, ty: &Type, field: &str) -> Result<Option<(u64, Type)>> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return Ok(None),
    };
    for m in members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let member_ty = resolve(btf, btf.resolve_chained_type(m)?)?;
        if name == field {
            return Ok(Some((u64::from(m.bit_offset()), member_ty)));
        }
        if name.is_empty() {
            if let Some((bits, t)) = find_member(btf, &member_ty, field)? {
                return Ok(Some((u64::from(m.bit_offset()) + bits, t)));
            }
        }
    }
    Ok(None)
}

/// Every offset the programs use.
pub fn resolve_offsets(btf: &Btf) -> Result<Offsets> {
    let f = |s: &str, p: &str| field_offset(btf, s, p);
    Ok(Offsets {
        task_mm: f("task_struct", "mm")?,
        task_files: f("task_struct", "files")?,
        task_exit_code: f("task_struct", "exit_code")?,
        task_start_time: f("task_struct", "start_time")?,
        mm_brk: f("mm_struct", "brk")?,
        mm_start_brk: f("mm_struct", "start_brk")?,
        mm_start_stack: f("mm_struct", "start_stack")?,
        mm_stack_vm: f("mm_struct", "stack_vm")?,
        files_fdt: f("files_struct", "fdt")?,
        fdt_fd: f("fdtable", "fd")?,
        fdt_max_fds: f("fdtable", "max_fds")?,
        file_path: f("file", "f_path")?,
        file_inode: f("file", "f_inode")?,
        path_mnt: f("path", "mnt")?,
        path_dentry: f("path", "dentry")?,
        inode_ino: f("inode", "i_ino")?,
        inode_sb: f("inode", "i_sb")?,
        sb_dev: f("super_block", "s_dev")?,
        dentry_parent: f("dentry", "d_parent")?,
        dentry_name: f("dentry", "d_name")?,
        qstr_len: f("qstr", "len")?,
        qstr_name: f("qstr", "name")?,
        mount_mnt: f("mount", "mnt")?,
        mount_parent: f("mount", "mnt_parent")?,
        mount_mountpoint: f("mount", "mnt_mountpoint")?,
        vfsmount_root: f("vfsmount", "mnt_root")?,
        vma_start: f("vm_area_struct", "vm_start")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF resolves every field; the values agree with
    /// facts that hold on every x86_64 kernel.
    #[test]
    fn offsets_resolve_on_this_kernel() {
        let btf = load_kernel_btf().expect("kernel BTF");
        let o = resolve_offsets(&btf).expect("offsets");
        // struct path { struct vfsmount *mnt; struct dentry *dentry; }
        assert_eq!(o.path_mnt, 0);
        assert_eq!(o.path_dentry, 8);
        // vm_start is the first field of vm_area_struct.
        assert_eq!(o.vma_start, 0);
        // qstr: a 64-bit hash_len, then the name pointer.
        assert_eq!(o.qstr_name, 8);
        assert!(o.task_mm > 0 && o.task_exit_code > 0);
    }

    #[test]
    fn missing_fields_are_named() {
        let btf = load_kernel_btf().expect("kernel BTF");
        let err = field_offset(&btf, "task_struct", "no_such_field").unwrap_err();
        assert!(err.to_string().contains("no_such_field"), "{err}");
    }
}
