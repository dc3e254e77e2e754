"""Write an ELF relocatable object that holds one read-only data blob (the model weights).

Weights run to hundreds of megabytes, far too much to spell out as an LLVM IR constant.
The code object instead declares ``@patcc_weights = external hidden constant [N x i8]``
and the linker resolves that symbol against the object written here, which holds
nothing but the bytes, the symbol naming them and the sections every ELF needs.

Layout of the file (offsets ascending)::

    ELF header | .rodata.patcc | .symtab | .strtab | .shstrtab | section header table

Section indices: 0 null, 1 ``.rodata.patcc``, 2 ``.note.GNU-stack``, 3 ``.symtab``,
4 ``.strtab``, 5 ``.shstrtab``. Symbols: 0 null, 1 the local SECTION symbol of
``.rodata.patcc``, 2 the GLOBAL OBJECT HIDDEN blob symbol.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183


@dataclass(frozen=True)
class ElfArch:
    """What the ELF header says about the target: machine, word size, byte order, flags."""

    machine: int  # e_machine: EM_X86_64=62, EM_AARCH64=183, EM_ARM=40
    is64: bool  # ELFCLASS64 vs ELFCLASS32
    little_endian: bool = True
    flags: int = 0  # e_flags (ARM EABI5 hard-float: 0x05000400)


ELF_ARCHES: dict[str, ElfArch] = {
    "x86_64": ElfArch(EM_X86_64, is64=True),
    "aarch64": ElfArch(EM_AARCH64, is64=True),
    # EF_ARM_EABI_VER5 | EF_ARM_ABI_FLOAT_HARD: without the float-ABI flag ld refuses to
    # link this object with hard-float (armhf) code objects.
    "armv7": ElfArch(EM_ARM, is64=False, flags=0x05000400),
}
"""ELF header fields per architecture name, as the LLVM backend's targets spell them."""

MAX_BLOB_32 = 2**31 - 1
"""Largest blob for a 32-bit target: its offsets and symbol sizes are 32-bit, and the
ARM toolchain treats sizes as signed."""

# ELF constants (System V ABI, "ELF Object Files").
_ET_REL = 1
_EV_CURRENT = 1
_ELFCLASS32, _ELFCLASS64 = 1, 2
_ELFDATA2LSB, _ELFDATA2MSB = 1, 2
_SHT_PROGBITS, _SHT_SYMTAB, _SHT_STRTAB = 1, 2, 3
_SHF_ALLOC = 0x2
_STB_LOCAL, _STB_GLOBAL = 0, 1
_STT_OBJECT, _STT_SECTION = 1, 3
_STV_HIDDEN = 2

_RODATA, _NOTE_STACK, _SYMTAB, _STRTAB, _SHSTRTAB = 1, 2, 3, 4, 5
_SECTION_NAMES = ("", ".rodata.patcc", ".note.GNU-stack", ".symtab", ".strtab", ".shstrtab")


@dataclass(frozen=True)
class _Section:
    name: int  # offset of the name in .shstrtab
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    addralign: int
    entsize: int


def _align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _string_table(strings: tuple[bytes, ...]) -> tuple[bytes, list[int]]:
    """A NUL-separated string table starting with the empty string, and each string's offset."""
    table = bytearray(b"\0")
    offsets = []
    for s in strings:
        if not s:
            offsets.append(0)
            continue
        offsets.append(len(table))
        table += s + b"\0"
    return bytes(table), offsets


def _check(symbol: str, data: bytes, arch: ElfArch, alignment: int) -> bytes:
    """The symbol's name as bytes, or ValueError saying which argument is bad."""
    if not symbol or "\0" in symbol:
        raise ValueError(
            f"blob symbol {symbol!r} must be a non-empty name without NUL bytes "
            "(eg. 'patcc_weights')"
        )
    if alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"blob alignment {alignment} must be a power of two (eg. 64)")
    if not arch.is64 and len(data) > MAX_BLOB_32:
        raise ValueError(
            f"blob {symbol!r} is {len(data)} bytes, but a 32-bit target (e_machine "
            f"{arch.machine}) holds at most {MAX_BLOB_32} bytes; prune or quantize the model"
        )
    return symbol.encode("utf-8")


