//! Kernel struct field offsets, read from the running kernel's BTF.
//!
//! rustc cannot emit CO-RE relocations, so the programs read kernel
//! structures at offsets resolved here and handed to them as a global.
//!
//! [`Btf`] is a small reader of the BTF format (described in the kernel's
//! `Documentation/bpf/btf.rst`): the header, the string section, and the
//! type section as far as finding a struct by name and walking its members
//! needs. Every other kind is only measured, so that it can be skipped. The
//! reader borrows the raw bytes, checks every read against the bounds of its
//! section and returns an error, never panics, on malformed input.

use std::{collections::HashMap, fmt, path::Path};

use anyhow::{bail, Context, Result};
use tracer_common::{
    MmVmBlock, Offsets, VmaOffsets, MM_DATA_VM, MM_EXEC_VM, MM_LOCKED_VM, MM_MAP_COUNT,
    MM_STACK_VM, MM_TOTAL_VM, MM_VM_BLOCK, VMA_WALK_MAPLE, VMA_WALK_RB,
};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Reads the running kernel's BTF, for the offsets ([`Btf::parse`]).
pub fn read_vmlinux() -> Result<Vec<u8>> {
    if !Path::new(VMLINUX_BTF).exists() {
        bail!(
            "this kernel has no BTF ({VMLINUX_BTF} is missing): mmtrace needs a kernel built \
             with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    std::fs::read(VMLINUX_BTF).with_context(|| format!("cannot read {VMLINUX_BTF}"))
}

/// The address space counters read at each change (`MmCounters`), by
/// `MM_*` bit: mm_struct fields every kernel mmtrace knows has (4.x to
/// 6.18; checked in the BTF of 5.10, 6.1 and 6.18), read only where this
/// kernel's BTF has them all the same.
const MM_COUNTER_FIELDS: [(u32, &str); 5] = [
    (MM_MAP_COUNT, "map_count"),
    (MM_TOTAL_VM, "total_vm"),
    (MM_LOCKED_VM, "locked_vm"),
    (MM_DATA_VM, "data_vm"),
    (MM_EXEC_VM, "exec_vm"),
];

/// Every offset the programs use.
pub fn resolve_offsets(btf: &Btf) -> Result<Offsets> {
    let f = |s: &str, p: &str| field_offset(btf, s, p);
    let mut counters = [0u64; MM_COUNTER_FIELDS.len()];
    // The stack's size is needed anyway (stack growth from faults).
    let mut mm_counters = u64::from(MM_STACK_VM);
    for (slot, (bit, field)) in counters.iter_mut().zip(MM_COUNTER_FIELDS) {
        match btf.member_offset("mm_struct", field) {
            Ok(off) => {
                *slot = off;
                mm_counters |= u64::from(bit);
            }
            Err(e) => log::info!("the address space counter mm_struct.{field} is not read: {e}"),
        }
    }
    let [mm_map_count, mm_total_vm, mm_locked_vm, mm_data_vm, mm_exec_vm] = counters;
    let mm_stack_vm = f("mm_struct", "stack_vm")?;
    let pages = u64::from(MM_TOTAL_VM | MM_LOCKED_VM | MM_DATA_VM | MM_EXEC_VM);
    let at = |field: usize| mm_total_vm + field as u64;
    if mm_counters & pages == pages
        && mm_locked_vm == at(std::mem::offset_of!(MmVmBlock, locked_vm))
        && mm_data_vm == at(std::mem::offset_of!(MmVmBlock, data_vm))
        && mm_exec_vm == at(std::mem::offset_of!(MmVmBlock, exec_vm))
        && mm_stack_vm == at(std::mem::offset_of!(MmVmBlock, stack_vm))
    {
        mm_counters |= u64::from(MM_VM_BLOCK);
    }
    Ok(Offsets {
        task_mm: f("task_struct", "mm")?,
        task_files: f("task_struct", "files")?,
        task_exit_code: f("task_struct", "exit_code")?,
        task_start_time: f("task_struct", "start_time")?,
        task_signal: f("task_struct", "signal")?,
        signal_live: f("signal_struct", "live")?,
        signal_rlim: f("signal_struct", "rlim")?,
        mm_brk: f("mm_struct", "brk")?,
        mm_start_brk: f("mm_struct", "start_brk")?,
        mm_start_stack: f("mm_struct", "start_stack")?,
        mm_stack_vm,
        mm_map_count,
        mm_total_vm,
        mm_locked_vm,
        mm_data_vm,
        mm_exec_vm,
        mm_counters,
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
        sb_magic: f("super_block", "s_magic")?,
        dentry_parent: f("dentry", "d_parent")?,
        dentry_name: f("dentry", "d_name")?,
        qstr_len: f("qstr", "len")?,
        qstr_name: f("qstr", "name")?,
        mount_mnt: f("mount", "mnt")?,
        mount_parent: f("mount", "mnt_parent")?,
        mount_mountpoint: f("mount", "mnt_mountpoint")?,
        vfsmount_root: f("vfsmount", "mnt_root")?,
        vma_start: f("vm_area_struct", "vm_start")?,
        vma_mm: f("vm_area_struct", "vm_mm")?,
        // Only with --cgroup: resolve_cgroup_offsets.
        ..Offsets::ZERO
    })
}

/// The offsets of `--cgroup`'s walk (see [`Offsets::task_cgroups`]),
/// written into `off`; an error names what this kernel lacks.
pub fn resolve_cgroup_offsets(btf: &Btf, off: &mut Offsets) -> std::result::Result<(), BtfError> {
    let f = |s: &str, p: &str| btf.member_offset(s, p);
    let memory = btf.enum_value("memory_cgrp_id")?;
    let memory = u64::try_from(memory).map_err(|_| BtfError::NoMember {
        structure: "css_set".into(),
        path: format!("subsys[{memory}]"),
    })?;
    off.task_cgroups = f("task_struct", "cgroups")?;
    off.css_set_dfl_cgrp = f("css_set", "dfl_cgrp")?;
    // An array of pointers.
    off.css_set_memory = f("css_set", "subsys")? + 8 * memory;
    off.css_cgroup = f("cgroup_subsys_state", "cgroup")?;
    off.cgroup_kn = f("cgroup", "kn")?;
    // Renamed in 6.15, when it became RCU-protected.
    off.kn_parent = f("kernfs_node", "parent").or_else(|_| f("kernfs_node", "__parent"))?;
    off.kn_id = f("kernfs_node", "id")?;
    Ok(())
}

/// How the programs read an address space's VMA tree, and the offsets
/// they need; all 0 (no walk) when the kernel's layout is not one mmtrace
/// knows: the model then follows its own rules alone.
pub fn resolve_vma_offsets(btf: &Btf) -> VmaOffsets {
    let walk = || -> Result<VmaOffsets, BtfError> {
        let f = |s: &str, p: &str| btf.member_offset(s, p);
        let vma = VmaOffsets {
            vma_start: f("vm_area_struct", "vm_start")?,
            vma_end: f("vm_area_struct", "vm_end")?,
            vma_flags: f("vm_area_struct", "vm_flags")?,
            vma_pgoff: f("vm_area_struct", "vm_pgoff")?,
            ..VmaOffsets::ZERO
        };
        if let Ok(mt) = f("mm_struct", "mm_mt") {
            return Ok(VmaOffsets {
                walk: VMA_WALK_MAPLE,
                mm_vmas: mt + f("maple_tree", "ma_root")?,
                maple_r64_pivot: f("maple_range_64", "pivot")?,
                maple_r64_slot: f("maple_range_64", "slot")?,
                maple_r64_meta: f("maple_range_64", "meta")?,
                maple_a64_pivot: f("maple_arange_64", "pivot")?,
                maple_a64_slot: f("maple_arange_64", "slot")?,
                maple_a64_meta: f("maple_arange_64", "meta")?,
                ..vma
            });
        }
        Ok(VmaOffsets {
            walk: VMA_WALK_RB,
            mm_vmas: f("mm_struct", "mm_rb")? + f("rb_root", "rb_node")?,
            rb_left: f("rb_node", "rb_left")?,
            rb_right: f("rb_node", "rb_right")?,
            vma_rb: f("vm_area_struct", "vm_rb")?,
            ..vma
        })
    };
    walk().unwrap_or_else(|e| {
        log::warn!(
            "the kernel's VMA tree is not read here ({e:?}): the model follows its own rules at every change"
        );
        VmaOffsets::ZERO
    })
}

/// Byte offset of `path` (dot-separated members, through anonymous structs
/// and unions) inside struct `name`.
pub fn field_offset(btf: &Btf, name: &str, path: &str) -> Result<u64> {
    btf.member_offset(name, path)
        .with_context(|| format!("kernel BTF: cannot resolve {name}.{path}"))
}

/// Why BTF could not be read or a member not resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfError {
    /// The data ends (or a section ends) before something it announces.
    Truncated {
        what: &'static str,
        at: usize,
    },
    /// The first two bytes are not the BTF magic 0xeb9f in either byte order.
    BadMagic,
    UnsupportedVersion(u8),
    /// The header's lengths or offsets do not fit the data.
    BadHeader(&'static str),
    /// A type of a kind this reader does not know, so it cannot be skipped.
    UnknownKind {
        id: u32,
        kind: u32,
    },
    /// A reference to a type id that does not exist.
    BadTypeId(u32),
    /// A name offset outside the string section, or a name without its NUL.
    BadString(u32),
    /// A chain of typedefs and qualifiers, or of anonymous members, deeper
    /// than any real one: a cycle.
    TooDeep(u32),
    NoStruct(String),
    NoMember {
        structure: String,
        path: String,
    },
    /// The member is a bitfield: it has no byte offset.
    Bitfield {
        structure: String,
        path: String,
    },
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::Truncated { what, at } => {
                write!(
                    f,
                    "BTF data truncated: {what} at byte {at} runs past its end"
                )
            }
            BtfError::BadMagic => write!(f, "not BTF data (no 0xeb9f magic)"),
            BtfError::UnsupportedVersion(v) => write!(f, "unsupported BTF version {v}"),
            BtfError::BadHeader(why) => write!(f, "bad BTF header: {why}"),
            BtfError::UnknownKind { id, kind } => {
                write!(f, "BTF type {id} has unknown kind {kind}")
            }
            BtfError::BadTypeId(id) => write!(f, "BTF refers to type {id}, which does not exist"),
            BtfError::BadString(off) => write!(f, "BTF name offset {off} is not a valid string"),
            BtfError::TooDeep(id) => {
                write!(
                    f,
                    "BTF type {id}: nesting or typedef chain too deep (a cycle?)"
                )
            }
            BtfError::NoStruct(name) => write!(f, "BTF has no struct `{name}`"),
            BtfError::NoMember { structure, path } => {
                write!(f, "struct {structure} has no field `{path}`")
            }
            BtfError::Bitfield { structure, path } => {
                write!(f, "{structure}.{path} is a bitfield")
            }
        }
    }
}

