"""The weights blob object: readelf parses it for every target, and cc links it on the host.

binutils' ``readelf`` is the oracle for the file format (it reads every ELF machine,
whatever host it was built for); linking with ``cc`` and reading the bytes back
through ctypes checks that a real linker resolves the hidden symbol.
"""

from __future__ import annotations

import ctypes
import platform
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from patcc.backends import elf
from patcc.backends.elf import ELF_ARCHES, ElfArch, blob_object
from support.tools import require_tool

SYMBOL = "patcc_weights"

# What readelf -h prints for each architecture's Machine and Class lines.
EXPECTED_HEADER = {
    "x86_64": ("Advanced Micro Devices X86-64", "ELF64", "0x0"),
    "aarch64": ("AArch64", "ELF64", "0x0"),
    "armv7": ("ARM", "ELF32", "0x5000400"),
}

AARCH64_BE = ElfArch(elf.EM_AARCH64, is64=True, little_endian=False)


def readelf(path: Path, *args: str) -> str:
    """readelf's wide output for ``path``; fails the test on readelf's warnings."""
    tool = require_tool("readelf", "apt-get install binutils")
    result = subprocess.run(
        [tool, "-W", *args, str(path)], capture_output=True, text=True, check=True
    )
    assert result.stderr == "", result.stderr  # readelf warns, not fails, on malformed files
    return result.stdout


def header_field(text: str, field: str) -> str:
    match = re.search(rf"^\s*{field}:\s*(.*?)\s*$", text, re.MULTILINE)
    assert match, f"no {field!r} in readelf -h output:\n{text}"
    return match.group(1)


def section_row(text: str, name: str) -> dict[str, str]:
    """One row of ``readelf -S -W``: type, off, size, es, flags, link, info, align."""
    match = re.search(
        rf"\]\s+{re.escape(name)}\s+(\S+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+"
        r"([0-9a-f]+)\s+([A-Za-z]*)\s+(\d+)\s+(\d+)\s+(\d+)\s*$",
        text,
        re.MULTILINE,
    )
    assert match, f"no section {name!r} in readelf -S output:\n{text}"
    keys = ("type", "off", "size", "es", "flags", "link", "info", "align")
    return dict(zip(keys, match.groups(), strict=True))


def symbol_rows(text: str) -> list[list[str]]:
    """The rows of ``readelf -s -W``: num, value, size, type, bind, vis, ndx[, name]."""
    return [line.split() for line in text.splitlines() if re.match(r"\s*\d+:", line)]


def section_bytes(path: Path, name: str) -> bytes:
    """A section's contents, from the hex columns of ``readelf -x``."""
    out = readelf(path, "-x", name)
    data = bytearray()
    for line in out.splitlines():
        match = re.match(r"\s+0x[0-9a-f]+ ", line)
        if match:
            # readelf prints 16 bytes as four 8-digit groups in a 36-column field
            data += bytes.fromhex(line[match.end() : match.end() + 36].replace(" ", ""))
    return bytes(data)


@pytest.mark.needs_tool
@pytest.mark.parametrize("arch_name", sorted(ELF_ARCHES))
def test_readelf_parses_each_arch(tmp_path: Path, arch_name: str) -> None:
    data = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.o"
    path.write_bytes(blob_object(SYMBOL, data, ELF_ARCHES[arch_name]))

    header = readelf(path, "-h")
    machine, elf_class, flags = EXPECTED_HEADER[arch_name]
    assert header_field(header, "Machine") == machine
    assert header_field(header, "Class") == elf_class
    assert header_field(header, "Type").startswith("REL ")
    assert header_field(header, "Flags").split(",")[0] == flags

    sections = readelf(path, "-S")
    rodata = section_row(sections, ".rodata.patcc")
    assert rodata["type"] == "PROGBITS"
    assert int(rodata["size"], 16) == len(data)
    assert rodata["flags"] == "A"  # allocated, neither writable nor executable
    assert int(rodata["align"]) == 64
    stack = section_row(sections, ".note.GNU-stack")
    assert (int(stack["size"], 16), stack["flags"]) == (0, "")
    symtab = section_row(sections, ".symtab")
    assert symtab["info"] == "2"  # the first global follows the null and section symbols

    rows = symbol_rows(readelf(path, "-s"))
    assert [r[3:6] for r in rows] == [
        ["NOTYPE", "LOCAL", "DEFAULT"],
        ["SECTION", "LOCAL", "DEFAULT"],
        ["OBJECT", "GLOBAL", "HIDDEN"],
    ]
    blob_symbol = rows[2]
    assert (int(blob_symbol[1], 16), int(blob_symbol[2]), blob_symbol[6:]) == (
        0,
        len(data),
        ["1", SYMBOL],
    )
    assert section_bytes(path, ".rodata.patcc") == data