def blob_object(symbol: str, data: bytes, arch: ElfArch, alignment: int = 64) -> bytes:
    """The bytes of an ELF relocatable object defining ``symbol`` as the read-only ``data``.

    Takes the symbol name (defined GLOBAL, OBJECT, hidden visibility, so it links into
    a shared object without being exported from it), the bytes, the target's
    ``ElfArch`` and the alignment of the data section (a power of two). Returns the
    object file's bytes; the same arguments always give the same bytes.
    Raises ValueError for an empty or NUL-containing symbol, an alignment that is not a
    power of two, or data over ``MAX_BLOB_32`` bytes for a 32-bit target.
    """
    name = _check(symbol, data, arch, alignment)
    order = "<" if arch.little_endian else ">"
    word = "Q" if arch.is64 else "I"
    ehdr_size, shdr_size, sym_size = (64, 64, 24) if arch.is64 else (52, 40, 16)
    word_align = 8 if arch.is64 else 4

    def symbol_entry(st_name: int, info: int, other: int, shndx: int, size: int) -> bytes:
        if arch.is64:
            return struct.pack(order + "IBBHQQ", st_name, info, other, shndx, 0, size)
        return struct.pack(order + "IIIBBH", st_name, 0, size, info, other, shndx)

    strtab, (name_offset,) = _string_table((name,))
    shstrtab, section_names = _string_table(tuple(s.encode() for s in _SECTION_NAMES))
    symtab = b"".join(
        (
            bytes(sym_size),  # the mandatory null symbol
            symbol_entry(0, _STB_LOCAL << 4 | _STT_SECTION, 0, _RODATA, 0),
            symbol_entry(
                name_offset, _STB_GLOBAL << 4 | _STT_OBJECT, _STV_HIDDEN, _RODATA, len(data)
            ),
        )
    )
    first_global = 2

    # Lay the file out: each part at its alignment, remembering the padding before it.
    parts: list[bytes] = [b""]  # the ELF header, packed once the layout is known
    offset = ehdr_size

    def place(blob: bytes, align: int) -> int:
        nonlocal offset
        start = _align_up(offset, align)
        parts.append(bytes(start - offset))
        parts.append(blob)
        offset = start + len(blob)
        return start

    rodata_at = place(data, alignment)
    symtab_at = place(symtab, word_align)
    strtab_at = place(strtab, 1)
    shstrtab_at = place(shstrtab, 1)

    sections = (
        _Section(0, 0, 0, 0, 0, 0, 0, 0, 0),
        _Section(
            section_names[_RODATA],
            _SHT_PROGBITS,
            _SHF_ALLOC,
            rodata_at,
            len(data),
            0,
            0,
            alignment,
            0,
        ),
        # An empty .note.GNU-stack tells the linker this object needs no executable stack;
        # without it GNU ld assumes it does and marks the whole shared object so.
        _Section(
            section_names[_NOTE_STACK], _SHT_PROGBITS, 0, rodata_at + len(data), 0, 0, 0, 1, 0
        ),
        _Section(
            section_names[_SYMTAB],
            _SHT_SYMTAB,
            0,
            symtab_at,
            len(symtab),
            _STRTAB,
            first_global,
            word_align,
            sym_size,
        ),
        _Section(section_names[_STRTAB], _SHT_STRTAB, 0, strtab_at, len(strtab), 0, 0, 1, 0),
        _Section(section_names[_SHSTRTAB], _SHT_STRTAB, 0, shstrtab_at, len(shstrtab), 0, 0, 1, 0),
    )
    shdr_format = order + ("IIQQQQIIQQ" if arch.is64 else "IIIIIIIIII")
    headers = b"".join(
        struct.pack(
            shdr_format,
            s.name,
            s.type,
            s.flags,
            0,
            s.offset,
            s.size,
            s.link,
            s.info,
            s.addralign,
            s.entsize,
        )
        for s in sections
    )
    shoff = place(headers, word_align)

    ident = b"\x7fELF" + bytes(
        (
            _ELFCLASS64 if arch.is64 else _ELFCLASS32,
            _ELFDATA2LSB if arch.little_endian else _ELFDATA2MSB,
            _EV_CURRENT,
            0,  # ELFOSABI_NONE (System V)
        )
    )
    parts[0] = struct.pack(
        order + f"16sHHI{word}{word}{word}IHHHHHH",
        ident,
        _ET_REL,
        arch.machine,
        _EV_CURRENT,
        0,  # e_entry: none for a relocatable object
        0,  # e_phoff: no program headers
        shoff,
        arch.flags,
        ehdr_size,
        0,  # e_phentsize
        0,  # e_phnum
        shdr_size,
        len(sections),
        _SHSTRTAB,
    )
    # One join, so a blob of hundreds of MB is copied once.
    return b"".join(parts)