impl std::error::Error for BtfError {}

// Type kinds (BTF_KIND_*).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

const MAGIC: u16 = 0xeb9f;
/// struct btf_header as of version 1 (a longer header is allowed).
const HEADER_LEN: usize = 24;
/// struct btf_type: name_off, info, size/type.
const TYPE_LEN: usize = 12;
/// struct btf_member: name_off, type, offset.
const MEMBER_LEN: usize = 12;
/// Longer typedef/qualifier chains or anonymous nestings are cycles.
const MAX_DEPTH: u32 = 64;

/// The bytes that follow a type's btf_type: a fixed size, or a record per
/// `vlen`. None for a kind this reader does not know.
fn trailing_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        _ => return None,
    })
}

/// One btf_type record.
#[derive(Clone, Copy, Debug)]
struct TypeInfo {
    /// Where its btf_type starts in the type section.
    pos: usize,
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
}

/// A struct or union member.
#[derive(Clone, Copy, Debug)]
struct Member<'a> {
    name: &'a [u8],
    type_id: u32,
    bit_offset: u64,
    /// Non-zero for a bitfield declared with kind_flag.
    bitfield_size: u32,
}

/// A parsed BTF blob (the kernel's own, not split module BTF).
pub struct Btf<'a> {
    big_endian: bool,
    types: &'a [u8],
    strings: &'a [u8],
    /// Start of each type in `types`; type id `n` is `starts[n - 1]` (id 0
    /// is `void`).
    starts: Vec<u32>,
    /// Named structs that have members, by name (the first of each name).
    structs: HashMap<&'a [u8], u32>,
}

