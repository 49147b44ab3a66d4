//! A small BTF parser (header, type section, string section, per
//! <https://docs.kernel.org/bpf/btf.html>): enough to find a struct by name and a member's
//! offset through anonymous members and typedefs. `aya-obj` 0.6 parses BTF but keeps struct
//! members, type lookup by id and the string table crate-private. Every kind's trailing data is
//! known, to find record boundaries. Everything is bounds-checked: a corrupt file is an error,
//! never a panic, and nothing is allocated from a length in the file.
use tracer_common::config::TaskOffsets;

use super::BtfError;

pub(super) const MAGIC: u16 = 0xeb9f;
pub(super) const HEADER_LEN: usize = 24;
/// Type record header: name_off, info, size/type.
pub(super) const TYPE_LEN: usize = 12;
/// Bounds following typedef/const chains and nesting of anonymous members (a corrupt file can
/// make them cycle).
pub(super) const MAX_DEPTH: u32 = 32;
/// Members looked at per lookup, at most (task_struct has a few hundred).
pub(super) const MAX_MEMBER_VISITS: u32 = 1 << 16;

pub(super) const KIND_INT: u32 = 1;
pub(super) const KIND_ARRAY: u32 = 3;
pub(super) const KIND_STRUCT: u32 = 4;
pub(super) const KIND_UNION: u32 = 5;
pub(super) const KIND_ENUM: u32 = 6;
pub(super) const KIND_TYPEDEF: u32 = 8;
pub(super) const KIND_VOLATILE: u32 = 9;
pub(super) const KIND_CONST: u32 = 10;
pub(super) const KIND_RESTRICT: u32 = 11;
pub(super) const KIND_TYPE_TAG: u32 = 18;

/// A validated BTF blob: every type record lies inside the type section.
pub(super) struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    big_endian: bool,
    /// Start of each type record in `types`; type id `n` is `starts[n - 1]` (0 is void).
    starts: Vec<usize>,
}

/// One type record: its 12-byte header decoded, plus its trailing data.
pub(super) struct Type<'a> {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// `size` for ints, structs, unions, …; `type` for pointers, typedefs, modifiers, ….
    size_or_type: u32,
    extra: &'a [u8],
}

pub(super) struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Non-zero only for bitfields encoded in the member (`kind_flag`).
    bitfield_size: u32,
}

fn read_u32(bytes: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// `bytes[start..start + len]`, with the error naming the section that does not fit.
fn section<'a>(
    bytes: &'a [u8],
    start: usize,
    len: u32,
    what: &'static str,
) -> Result<&'a [u8], BtfError> {
    start
        .checked_add(len as usize)
        .and_then(|end| bytes.get(start..end))
        .ok_or(BtfError::Corrupt(what))
}

/// Bytes of data after the 12-byte header of a type record; `None` for a kind this parser does
/// not know (the record's length, and so every later record, would be unknown).
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        // int (encoding), var (linkage), decl_tag (component index)
        1 | 14 | 17 => 4,
        // array: element type, index type, length
        3 => 12,
        // struct/union members, datasec entries, enum64 values: 12 bytes each
        4 | 5 | 15 | 19 => 12 * vlen,
        // enum values, func_proto params: 8 bytes each
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

