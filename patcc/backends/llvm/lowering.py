"""How a layer becomes code: a list of parallel phases plus scratch memory and weights.

Each layer lowers to ``LayerCode``: one or more ``Phase``s run in order, each a
parallel-for over ``tasks`` independent tasks (a padding copy, then the convolution;
a stride-phase plane copy, then the matrix product). A phase body is emitted into a function
``void(ptr operands, i64 task)`` whose operand table holds the layer's input, output
and scratch pointers. Constant data goes into the ``WeightBlob``, linked into the
shared object as one read-only symbol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from llvmlite import ir

from patcc.backends.llvm.irutil import PTR, KernelBuilder, i64
from patcc.backends.planning import WeightBlob
from patcc.backends.target import Target
from patcc.ir.layers import Layer, Shape

BLOB_SYMBOL = "patcc_weights"
BLOB_ALIGN = 64


@dataclass
class Operands:
    """Pointers a phase body may use, loaded from the operand table of its layer."""

    inputs: list[ir.Value]
    outputs: list[ir.Value]
    scratch: ir.Value
    blob: ir.Value

    def weights(self, kb: KernelBuilder, byte_offset: int) -> ir.Value:
        """Pointer to the constant array stored at ``byte_offset`` of the blob."""
        return kb.b.gep(self.blob, [i64(byte_offset)], source_etype=ir.IntType(8))


PhaseBody = Callable[[KernelBuilder, Operands, ir.Value], None]


@dataclass
class Phase:
    """A parallel-for: ``body(kb, operands, task)`` for task in 0..tasks-1.

    Each phase is its own function, never inlined into the pool's dispatcher: one
    dispatcher holding every layer's code made LLVM's O3 superlinear in the number of
    layers (a chain of 200 activations took 2.6x the time of 100), and a body with
    large stack buffers would get slots in one frame shared by every phase."""

    name: str
    tasks: int
    body: PhaseBody


@dataclass
class LayerCode:
    """What a layer needs at run time: phases, scratch bytes, and the kernel chosen."""

    layer: Layer
    phases: list[Phase]
    kernel: str
    scratch_bytes: int = 0
    notes: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Schedule:
    """How one layer is computed: its kernel and the kernel's block, in the kernel's
    own notation (``pattern:4r2v``, ``gemm:6x4v``). Layers with a choice list theirs
    (e.g. ``conv_schedules``), the cost model's pick first; the tuner times them."""

    kernel: str
    block: str

    def __str__(self) -> str:
        return f"{self.kernel}:{self.block}"

    @classmethod
    def parse(cls, text: str) -> Schedule:
        kernel, sep, block = text.partition(":")
        if not sep or not kernel or not block:
            raise ValueError(f"bad schedule {text!r}; expected '<kernel>:<block>', e.g. "
                             "'pattern:4r2v'")
        return cls(kernel, block)


@dataclass
class LoweringContext:
    """What lowering functions get besides the layer: shapes, target, the blob, and
    the schedules chosen for some layers (by name; the others take their default)."""

    shapes: dict[str, Shape]
    target: Target
    blob: WeightBlob
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    memo: dict[tuple[str, str], object] = field(default_factory=dict)
    in_place: frozenset[str] = frozenset()
    """Tensors their producer writes straight into the Concat that reads them
    (``patcc.backends.planning.concat_placements``): that Concat copies the others."""
    """Analyses of a layer kept for the rest of the lowering (key: layer name and
    what), e.g. its ranked schedules: the cost model runs once per layer."""

    def in_shape(self, layer: Layer, i: int = 0) -> Shape:
        return self.shapes[layer.inputs[i]]

    def out_shape(self, layer: Layer, i: int = 0) -> Shape:
        return self.shapes[layer.outputs[i]]


def load_operands(kb: KernelBuilder, table: ir.Value, n_in: int, n_out: int,
                  blob: ir.Value) -> Operands:
    """Read the operand table ``[inputs..., outputs..., scratch]`` in a phase function."""
    ptrs = [kb.b.load(kb.at(table, i, PTR), typ=PTR) for i in range(n_in + n_out + 1)]
    return Operands(ptrs[:n_in], ptrs[n_in:n_in + n_out], ptrs[-1], blob)