impl<'a> Btf<'a> {
    /// Checks the header and walks the type section once.
    pub fn parse(data: &'a [u8]) -> Result<Btf<'a>, BtfError> {
        let magic = data.get(..2).ok_or(BtfError::Truncated {
            what: "header",
            at: 0,
        })?;
        let big_endian = match [magic[0], magic[1]] {
            m if u16::from_le_bytes(m) == MAGIC => false,
            m if u16::from_be_bytes(m) == MAGIC => true,
            _ => return Err(BtfError::BadMagic),
        };
        if data.len() < HEADER_LEN {
            return Err(BtfError::Truncated {
                what: "header",
                at: 0,
            });
        }
        let version = data[2];
        if version != 1 {
            return Err(BtfError::UnsupportedVersion(version));
        }
        let word = |at: usize| read_u32(data, at, big_endian, "header");
        let hdr_len = word(4)? as usize;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return Err(BtfError::BadHeader("header length out of range"));
        }
        let section = |off: u32, len: u32, what: &'static str| {
            let start = hdr_len.checked_add(off as usize);
            let end = start.and_then(|start| start.checked_add(len as usize));
            match (start, end) {
                (Some(start), Some(end)) if end <= data.len() => Ok(&data[start..end]),
                _ => Err(BtfError::BadHeader(what)),
            }
        };
        let types = section(word(8)?, word(12)?, "type section outside the data")?;
        let strings = section(word(16)?, word(20)?, "string section outside the data")?;
        // Name offset 0 is the empty name of anonymous types.
        if strings.first() != Some(&0) {
            return Err(BtfError::BadHeader(
                "string section does not start with an empty string",
            ));
        }