impl<'a> Btf<'a> {
    pub(super) fn parse(bytes: &'a [u8]) -> Result<Btf<'a>, BtfError> {
        let Some(&[m0, m1]) = bytes.get(..2) else {
            return Err(BtfError::Corrupt("shorter than the BTF header"));
        };
        let big_endian = match [m0, m1] {
            m if m == MAGIC.to_le_bytes() => false,
            m if m == MAGIC.to_be_bytes() => true,
            m => return Err(BtfError::BadMagic(u16::from_le_bytes(m))),
        };
        let Some(&[_, _, version, _flags]) = bytes.get(..4) else {
            return Err(BtfError::Corrupt("shorter than the BTF header"));
        };
        if version != 1 {
            return Err(BtfError::Version(version));
        }
        let field = |at| {
            read_u32(bytes, at, big_endian).ok_or(BtfError::Corrupt("shorter than the BTF header"))
        };
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(4)?, field(8)?, field(12)?, field(16)?, field(20)?);
        // A longer header (fields appended by a newer kernel) is fine; a shorter one is not.
        let body = match bytes.get(hdr_len as usize..) {
            Some(body) if hdr_len as usize >= HEADER_LEN => body,
            _ => return Err(BtfError::Corrupt("header length out of range")),
        };
        let types = section(
            body,
            type_off as usize,
            type_len,
            "type section past the end",
        )?;
        let strings = section(
            body,
            str_off as usize,
            str_len,
            "string section past the end",
        )?;
        // Name lookups rely on both: offset 0 is the empty name, and every name is terminated.
        if strings.first() != Some(&0) || strings.last() != Some(&0) {
            return Err(BtfError::Corrupt("string section not NUL-delimited"));
        }

        // Record lengths depend on kind and vlen: one pass finds where each record starts.
        let mut starts = Vec::new();
        let mut at = 0;
        while at < types.len() {
            let id =
                u32::try_from(starts.len() + 1).map_err(|_| BtfError::Corrupt("too many types"))?;
            let info = read_u32(types, at + 4, big_endian)
                .ok_or(BtfError::Corrupt("type record cut short"))?;
            let kind = (info >> 24) & 0x1f;
            let extra = extra_len(kind, (info & 0xffff) as usize)
                .ok_or(BtfError::UnknownKind { id, kind })?;
            let end = at + TYPE_LEN + extra;
            if end > types.len() {
                return Err(BtfError::Corrupt("type record cut short"));
            }
            starts.push(at);
            at = end;
        }
        Ok(Btf {
            types,
            strings,
            big_endian,
            starts,
        })
    }

    fn u32_at(&self, bytes: &[u8], at: usize) -> Option<u32> {
        read_u32(bytes, at, self.big_endian)
    }

    /// The type with this id; `None` for void (0) and ids past the end.
    fn ty(&self, id: u32) -> Option<Type<'a>> {
        let at = *self.starts.get((id as usize).checked_sub(1)?)?;
        let info = self.u32_at(self.types, at + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let extra_start = at + TYPE_LEN;
        Some(Type {
            name_off: self.u32_at(self.types, at)?,
            kind,
            kind_flag: info >> 31 == 1,
            size_or_type: self.u32_at(self.types, at + 8)?,
            extra: self
                .types
                .get(extra_start..extra_start + extra_len(kind, vlen)?)?,
        })
    }