# --- reading -----------------------------------------------------------------------

_SHT_DYNAMIC, _SHT_DYNSYM = 6, 11
_DT_NEEDED, _DT_SONAME = 1, 14
_SHN_UNDEF = 0
_STB_WEAK = 2


@dataclass(frozen=True)
class ElfSymbols:
    """What an ELF file needs and provides: its machine, its ``DT_NEEDED`` libraries
    and soname (shared objects), and the global symbols it defines with default or
    protected visibility (``defined``) or leaves undefined (``undefined``), read from
    ``.dynsym`` when there is one (shared objects) and ``.symtab`` otherwise."""

    machine: int
    needed: tuple[str, ...]
    soname: str | None
    defined: frozenset[str]
    undefined: frozenset[str]


def read_symbols(data: bytes) -> ElfSymbols:
    """Read an ELF object or shared object (32- or 64-bit, either byte order);
    raises ``ValueError`` for anything else."""
    if data[:4] != b"\x7fELF" or len(data) < 52:
        raise ValueError("not an ELF file")
    is64, order = data[4] == _ELFCLASS64, "<" if data[5] == _ELFDATA2LSB else ">"
    word = "Q" if is64 else "I"
    (machine,) = struct.unpack_from(order + "H", data, 18)
    shoff, = struct.unpack_from(order + word, data, 40 if is64 else 32)
    shentsize, shnum = struct.unpack_from(order + "HH", data, 58 if is64 else 46)
    header = order + (f"II{word}{word}{word}{word}II{word}{word}")
    sections = []
    for i in range(shnum):
        name, typ, _, _, offset, size, link, info, _, entsize = struct.unpack_from(
            header, data, shoff + i * shentsize)
        sections.append(_Section(name, typ, 0, offset, size, link, info, 0, entsize))

    def string(table: _Section, at: int) -> str:
        start = table.offset + at
        return data[start:data.index(b"\0", start)].decode()

    needed: list[str] = []
    soname = None
    for sec in sections:
        if sec.type == _SHT_DYNAMIC:
            entry = order + ("qQ" if is64 else "iI")
            for at in range(sec.offset, sec.offset + sec.size, struct.calcsize(entry)):
                tag, value = struct.unpack_from(entry, data, at)
                if tag == _DT_NEEDED:
                    needed.append(string(sections[sec.link], value))
                elif tag == _DT_SONAME:
                    soname = string(sections[sec.link], value)
    tables = [s for s in sections if s.type == _SHT_DYNSYM] or \
        [s for s in sections if s.type == _SHT_SYMTAB]
    defined: set[str] = set()
    undefined: set[str] = set()
    for table in tables:
        entry = order + ("IBBHQQ" if is64 else "IIIBBH")
        for at in range(table.offset + table.entsize, table.offset + table.size, table.entsize):
            fields = struct.unpack_from(entry, data, at)
            if is64:
                name, info, other, shndx = fields[:4]
            else:
                name, info, other, shndx = fields[0], fields[3], fields[4], fields[5]
            if info >> 4 not in (_STB_GLOBAL, _STB_WEAK) or not name:
                continue
            symbol = string(sections[table.link], name)
            if shndx == _SHN_UNDEF:
                undefined.add(symbol)
            elif other & 3 != _STV_HIDDEN:
                defined.add(symbol)
    return ElfSymbols(machine, tuple(needed), soname, frozenset(defined),
                      frozenset(undefined))


_PT_LOAD = 1


@dataclass(frozen=True)
class LoadSegment:
    """A ``PT_LOAD`` program header: where it is in the file and in memory."""

    offset: int
    vaddr: int
    align: int


def read_load_segments(data: bytes) -> list[LoadSegment]:
    """The loadable segments of a 64-bit little-endian ELF file (what a loader maps);
    raises ``ValueError`` for anything else."""
    if data[:4] != b"\x7fELF" or data[4] != _ELFCLASS64 or data[5] != _ELFDATA2LSB:
        raise ValueError("not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    segments = []
    for i in range(phnum):
        typ, _, offset, vaddr, _, _, _, align = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize)
        if typ == _PT_LOAD:
            segments.append(LoadSegment(offset, vaddr, align))
    return segments