        let mut btf = Btf {
            big_endian,
            types,
            strings,
            starts: Vec::new(),
            structs: HashMap::new(),
        };
        let mut pos = 0;
        while pos < types.len() {
            let id = btf.starts.len() as u32 + 1;
            let ty = btf.type_at(pos)?;
            let trailing = trailing_len(ty.kind, ty.vlen)
                .ok_or(BtfError::UnknownKind { id, kind: ty.kind })?;
            let end = pos + TYPE_LEN + trailing;
            if end > types.len() {
                return Err(BtfError::Truncated {
                    what: "type",
                    at: pos,
                });
            }
            if ty.kind == KIND_STRUCT && ty.vlen > 0 && ty.name_off != 0 {
                let name = btf.name(ty.name_off)?;
                btf.structs.entry(name).or_insert(id);
            }
            // `types` comes from a u32 length, so every position fits.
            btf.starts.push(pos as u32);
            pos = end;
        }
        Ok(btf)
    }

    /// Number of types, `void` excluded.
    pub fn type_count(&self) -> usize {
        self.starts.len()
    }

    /// Id of the struct called `name` that has members.
    pub fn find_struct(&self, name: &str) -> Result<u32, BtfError> {
        self.structs
            .get(name.as_bytes())
            .copied()
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// The value of enumerator `name` (of any enum; the kernel's names are
    /// unique). A scan of every type: for the rare lookup.
    pub fn enum_value(&self, name: &str) -> Result<i64, BtfError> {
        for &pos in &self.starts {
            let ty = self.type_at(pos as usize)?;
            if ty.kind != KIND_ENUM {
                continue;
            }
            for index in 0..ty.vlen {
                let at = ty.pos + TYPE_LEN + index * 8;
                if self.name(self.type_word(at)?)? == name.as_bytes() {
                    let v = self.type_word(at + 4)?;
                    // Signed or not (kind_flag), the kernel's ids are small.
                    return Ok(if ty.kind_flag {
                        i64::from(v as i32)
                    } else {
                        i64::from(v)
                    });
                }
            }
        }
        Err(BtfError::NoStruct(format!("enumerator {name}")))
    }

    /// Byte offset of `path` (members separated by dots, each found through
    /// anonymous structs and unions) in struct `structure`.
    pub fn member_offset(&self, structure: &str, path: &str) -> Result<u64, BtfError> {
        let no_member = || BtfError::NoMember {
            structure: structure.to_string(),
            path: path.to_string(),
        };
        let mut composite = self.find_struct(structure)?;
        let mut bits: u64 = 0;
        let mut last = None;
        for field in path.split('.') {
            // An empty name would match the first anonymous member.
            if field.is_empty() {
                return Err(no_member());
            }
            if let Some(Member { type_id, .. }) = last {
                composite = self.strip(type_id)?;
            }
            let (offset, member) = self
                .find_member(composite, field.as_bytes(), 0)?
                .ok_or_else(no_member)?;
            bits = bits.checked_add(offset).ok_or_else(no_member)?;
            last = Some(member);
        }
        let member = last.ok_or_else(no_member)?;
        if member.bitfield_size != 0
            || self.is_int_bitfield(member.type_id)?
            || !bits.is_multiple_of(8)
        {
            return Err(BtfError::Bitfield {
                structure: structure.to_string(),
                path: path.to_string(),
            });
        }
        Ok(bits / 8)
    }

    /// Finds `field` among the members of struct or union `id`, looking
    /// inside anonymous members too. Returns its bit offset from the start
    /// of `id`. None if `id` is not a struct or union or has no such member.
    fn find_member(
        &self,
        id: u32,
        field: &[u8],
        depth: u32,
    ) -> Result<Option<(u64, Member<'a>)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let ty = self.get(id)?;
        if ty.kind != KIND_STRUCT && ty.kind != KIND_UNION {
            return Ok(None);
        }
        for index in 0..ty.vlen {
            let member = self.member(&ty, index)?;
            if member.name == field {
                return Ok(Some((member.bit_offset, member)));
            }
            if member.name.is_empty() {
                let inner = self.strip(member.type_id)?;
                if let Some((offset, found)) = self.find_member(inner, field, depth + 1)? {
                    return Ok(Some((member.bit_offset + offset, found)));
                }
            }
        }
        Ok(None)
    }

    /// Member `index` of struct or union `ty`.
    fn member(&self, ty: &TypeInfo, index: usize) -> Result<Member<'a>, BtfError> {
        let at = ty.pos + TYPE_LEN + index * MEMBER_LEN;
        let name_off = self.type_word(at)?;
        let type_id = self.type_word(at + 4)?;
        let offset = self.type_word(at + 8)?;
        // With kind_flag, the top byte is a bitfield's size in bits.
        let (bit_offset, bitfield_size) = if ty.kind_flag {
            (offset & 0x00ff_ffff, offset >> 24)
        } else {
            (offset, 0)
        };
        Ok(Member {
            name: self.name(name_off)?,
            type_id,
            bit_offset: u64::from(bit_offset),
            bitfield_size,
        })
    }

    /// Follows typedefs and qualifiers down to the type they name.
    fn strip(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                return Ok(0);
            }
            let ty = self.get(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::TooDeep(id))
    }

    /// Whether `id` is an integer narrower than its storage (how bitfields
    /// were described before kind_flag).
    fn is_int_bitfield(&self, id: u32) -> Result<bool, BtfError> {
        let id = self.strip(id)?;
        if id == 0 {
            return Ok(false);
        }
        let ty = self.get(id)?;
        if ty.kind != KIND_INT {
            return Ok(false);
        }
        let encoding = self.type_word(ty.pos + TYPE_LEN)?;
        let bits = encoding & 0xff;
        let offset = (encoding >> 16) & 0xff;
        Ok(offset != 0 || u64::from(bits) != u64::from(ty.size_or_type) * 8)
    }

    /// The btf_type of id `id` (not 0).
    fn get(&self, id: u32) -> Result<TypeInfo, BtfError> {
        let index = (id as usize)
            .checked_sub(1)
            .ok_or(BtfError::BadTypeId(id))?;
        let pos = *self.starts.get(index).ok_or(BtfError::BadTypeId(id))?;
        self.type_at(pos as usize)
    }

    fn type_at(&self, pos: usize) -> Result<TypeInfo, BtfError> {
        let name_off = self.type_word(pos)?;
        let info = self.type_word(pos + 4)?;
        let size_or_type = self.type_word(pos + 8)?;
        Ok(TypeInfo {
            pos,
            name_off,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type,
        })
    }

    fn type_word(&self, at: usize) -> Result<u32, BtfError> {
        read_u32(self.types, at, self.big_endian, "type")
    }

    /// The NUL-terminated name at `off` in the string section.
    fn name(&self, off: u32) -> Result<&'a [u8], BtfError> {
        let rest = self
            .strings
            .get(off as usize..)
            .ok_or(BtfError::BadString(off))?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(BtfError::BadString(off))?;
        Ok(&rest[..len])
    }
}