    /// The name at `off` in the string section (empty for anonymous types and members).
    fn name(&self, off: u32) -> Option<&'a [u8]> {
        let rest = self.strings.get(off as usize..)?;
        rest.split(|&b| b == 0).next()
    }

    /// The first STRUCT (not union, not forward declaration) called `name`.
    pub(super) fn find_struct(&self, name: &str) -> Option<u32> {
        (1..=self.starts.len() as u32).find(|&id| {
            self.ty(id).is_some_and(|t| {
                t.kind == KIND_STRUCT && self.name(t.name_off) == Some(name.as_bytes())
            })
        })
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<Type<'a>> {
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// A struct's or union's members (none for other kinds: their trailing data is not 12-byte
    /// members, except datasec and enum64, which are never passed here).
    fn members(&self, ty: &Type<'a>) -> impl Iterator<Item = Member> + use<'_, 'a> {
        let kind_flag = ty.kind_flag;
        ty.extra.as_chunks::<12>().0.iter().filter_map(move |m| {
            let offset = self.u32_at(m, 8)?;
            Some(Member {
                name_off: self.u32_at(m, 0)?,
                type_id: self.u32_at(m, 4)?,
                // With kind_flag the offset word is `bitfield_size << 24 | bit_offset`.
                bit_offset: if kind_flag {
                    offset & 0xff_ffff
                } else {
                    offset
                },
                bitfield_size: if kind_flag { offset >> 24 } else { 0 },
            })
        })
    }

    /// Without kind_flag, a bitfield is a member whose INT type covers fewer bits than its size.
    fn is_int_bitfield(&self, id: u32) -> bool {
        let Some(ty) = self.resolve(id) else {
            return false;
        };
        let Some(encoding) = self.u32_at(ty.extra, 0) else {
            return false;
        };
        let (bits, bit_offset) = (encoding & 0xff, (encoding >> 16) & 0xff);
        ty.kind == KIND_INT
            && (bit_offset != 0 || u64::from(bits) != u64::from(ty.size_or_type) * 8)
    }

    /// Byte offset of `path` (a member, a member of that member, …) from the start of struct
    /// `outer`; `None` when missing, a bitfield, or not byte-aligned.
    pub(super) fn offset_of(&self, outer: u32, path: &[&str]) -> Option<u32> {
        self.member_of(outer, path).map(|(offset, _)| offset)
    }

    /// [`Btf::offset_of`] and the member's type id.
    pub(super) fn member_of(&self, outer: u32, path: &[&str]) -> Option<(u32, u32)> {
        let (mut id, mut total) = (outer, 0u32);
        for name in path {
            // Bounds the work a corrupt file can cause through shared anonymous members.
            let mut budget = MAX_MEMBER_VISITS;
            let (offset, member_type) = self.member(id, name, 0, &mut budget)?;
            total = total.checked_add(offset)?;
            id = member_type;
        }
        (total != TaskOffsets::UNKNOWN).then_some((total, id))
    }

    /// An array type's element type id and length (through typedefs and qualifiers); `None`
    /// for any other type.
    pub(super) fn array(&self, id: u32) -> Option<(u32, u32)> {
        let ty = self.resolve(id)?;
        if ty.kind != KIND_ARRAY {
            return None;
        }
        // Trailing data: element type, index type, number of elements.
        Some((self.u32_at(ty.extra, 0)?, self.u32_at(ty.extra, 8)?))
    }

    /// A type's size in bytes: ints, enums, structs, unions and arrays of them (through
    /// typedefs and qualifiers); `None` for other kinds.
    pub(super) fn size_of(&self, id: u32) -> Option<u32> {
        let (mut id, mut count) = (id, 1u32);
        for _ in 0..MAX_DEPTH {
            let ty = self.resolve(id)?;
            match ty.kind {
                KIND_INT | KIND_ENUM | KIND_STRUCT | KIND_UNION => {
                    return ty.size_or_type.checked_mul(count);
                }
                KIND_ARRAY => {
                    let (elem, len) = self.array(id)?;
                    count = count.checked_mul(len)?;
                    id = elem;
                }
                _ => return None,
            }
        }
        None
    }

    /// Whether the type (through typedefs and qualifiers) is an integer.
    pub(super) fn is_int(&self, id: u32) -> bool {
        self.resolve(id).is_some_and(|t| t.kind == KIND_INT)
    }

    /// Finds member `name` of struct/union `id`, looking inside anonymous struct/union members
    /// (whose own offset is added). Returns its byte offset and type id.
    fn member(&self, id: u32, name: &str, depth: u32, budget: &mut u32) -> Option<(u32, u32)> {
        let ty = self.resolve(id)?;
        if depth > MAX_DEPTH || !matches!(ty.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in self.members(&ty) {
            *budget = budget.checked_sub(1)?;
            let aligned = m.bit_offset % 8 == 0;
            match self.name(m.name_off) {
                Some(b"") if aligned => {
                    if let Some((inner, t)) = self.member(m.type_id, name, depth + 1, budget) {
                        return Some(((m.bit_offset / 8).checked_add(inner)?, t));
                    }
                }
                Some(n) if n == name.as_bytes() => {
                    let bitfield = m.bitfield_size != 0 || self.is_int_bitfield(m.type_id);
                    return (aligned && !bitfield).then_some((m.bit_offset / 8, m.type_id));
                }
                _ => {}
            }
        }
        None
    }
}
