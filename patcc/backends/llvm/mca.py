"""Static analysis of the generated inner loops: read them from the assembly and ask
llvm-mca what they cost on the target CPU.

The compiled module is printed as verbose assembly, where LLVM annotates every basic
block with its IR name and its place in the loop nest (``=>This Inner Loop Header:
Depth=5``, ``in Loop: Header=BB0_37``). Phase functions prefix their blocks with
their layer (``L12.k0.body``, see ``codegen.emit_module``), so a loop is found back
under its layer even after LLVM inlined the phase into the thread pool's dispatcher
and unswitched or duplicated it. What is analysed is exactly the code that ships.

Per layer the *hot* loops are the innermost ones with the most FMAs (the full
register tile; edge tiles have fewer), one per IR loop -- for a pattern kernel that
is one ``k<p>`` loop per pattern. llvm-mca simulates each loop body for many
iterations on the target CPU's scheduling model, which gives cycles per iteration
with the loop-carried accumulator chains and the port pressure included (it assumes
every load hits L1). Its peak is measured the same way, on a block of independent
FMAs, so "% of FMA peak" compares the loop with what the same model allows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from patcc.backends.target import Target, scheduling_model_cpu
from patcc.errors import BackendError

MCA_ITERATIONS = 200
PEAK_ACCUMULATORS = 24  # independent FMA chains: more than latency x pipes anywhere

_LABEL = re.compile(r"^(\.?[\w.$]+):")
_BLOCK_COMMENT = re.compile(r"^\s*(?://|#)\s*%bb\.\d+:")
_IR_NAME = re.compile(r"(?://|#)\s*%([^\s]+)")
_INNER_HEADER = re.compile(r"=>\s*This Inner Loop Header: Depth=(\d+)")
_IN_LOOP = re.compile(r"in Loop: Header=(BB\d+_\d+) Depth=(\d+)")
_LAYER_LOOP = re.compile(r"^L(\d+)\.(.+?)(?:\.(?:body|head|end)\b.*)?$")
_SPILL = re.compile(r"(\d+)-byte (?:Folded )?(Spill|Reload)")
_FMA_ARM = {"fmla", "fmls", "fmadd", "fmsub", "fnmadd", "fnmsub"}
_FMA_X86 = ("vfmadd", "vfmsub", "vfnmadd", "vfnmsub")


@dataclass(frozen=True)
class InnerLoop:
    """An innermost loop of the assembly: the layer (index into the plan's codes) and
    IR loop name its header block carries, and its instructions in order."""

    layer: int
    name: str
    instructions: tuple[str, ...]
    arch: str
    spills: int = 0
    """Registers stored to the stack per iteration (LLVM's ``N-byte Spill`` notes)."""
    reloads: int = 0
    """Values read back from the stack per iteration (``N-byte Reload``): with
    ``spills``, 0 when the loop's values fit the registers."""
    vector_spills: int = 0
    """Of the spills and reloads, those of vector registers (16 bytes or more)."""

    @property
    def fmas(self) -> int:
        return sum(1 for ins in self.instructions if _is_fma(ins, self.arch))

    @property
    def loaded(self) -> int:
        """Values loaded per iteration: registers filled from memory (an ``ldp`` or a
        two-register ``ld1`` counts twice) or memory operands folded into x86
        instructions -- comparable with the plan's loads per FMA."""
        return sum(_loaded(ins, self.arch) for ins in self.instructions)

    @property
    def fma_form(self) -> str:
        """The commonest FMA, mnemonic and vector arrangement: ``fmla .4s``,
        ``vfmadd231ps zmm``."""
        forms = Counter(_fma_form(ins, self.arch) for ins in self.instructions
                        if _is_fma(ins, self.arch))
        return forms.most_common(1)[0][0] if forms else ""


def _mnemonic(ins: str) -> str:
    return ins.split(None, 1)[0].lower()


def _operands(ins: str) -> list[str]:
    parts = ins.split(None, 1)
    if len(parts) < 2:
        return []
    out, depth, cur = [], 0, ""
    for ch in parts[1]:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def _is_fma(ins: str, arch: str) -> bool:
    m = _mnemonic(ins)
    return m in _FMA_ARM if arch == "aarch64" else m.startswith(_FMA_X86)


def _fma_form(ins: str, arch: str) -> str:
    ops = _operands(ins)
    if arch == "aarch64":
        found = re.search(r"\.(\d+[bhsd])\b", ops[0]) if ops else None
        return f"{_mnemonic(ins)} .{found.group(1)}" if found else _mnemonic(ins)
    reg = re.match(r"%([xyz]mm)", ops[-1]) if ops else None
    return f"{_mnemonic(ins)} {reg.group(1)}" if reg else _mnemonic(ins)


def _loaded(ins: str, arch: str) -> int:
    ops = _operands(ins)
    if arch == "aarch64":
        m = _mnemonic(ins)
        if not m.startswith("ld"):
            return 0
        if ops and ops[0].startswith("{"):  # ld1 {v0.4s, v1.4s}, [x0]
            return ops[0].count(",") + 1
        return 2 if m.startswith(("ldp", "ldnp")) else 1
    if _mnemonic(ins).startswith(("lea", "nop", "prefetch")):
        return 0
    return sum(1 for op in ops[:-1] if "(" in op)  # AT&T: the destination is last


@dataclass
class _Block:
    bb: str  # "BB0_39" for label .LBB0_39; "" for an unlabelled block
    ir_name: str
    inner_header: bool
    loop: str | None  # the header of the innermost loop it is in, when not the header
    code: list[str] = field(default_factory=list)
    spills: int = 0
    reloads: int = 0
    vector_spills: int = 0


def _blocks(asm: str, arch: str) -> list[_Block]:
    comment = "//" if arch == "aarch64" else "#"  # '#' starts an ARM immediate
    blocks: list[_Block] = []
    for line in asm.splitlines():
        label = _LABEL.match(line)
        if label or _BLOCK_COMMENT.match(line):
            ir_name = _IR_NAME.search(line[label.end():] if label else line.split(":", 1)[1])
            member = _IN_LOOP.search(line)
            bb = label.group(1).lstrip(".").removeprefix("L") if label else ""
            blocks.append(_Block(bb, ir_name.group(1) if ir_name else "",
                                 bool(_INNER_HEADER.search(line)),
                                 member.group(1) if member else None))
            continue
        stripped = line.strip()
        if not blocks or not stripped:
            continue
        block = blocks[-1]
        if stripped.startswith(("//", "#")):  # LLVM's loop annotations
            block.inner_header = block.inner_header or bool(_INNER_HEADER.search(stripped))
            member = _IN_LOOP.search(stripped)
            if member:
                block.loop = member.group(1)
        elif line[0].isspace() and not stripped.startswith("."):  # not a directive
            code, _, note = stripped.partition(comment)
            if code.strip():
                block.code.append(code.strip())
                spill = _SPILL.search(note)
                if spill and spill.group(2) == "Spill":
                    block.spills += 1
                elif spill:
                    block.reloads += 1
                if spill and int(spill.group(1)) >= 16:
                    block.vector_spills += 1
    return blocks


def parse_inner_loops(asm: str, arch: str) -> list[InnerLoop]:
    """Every innermost loop of verbose assembly whose header block belongs to a layer
    (IR name ``L<layer>.<loop>...``), in the order they appear."""
    blocks = _blocks(asm, arch)
    loops = []
    for header in blocks:
        named = _LAYER_LOOP.match(header.ir_name) if header.inner_header else None
        if named:
            members = [header, *(b for b in blocks if b.loop == header.bb)]
            loops.append(InnerLoop(int(named.group(1)), named.group(2),
                                   tuple(ins for b in members for ins in b.code), arch,
                                   spills=sum(b.spills for b in members),
                                   reloads=sum(b.reloads for b in members),
                                   vector_spills=sum(b.vector_spills for b in members)))
    return loops


def hot_loops(loops: list[InnerLoop]) -> dict[int, list[InnerLoop]]:
    """Per layer: of each IR loop, its copy with the most FMAs; of those, the ones
    with the layer's most FMAs per iteration."""
    best: dict[tuple[int, str], InnerLoop] = {}
    for loop in loops:
        key = (loop.layer, loop.name)
        if loop.fmas and (key not in best or loop.fmas > best[key].fmas):
            best[key] = loop
    by_layer: dict[int, list[InnerLoop]] = {}
    for (layer, _), loop in best.items():
        by_layer.setdefault(layer, []).append(loop)
    return {layer: [lp for lp in group if lp.fmas == max(x.fmas for x in group)]
            for layer, group in by_layer.items()}


# -- llvm-mca -------------------------------------------------------------------------


@dataclass(frozen=True)
class Mca:
    """An llvm-mca executable and its LLVM version."""

    path: str
    version: tuple[int, ...]

    def __str__(self) -> str:
        return f"llvm-mca {'.'.join(map(str, self.version))}"

    def cycles(self, bodies: list[tuple[str, ...]], target: Target) -> list[float]:
        """Simulated cycles per iteration of each instruction sequence, in one run of
        llvm-mca (one code region each) on ``target``'s scheduling model."""
        text = "".join(f"# LLVM-MCA-BEGIN r{i}\n" + "\n".join(body) + f"\n# LLVM-MCA-END r{i}\n"
                       for i, body in enumerate(bodies))
        cpu = scheduling_model_cpu(target.cpu)
        cmd = [self.path, f"-mtriple={target.triple}", f"-mcpu={cpu}",
               f"-iterations={MCA_ITERATIONS}", "-instruction-info=0",
               "-resource-pressure=0"]
        if target.features:
            cmd.append(f"-mattr={target.features}")
        proc = subprocess.run(cmd, input=text, capture_output=True, text=True, check=False)
        if f"'{cpu}' is not a recognized processor" in proc.stderr:
            raise BackendError(f"{self} has no scheduling model for CPU {cpu!r}; "
                             "a newer LLVM (apt-get install llvm-19) may have one")
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BackendError(f"{self} failed on the loops of {target.tag}: {last}")
        found: dict[int, float] = {}
        for region in re.split(r"\n(?=\[\d+\] Code Region - )", proc.stdout):
            name = re.match(r"\[\d+\] Code Region - r(\d+)", region)
            iters = re.search(r"Iterations:\s+(\d+)", region)
            total = re.search(r"Total Cycles:\s+(\d+)", region)
            if name and iters and total:
                found[int(name.group(1))] = int(total.group(1)) / int(iters.group(1))
        if len(found) != len(bodies):
            raise BackendError(f"{self} reported {len(found)} of {len(bodies)} loops")
        return [found[i] for i in range(len(bodies))]

    def fma_peak(self, target: Target) -> float:
        """FMAs per cycle the scheduling model allows: independent vector FMAs."""
        arch = target.triple.split("-")[0]
        n = PEAK_ACCUMULATORS
        if arch == "aarch64":
            body = tuple(f"fmla v{i}.4s, v{n}.4s, v{n + 1}.4s" for i in range(n))
        else:
            reg = {512: "zmm", 256: "ymm"}.get(target.vector_bits, "xmm")
            n = n if reg == "zmm" else 14
            body = tuple(f"vfmadd231ps %{reg}{n}, %{reg}{n + 1}, %{reg}{i}" for i in range(n))
        return n / self.cycles([body], target)[0]


def _version(path: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             check=False, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"LLVM version (\d+(?:\.\d+)*)", out)
    return tuple(int(p) for p in found.group(1).split(".")) if found else None


@lru_cache(maxsize=1)
def find_llvm_mca() -> Mca | None:
    """The newest llvm-mca on PATH (``llvm-mca`` or ``llvm-mca-NN``), or None.
    ``PATCC_LLVM_MCA`` names one explicitly."""
    named = os.environ.get("PATCC_LLVM_MCA")
    if named:
        version = _version(named)
        if version is None:
            raise BackendError(f"PATCC_LLVM_MCA={named!r} is not a working llvm-mca")
        return Mca(named, version)
    candidates = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for entry in Path(directory).glob("llvm-mca*"):
            if re.fullmatch(r"llvm-mca(-\d+)?", entry.name) and os.access(entry, os.X_OK):
                candidates.add(str(entry))
    found = [(v, p) for p in sorted(candidates) if (v := _version(p)) is not None]
    if not found:
        return None
    version, path = max(found)
    return Mca(shutil.which(path) or path, version)