fn read_u32(data: &[u8], at: usize, big_endian: bool, what: &'static str) -> Result<u32, BtfError> {
    let bytes: [u8; 4] = at
        .checked_add(4)
        .and_then(|end| data.get(at..end))
        .and_then(|b| b.try_into().ok())
        .ok_or(BtfError::Truncated { what, at })?;
    Ok(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_btf() -> Vec<u8> {
        read_vmlinux().expect("kernel BTF")
    }

    /// The running kernel's BTF resolves every field; the values agree with
    /// facts that hold on every x86_64 kernel.
    #[test]
    fn cgroup_offsets_resolve_on_this_kernel() {
        let data = kernel_btf();
        let btf = Btf::parse(&data).unwrap();
        let mut off = Offsets::ZERO;
        resolve_cgroup_offsets(&btf, &mut off).unwrap();
        assert!(off.kn_id > off.kn_parent && off.css_set_dfl_cgrp > 0);
        // Its first members are the subsys pointers.
        assert!(off.css_set_memory < off.css_set_dfl_cgrp);
        assert!(btf.enum_value("memory_cgrp_id").unwrap() >= 0);
        assert!(btf.enum_value("no_such_enumerator_here").is_err());
    }

    #[test]
    fn offsets_resolve_on_this_kernel() {
        let data = kernel_btf();
        let btf = Btf::parse(&data).expect("parse kernel BTF");
        let o = resolve_offsets(&btf).expect("offsets");
        // struct path { struct vfsmount *mnt; struct dentry *dentry; }
        assert_eq!(o.path_mnt, 0);
        assert_eq!(o.path_dentry, 8);
        // vm_start is the first field of vm_area_struct.
        assert_eq!(o.vma_start, 0);
        // qstr: a 64-bit hash_len (a union with an anonymous struct of hash
        // and len), then the name pointer.
        assert_eq!(o.qstr_len, 4);
        assert_eq!(o.qstr_name, 8);
        assert!(o.task_mm > 0 && o.task_exit_code > 0);
        // mm_struct's fields sit in an anonymous struct.
        assert!(o.mm_start_brk > 0 && o.mm_brk == o.mm_start_brk + 8);
        // Every counter is there; the page counts follow each other (with
        // pinned_vm, an atomic64_t, between locked_vm and data_vm).
        assert_eq!(
            o.mm_counters,
            u64::from(tracer_common::MM_FIELDS | MM_VM_BLOCK)
        );
        assert!(o.mm_map_count > 0);
        assert_eq!(o.mm_locked_vm, o.mm_total_vm + 8);
        assert_eq!(o.mm_data_vm, o.mm_locked_vm + 16);
        assert_eq!(o.mm_exec_vm, o.mm_data_vm + 8);
        assert_eq!(o.mm_stack_vm, o.mm_exec_vm + 8);
    }

    #[test]
    fn missing_fields_are_named() {
        let data = kernel_btf();
        let btf = Btf::parse(&data).expect("parse kernel BTF");
        let err = field_offset(&btf, "task_struct", "no_such_field").unwrap_err();
        assert!(format!("{err:#}").contains("no_such_field"), "{err:#}");
    }

    /// Builds BTF blobs by hand, in either byte order.
    struct Builder {
        big_endian: bool,
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new(big_endian: bool) -> Builder {
            Builder {
                big_endian,
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn word(&mut self, value: u32) {
            let bytes = if self.big_endian {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            self.types.extend_from_slice(&bytes);
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        /// A btf_type; returns its id. Its trailing data comes next.
        fn ty(&mut self, name: &str, kind: u32, vlen: u32, kind_flag: bool, size: u32) -> u32 {
            let name = self.string(name);
            self.word(name);
            self.word((u32::from(kind_flag) << 31) | (kind << 24) | vlen);
            self.word(size);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.ty(name, KIND_INT, 0, false, size);
            self.word(size * 8);
            id
        }

        /// A struct or union; members are (name, type, raw offset word).
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            kind_flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.ty(name, kind, members.len() as u32, kind_flag, size);
            for (name, ty, offset) in members {
                let name = self.string(name);
                self.word(name);
                self.word(*ty);
                self.word(*offset);
            }
            id
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&if self.big_endian {
                MAGIC.to_be_bytes()
            } else {
                MAGIC.to_le_bytes()
            });
            // Version 1, no flags.
            out.extend_from_slice(&[1, 0]);
            let words = [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in words {
                out.extend_from_slice(&if self.big_endian {
                    w.to_be_bytes()
                } else {
                    w.to_le_bytes()
                });
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A blob shaped like the kernel's: every kind this reader skips comes
    /// before the structs; `mm` keeps its fields in an anonymous struct,
    /// `qstr` a union of an anonymous struct, `flags` has bitfields.
    fn sample(big_endian: bool) -> Vec<u8> {
        let mut b = Builder::new(big_endian);
        let int = b.int("int", 4); // 1
        let long = b.int("long", 8); // 2
        let ptr = b.ty("", KIND_PTR, 0, false, long); // 3
        let arr = b.ty("", KIND_ARRAY, 0, false, 0); // 4
        b.word(int);
        b.word(int);
        b.word(16);
        b.ty("colour", KIND_ENUM, 2, false, 4); // 5
        for (name, value) in [("RED", 0), ("BLUE", 1)] {
            let name = b.string(name);
            b.word(name);
            b.word(value);
        }
        b.ty("big", KIND_ENUM64, 1, false, 8); // 6
        let name = b.string("HUGE");
        b.word(name);
        b.word(0);
        b.word(1);
        let proto = b.ty("", KIND_FUNC_PROTO, 2, false, int); // 7
        for ty in [long, ptr] {
            let name = b.string("arg");
            b.word(name);
            b.word(ty);
        }
        b.ty("f", KIND_FUNC, 1, false, proto); // 8
        let var = b.ty("v", KIND_VAR, 0, false, int); // 9
        b.word(1);
        b.ty(".data", KIND_DATASEC, 1, false, 4); // 10
        b.word(var);
        b.word(0);
        b.word(4);
        b.ty("double", KIND_FLOAT, 0, false, 8); // 11
        b.ty("tag", KIND_DECL_TAG, 0, false, var); // 12
        b.word(u32::MAX);
        let tagged = b.ty("user", KIND_TYPE_TAG, 0, false, ptr); // 13
        b.ty("mm", KIND_FWD, 0, false, 0); // 14
        let volatile = b.ty("", KIND_VOLATILE, 0, false, long); // 15
        let restrict = b.ty("", KIND_RESTRICT, 0, false, tagged); // 16

        // An empty struct of the same name must not hide the real one.
        b.composite(KIND_STRUCT, "mm", 0, false, &[]); // 17
        let anon_id = b.next_id + 1;
        b.composite(
            KIND_STRUCT,
            "mm",
            40,
            false,
            &[("count", int, 0), ("", anon_id, 64)],
        ); // 18
        b.composite(
            KIND_STRUCT,
            "",
            32,
            false,
            &[
                ("start_brk", long, 0),
                ("brk", volatile, 64),
                ("table", arr, 128),
                ("user", restrict, 192),
            ],
        ); // 19
        let hash_len = b.composite(
            KIND_STRUCT,
            "",
            8,
            false,
            &[("hash", int, 0), ("len", int, 32)],
        ); // 20
        let union = b.composite(
            KIND_UNION,
            "",
            8,
            false,
            &[("", hash_len, 0), ("hash_len", long, 0)],
        ); // 21
        let qstr = b.composite(
            KIND_STRUCT,
            "qstr",
            16,
            false,
            &[("", union, 0), ("name", ptr, 64)],
        ); // 22
        let qstr_t = b.ty("qstr_t", KIND_TYPEDEF, 0, false, qstr); // 23
        let const_qstr = b.ty("", KIND_CONST, 0, false, qstr_t); // 24
        b.composite(
            KIND_STRUCT,
            "dentry",
            24,
            false,
            &[("parent", ptr, 0), ("d_name", const_qstr, 64)],
        ); // 25
           // kind_flag: bitfields (3 bits, then 5 bits), then a plain member
           // whose offset word still has a size of 0 in its top byte.
        b.composite(
            KIND_STRUCT,
            "flags",
            16,
            true,
            &[
                ("a", int, 3 << 24),
                ("b", int, (5 << 24) | 3),
                ("next", long, 64),
            ],
        ); // 26
        b.build()
    }

    #[test]
    fn reads_a_hand_built_blob() {
        for big_endian in [false, true] {
            let data = sample(big_endian);
            let btf = Btf::parse(&data).expect("parse");
            assert_eq!(btf.type_count(), 26);
            let off = |s: &str, p: &str| btf.member_offset(s, p);
            assert_eq!(off("mm", "count"), Ok(0));
            // Inside the anonymous struct at byte 8.
            assert_eq!(off("mm", "start_brk"), Ok(8));
            assert_eq!(off("mm", "brk"), Ok(16));
            assert_eq!(off("mm", "table"), Ok(24));
            assert_eq!(off("mm", "user"), Ok(32));
            // Anonymous struct inside an anonymous union.
            assert_eq!(off("qstr", "hash"), Ok(0));
            assert_eq!(off("qstr", "len"), Ok(4));
            assert_eq!(off("qstr", "hash_len"), Ok(0));
            assert_eq!(off("qstr", "name"), Ok(8));
            // Through a const typedef of a struct.
            assert_eq!(off("dentry", "d_name.len"), Ok(12));
            assert_eq!(off("dentry", "d_name.name"), Ok(16));
            assert_eq!(off("flags", "next"), Ok(8));
        }
    }

    #[test]
    fn names_what_cannot_be_resolved() {
        let data = sample(false);
        let btf = Btf::parse(&data).expect("parse");
        let off = |s: &str, p: &str| btf.member_offset(s, p);
        assert_eq!(off("nope", "x"), Err(BtfError::NoStruct("nope".into())));
        // An enum is not a struct.
        assert!(matches!(off("colour", "RED"), Err(BtfError::NoStruct(_))));
        let no_member = |s: &str, p: &str| BtfError::NoMember {
            structure: s.into(),
            path: p.into(),
        };
        assert_eq!(off("mm", "nope"), Err(no_member("mm", "nope")));
        // Members of a pointer's target are not members.
        assert_eq!(
            off("dentry", "parent.count"),
            Err(no_member("dentry", "parent.count"))
        );
        assert_eq!(off("mm", ""), Err(no_member("mm", "")));
        for field in ["a", "b"] {
            assert_eq!(
                off("flags", field),
                Err(BtfError::Bitfield {
                    structure: "flags".into(),
                    path: field.into()
                })
            );
        }
        let message = off("mm", "nope").unwrap_err().to_string();
        assert!(
            message.contains("mm") && message.contains("nope"),
            "{message}"
        );
    }

    #[test]
    fn rejects_bad_headers() {
        let good = sample(false);
        assert_eq!(
            Btf::parse(&[]).err(),
            Some(BtfError::Truncated {
                what: "header",
                at: 0
            })
        );
        let mut bad = good.clone();
        bad[0] = 0;
        assert_eq!(Btf::parse(&bad).err(), Some(BtfError::BadMagic));
        let mut bad = good.clone();
        bad[2] = 2;
        assert_eq!(
            Btf::parse(&bad).err(),
            Some(BtfError::UnsupportedVersion(2))
        );
        // hdr_len past the end.
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BadHeader(_))));
        // A string section length that overflows.
        let mut bad = good.clone();
        bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BadHeader(_))));
        // An unknown kind.
        let mut b = Builder::new(false);
        b.ty("x", 31, 0, false, 0);
        assert_eq!(
            Btf::parse(&b.build()).err(),
            Some(BtfError::UnknownKind { id: 1, kind: 31 })
        );
        // A struct announcing more members than the section holds.
        let mut b = Builder::new(false);
        b.ty("s", KIND_STRUCT, 3, false, 8);
        b.word(0);
        assert_eq!(
            Btf::parse(&b.build()).err(),
            Some(BtfError::Truncated {
                what: "type",
                at: 0
            })
        );
    }

    /// Every prefix of a valid blob, and the blob with its sections cut
    /// short, is refused with an error.
    #[test]
    fn truncated_blobs_are_errors() {
        let good = sample(false);
        for len in 0..good.len() {
            assert!(Btf::parse(&good[..len]).is_err(), "prefix of {len} bytes");
        }
        // Keep the data, shorten the type section by a few bytes.
        let types_len = u32::from_le_bytes(good[12..16].try_into().unwrap());
        for cut in 1..8u32 {
            let mut bad = good.clone();
            bad[12..16].copy_from_slice(&(types_len - cut).to_le_bytes());
            assert!(
                matches!(Btf::parse(&bad), Err(BtfError::Truncated { .. })),
                "type section {cut} bytes short"
            );
        }
    }

    #[test]
    fn cycles_and_dangling_ids_are_errors() {
        // typedef a -> typedef b -> typedef a, as a member's type; and a
        // struct that contains itself as an anonymous member.
        let mut b = Builder::new(false);
        let a = b.ty("a", KIND_TYPEDEF, 0, false, 2); // 1
        b.ty("b", KIND_TYPEDEF, 0, false, a); // 2
        b.composite(KIND_STRUCT, "loop", 8, false, &[("", a, 0)]); // 3
        b.composite(KIND_STRUCT, "self", 8, false, &[("", 4, 0)]); // 4
        b.composite(KIND_STRUCT, "dangling", 8, false, &[("", 99, 0)]); // 5
        b.composite(KIND_STRUCT, "names", 8, false, &[("x", a, 0)]); // 6
        let data = b.build();
        let btf = Btf::parse(&data).expect("parse");
        assert!(matches!(
            btf.member_offset("loop", "x"),
            Err(BtfError::TooDeep(_))
        ));
        assert!(matches!(
            btf.member_offset("self", "x"),
            Err(BtfError::TooDeep(_))
        ));
        assert_eq!(
            btf.member_offset("dangling", "x"),
            Err(BtfError::BadTypeId(99))
        );
        assert!(matches!(
            btf.member_offset("names", "x"),
            Err(BtfError::TooDeep(_))
        ));

        // A member name outside the string section.
        let mut b = Builder::new(false);
        b.ty("s", KIND_STRUCT, 1, false, 8);
        b.word(10_000);
        b.word(0);
        b.word(0);
        let data = b.build();
        let btf = Btf::parse(&data).expect("parse");
        assert_eq!(
            btf.member_offset("s", "x"),
            Err(BtfError::BadString(10_000))
        );
    }

    /// Damaged blobs give errors or odd offsets, never a panic.
    #[test]
    fn damaged_blobs_never_panic() {
        let good = sample(false);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut bad = good.clone();
            for _ in 0..=(next() % 4) {
                let at = (next() % bad.len() as u64) as usize;
                bad[at] = next() as u8;
            }
            if let Ok(btf) = Btf::parse(&bad) {
                for (s, p) in [("mm", "brk"), ("qstr", "len"), ("dentry", "d_name.name")] {
                    let _ = btf.member_offset(s, p);
                }
            }
        }
    }
}