@pytest.mark.needs_tool
def test_big_endian_header_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "blob.o"
    path.write_bytes(blob_object(SYMBOL, b"\x01\x02\x03", AARCH64_BE, alignment=16))
    header = readelf(path, "-h")
    assert "big endian" in header_field(header, "Data")
    rodata = section_row(readelf(path, "-S"), ".rodata.patcc")
    assert (int(rodata["size"], 16), int(rodata["align"])) == (3, 16)
    assert symbol_rows(readelf(path, "-s"))[2][2] == "3"
    assert section_bytes(path, ".rodata.patcc") == b"\x01\x02\x03"


@pytest.mark.needs_tool
@pytest.mark.parametrize("arch_name", sorted(ELF_ARCHES))
def test_empty_blob(tmp_path: Path, arch_name: str) -> None:
    path = tmp_path / "blob.o"
    path.write_bytes(blob_object(SYMBOL, b"", ELF_ARCHES[arch_name]))
    assert int(section_row(readelf(path, "-S"), ".rodata.patcc")["size"], 16) == 0
    blob_symbol = symbol_rows(readelf(path, "-s"))[2]
    assert (blob_symbol[2], blob_symbol[-1]) == ("0", SYMBOL)


@pytest.mark.needs_tool
@pytest.mark.parametrize("alignment", [1, 4, 64, 4096])
@pytest.mark.parametrize("arch_name", ["x86_64", "armv7"])
def test_alignment_honoured(tmp_path: Path, arch_name: str, alignment: int) -> None:
    path = tmp_path / "blob.o"
    path.write_bytes(blob_object(SYMBOL, b"x" * 5, ELF_ARCHES[arch_name], alignment))
    rodata = section_row(readelf(path, "-S"), ".rodata.patcc")
    assert int(rodata["align"]) == alignment
    # the file offset is aligned too, so a loader mapping the file keeps the alignment
    assert int(rodata["off"], 16) % alignment == 0


def test_deterministic() -> None:
    data = bytes(range(256)) * 10
    for arch in ELF_ARCHES.values():
        assert blob_object(SYMBOL, data, arch) == blob_object(SYMBOL, bytes(data), arch)
    assert blob_object(SYMBOL, data, ELF_ARCHES["x86_64"]) != blob_object(
        SYMBOL, data, ELF_ARCHES["aarch64"]
    )


@pytest.mark.parametrize("alignment", [0, -8, 3, 48])
def test_alignment_must_be_power_of_two(alignment: int) -> None:
    with pytest.raises(ValueError, match=rf"alignment {alignment} must be a power of two"):
        blob_object(SYMBOL, b"", ELF_ARCHES["x86_64"], alignment)


@pytest.mark.parametrize("symbol", ["", "bad\0name"])
def test_symbol_must_be_a_name(symbol: str) -> None:
    with pytest.raises(ValueError, match="non-empty name without NUL"):
        blob_object(symbol, b"", ELF_ARCHES["x86_64"])


def test_32_bit_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Patch the limit down rather than allocate 2 GiB in a unit test.
    monkeypatch.setattr(elf, "MAX_BLOB_32", 10)
    blob_object(SYMBOL, bytes(10), ELF_ARCHES["armv7"])
    with pytest.raises(ValueError, match=r"11 bytes, but a 32-bit target .* at most 10"):
        blob_object(SYMBOL, bytes(11), ELF_ARCHES["armv7"])
    blob_object(SYMBOL, bytes(11), ELF_ARCHES["aarch64"])  # 64-bit targets have no such limit


GETTER_C = """\
const unsigned char *get(void);
extern const unsigned char patcc_weights[];
const unsigned char *get(void) { return patcc_weights; }
"""


@pytest.mark.needs_tool
@pytest.mark.skipif(platform.machine() != "x86_64", reason="links for the x86_64 host")
def test_links_into_shared_object_without_exporting(tmp_path: Path) -> None:
    cc = require_tool("cc", "apt-get install build-essential")
    nm = require_tool("nm", "apt-get install binutils")
    data = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    (tmp_path / "blob.o").write_bytes(blob_object(SYMBOL, data, ELF_ARCHES["x86_64"]))
    (tmp_path / "a.c").write_text(GETTER_C)
    subprocess.run([cc, "-c", "-fPIC", "-o", "a.o", "a.c"], cwd=tmp_path, check=True)
    link = subprocess.run(
        [cc, "-shared", "-o", "lib.so", "a.o", "blob.o"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    # GNU ld warns "missing .note.GNU-stack section implies executable stack" without it
    assert "executable stack" not in link.stderr, link.stderr

    lib = ctypes.CDLL(str(tmp_path / "lib.so"))
    lib.get.restype = ctypes.c_void_p
    assert ctypes.string_at(lib.get(), len(data)) == data

    dynamic = subprocess.run(
        [nm, "-D", "--defined-only", str(tmp_path / "lib.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"\bget$", dynamic, re.MULTILINE), dynamic  # the check can fail
    assert SYMBOL not in dynamic
    stack = subprocess.run(
        [require_tool("readelf", "apt-get install binutils"), "-W", "-l", str(tmp_path / "lib.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"GNU_STACK.*\bRW\s", stack), stack  # not RWE
