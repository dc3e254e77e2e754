"""Fuzzing the ``patcc`` command line with hostile ONNX models.

The contract under test: for any model file, ``patcc inspect``, ``patcc compile`` and
``patcc run`` either succeed (exit 0, and a run's outputs equal onnxruntime's on the
same model and input within 1e-4 of the reference's largest magnitude; where
onnxruntime rejects the model, patcc's reference interpreter is the reference), or
fail as a user error: exit 2, exactly one ``patcc: error: `` line on stderr, and no
output (nor temporary) file left in the output directory. Never a signal, a hang, an
internal error (exit 1), a traceback, or a wrong result.

Cases. ``generate_case(number)`` is deterministic in ``number``: it picks one of the
small valid seed models (``SEEDS``, built with ``onnx.helper``) and applies one to
three mutations to its ``ModelProto`` (hostile attribute values and types, dropped,
duplicated and reordered nodes, hostile tensor and node names, duplicated outputs,
inputs that are also outputs, bad dims and dtypes, corrupt initializers, external
data pointing outside the model's folder, opset and IR versions, ...), then maybe
byte-level mutations of the serialized model (truncation, flips, insertions,
deletions, duplicated chunks). Every ``UNMUTATED_EVERY``-th case is a seed as is, so
a run always contains cases that must compile and match. Some cases also feed
non-finite or huge input values.

Worker. ``python tests/support/cli_fuzzer.py worker`` runs cases without paying
Python's start-up for each: it reads one JSON request per line on stdin (the case's
number, its model file, a scratch folder) and, for each, calls ``patcc.cli.main``
in-process for ``inspect --json``, ``compile --target x86_64-avx2 --no-tune``, ``run``
of the model (the reference interpreter) and ``run`` of the compiled ``.so``,
capturing stdout and stderr (Python's and the file descriptor's, warnings rendered as
a fresh process would print them), then runs onnxruntime on one thread and compares.
On its stdout it writes one JSON line as each step starts and one with the case's
outcome.

Parent. ``run_fuzz`` (used by ``tests/test_fuzz.py`` and by ``python -m
tests.support.cli_fuzzer run``) writes each case's bytes to a file, sends the request,
and waits at most ``timeout`` seconds for the outcome: on a timeout or a worker killed
by a signal it records the case as bad, with the step it was in and the Python stack
faulthandler dumped, kills and restarts the worker and goes on. Bad cases are saved
(``caseN.onnx`` and ``caseN.txt``) for reproduction: ``python -m
tests.support.cli_fuzzer show N --out DIR`` writes a case's model and inputs and
prints the commands to rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import math
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

TARGET = "x86_64-avx2"
"""The compile target: portable AVX2 code runs on every x86 host of this project."""
CASE_TIMEOUT_S = 60.0
"""Longest one case (all its steps) may take before the worker is killed."""
WORKER_START_TIMEOUT_S = 120.0
RECYCLE_EVERY = 100
"""Cases per worker process: every compiled .so stays loaded in it, so start afresh."""
MEMORY_LIMIT = 6 * 2**30
"""Address-space limit of a worker: a huge allocation fails instead of swamping the
machine (patcc should turn it into a user error)."""
UNMUTATED_EVERY = 16
"""Every case whose number is a multiple of this is an unmutated seed."""
RELATIVE_TOLERANCE = 1e-4
"""``support.compare``'s rule, restated: the worker runs this file as a script, where
``support`` is not importable."""
REPO_ROOT = Path(__file__).resolve().parents[2]

OUTCOMES = (
    "ok", "user_error", "unchecked", "noisy", "overflow", "reference_failed",
    "internal_error", "signal", "timeout", "traceback", "bad_exit", "mismatch",
    "partial_output", "bad_message", "bad_output",
)
"""Outcome classes, in the summary's order.

``ok``: every command that succeeded was checked. ``user_error``: patcc rejected the
model properly. ``unchecked``: the compiled model ran but there was no reference
(onnxruntime and the interpreter both refused). ``noisy``: success with something on
stderr. ``overflow``: outputs differ, but finite weights and inputs overflowed float32
in the reference (where ``inf - inf`` lands depends on the order of the sums, and the
interpreter accumulates in float64 by design). ``reference_failed``: onnxruntime hung
or crashed the worker (not patcc's fault). The rest break the contract:
``internal_error`` exit 1; ``signal`` the worker died of one; ``timeout``;
``traceback`` on stderr or an exception escaping ``main``; ``bad_exit`` another exit
status; ``mismatch`` outputs differ from the reference; ``partial_output`` a failed
command left files (or a successful one none); ``bad_message`` exit 2 without
exactly one ``patcc: error:`` line; ``bad_output`` ``inspect --json`` printed no JSON.
"""
BAD_OUTCOMES = frozenset({
    "internal_error", "signal", "timeout", "traceback", "bad_exit", "mismatch",
    "partial_output", "bad_message", "bad_output",
})
NOTED_OUTCOMES = frozenset({"unchecked", "noisy", "overflow", "reference_failed"})
"""Outcomes the summary lists (up to ``NOTES_SHOWN``) although they keep the contract."""
NOTES_SHOWN = 20
_SEVERITY = ("ok", "user_error", "unchecked", "noisy", "overflow", "reference_failed",
             "bad_output",
             "bad_message", "partial_output", "mismatch", "bad_exit", "internal_error",
             "traceback", "timeout", "signal")


def worst(outcomes: Iterable[str]) -> str:
    """The most severe of ``outcomes`` (``ok`` for none)."""
    return max(outcomes, key=_SEVERITY.index, default="ok")


# ---------------------------------------------------------------------------------------
# Seed models
# ---------------------------------------------------------------------------------------


def _weight(rng: np.random.Generator, *shape: int) -> np.ndarray:
    fan_in = math.prod(shape[1:]) or 1
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)


def _pattern_prune(rng: np.random.Generator, w: np.ndarray) -> np.ndarray:
    """Keep the centre tap and three neighbours of each 3x3 kernel; remove a quarter
    of the kernels (connectivity pruning), as a pattern-pruned network has them."""
    out = np.zeros_like(w)
    for o in range(w.shape[0]):
        for i in range(w.shape[1]):
            if rng.random() < 0.25:
                continue
            taps = [4, *rng.choice([0, 1, 2, 3, 5, 6, 7, 8], 3, replace=False)]
            flat = out[o, i].reshape(-1)
            flat[taps] = w[o, i].reshape(-1)[taps]
    return out


def _model(nodes: list[onnx.NodeProto], name: str, inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], inits: dict[str, np.ndarray]
           ) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    onnx.checker.check_model(model)
    return model


def residual_seed() -> onnx.ModelProto:
    """Conv+Relu, MaxPool, a pattern-pruned conv, a residual Add, GlobalAveragePool,
    Flatten, Gemm: x[1,3,16,16] -> y[1,10]."""
    rng = np.random.default_rng(1)
    inits = {
        "w1": _weight(rng, 8, 3, 3, 3), "b1": _weight(rng, 8),
        "w2": _pattern_prune(rng, _weight(rng, 8, 8, 3, 3)), "b2": _weight(rng, 8),
        "w3": _weight(rng, 8, 8, 3, 3), "b3": _weight(rng, 8),
        "wg": _weight(rng, 10, 8), "bg": _weight(rng, 10),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
          kernel_shape=[3, 3], strides=[1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
          dilations=[1, 1]),
        n("Relu", ["c2"], ["r2"], name="relu2"),
        n("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1], group=1),
        n("Add", ["c3", "p1"], ["s"], name="residual"),
        n("Relu", ["s"], ["r3"], name="relu3"),
        n("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        n("Flatten", ["g"], ["f"], name="flatten", axis=1),
        n("Gemm", ["f", "wg", "bg"], ["y"], name="fc", transB=1, alpha=1.0, beta=1.0),
    ]
    return _model(nodes, "residual",
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)


def depthwise_seed() -> onnx.ModelProto:
    """A strided depthwise conv with Clip (ReLU6), a pointwise conv with
    BatchNormalization and HardSwish: x[N,8,12,12] -> y[N,16,6,6], N symbolic."""
    rng = np.random.default_rng(2)
    inits = {
        "wd": _weight(rng, 8, 1, 3, 3), "bd": _weight(rng, 8),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
        "wp": _weight(rng, 16, 8, 1, 1),
        "scale": (1 + 0.1 * rng.standard_normal(16)).astype(np.float32),
        "shift": _weight(rng, 16), "mean": _weight(rng, 16),
        "var": (1 + rng.random(16)).astype(np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "wd", "bd"], ["d"], name="depthwise", group=8, kernel_shape=[3, 3],
          pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Clip", ["d", "lo", "hi"], ["a"], name="relu6"),
        n("Conv", ["a", "wp"], ["p"], name="pointwise", kernel_shape=[1, 1]),
        n("BatchNormalization", ["p", "scale", "shift", "mean", "var"], ["bn"], name="bn",
          epsilon=1e-5),
        n("HardSwish", ["bn"], ["y"], name="hswish"),
    ]
    return _model(nodes, "depthwise",
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 12, 12])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 6, 6])],
                  inits)


def concat_seed() -> onnx.ModelProto:
    """Two conv branches, Concat, LeakyRelu, Transpose, Reshape, Softmax:
    x[1,4,6,6] -> y[1,288]."""
    rng = np.random.default_rng(3)
    inits = {
        "wa": _weight(rng, 4, 4, 1, 1), "wb": _weight(rng, 4, 4, 3, 3),
        "shape": np.array([1, -1], np.int64),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "wa"], ["a"], name="branch_a"),
        n("Conv", ["x", "wb"], ["b"], name="branch_b", pads=[1, 1, 1, 1]),
        n("Concat", ["a", "b"], ["c"], name="concat", axis=1),
        n("LeakyRelu", ["c"], ["l"], name="leaky", alpha=0.1),
        n("Transpose", ["l"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
        n("Reshape", ["t", "shape"], ["r"], name="rows"),
        n("Softmax", ["r"], ["y"], name="softmax", axis=-1),
    ]
    return _model(nodes, "concat",
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 288])], inits)


SEEDS: dict[str, Callable[[], onnx.ModelProto]] = {
    "residual": residual_seed,
    "depthwise": depthwise_seed,
    "concat": concat_seed,
}
"""The valid models every case starts from, by name."""


@cache
def _seed_bytes(name: str) -> bytes:
    return SEEDS[name]().SerializeToString()


def seed_model(name: str) -> onnx.ModelProto:
    """A fresh (mutable) copy of the seed model ``name``."""
    model = onnx.ModelProto()
    model.ParseFromString(_seed_bytes(name))
    return model


# ---------------------------------------------------------------------------------------
# Hostile values
# ---------------------------------------------------------------------------------------

HOSTILE_INTS = (0, -1, 1, 2, 3, 7, 2**31 - 1, 2**31, -(2**31), 2**32, 2**40, 2**63 - 1,
                -(2**63))
HOSTILE_FLOATS = (0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e38, -1e38,
                  1e-42, 2.0**31, -1.0)
HOSTILE_NAMES = (
    "", " ", "*/", "/*", "\n", "a\nb", "\r\n", "\x00", "a\x00b", "../x", "../../etc/passwd",
    "/etc/passwd", "x" * 10_000, "'", '"', "\\", "%s%n", "{}", "{0}", "\u00e9t\u00e9",
    "\U0001f642", "\u202e", ".", "..", "-", "--help", "@main", "llvm.memcpy", "main",
    "patcc_run", "\t", "a b", "1", "$x", "a;b", "x=y", "x.npy", "y", "x",
)
HOSTILE_DIMS = (0, -1, 1, 2, 3, 1000, 2**31 - 1, 2**31, 2**40, 2**62)
DTYPES = (TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT64,
          TensorProto.INT32, TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL,
          TensorProto.STRING, TensorProto.COMPLEX64, TensorProto.UNDEFINED, 999)
EXTERNAL_LOCATIONS = ("../x", "/etc/passwd", "/dev/zero", "/dev/urandom", "/proc/self/mem",
                      "/tmp", "/nonexistent/weights.bin", "weights.bin", "", ".", "a\x00b",
                      "x" * 5000, "../" * 50 + "etc/passwd")

INT_ATTRS = {
    "Conv": ("strides", "pads", "dilations", "kernel_shape", "group"),
    "MaxPool": ("strides", "pads", "kernel_shape", "dilations", "ceil_mode",
                "storage_order"),
    "Gemm": ("transA", "transB"),
    "Flatten": ("axis",),
    "Softmax": ("axis",),
    "Concat": ("axis",),
    "Transpose": ("perm",),
    "Reshape": ("allowzero",),
}
LIST_ATTRS = frozenset({"strides", "pads", "dilations", "kernel_shape", "perm"})
FLOAT_ATTRS = {
    "Gemm": ("alpha", "beta"),
    "BatchNormalization": ("epsilon", "momentum"),
    "LeakyRelu": ("alpha",),
}
OP_TYPES = ("Relu", "Sigmoid", "Tanh", "Identity", "Add", "Mul", "Sub", "Div", "Concat",
            "MaxPool", "AveragePool", "GlobalMaxPool", "Conv", "Gemm", "MatMul", "Softmax",
            "Flatten", "Reshape", "Transpose", "Clip", "BatchNormalization", "Sum", "Max",
            "ConvTranspose", "Erf", "Resize", "LSTM", "If", "Loop", "Scan", "", "conv",
            "*/", "Relu\n", "Relu\x00", "Dropout", "Cast", "Shape", "Split", "Slice", "Pad")
DOMAINS = ("com.microsoft", "ai.onnx.ml", "ai.onnx", "custom", "*/", "\n", "../x")


def _show(value: object) -> str:
    """A short, one-line repr of a mutation's value."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"{value[:12]!r}...({len(value)} chars)"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{_show(value[0])}, ...] ({len(value)} items)"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _where(node: onnx.NodeProto) -> str:
    return f"{node.op_type or '?'} {_show(node.name)}"


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def _set_attr(node: onnx.NodeProto, name: str, value: Any,
              attr_type: int | None = None) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if isinstance(value, list) and not value and attr_type is None:
        attr_type = AttributeProto.INTS
    node.attribute.append(helper.make_attribute(name, value, attr_type=attr_type))


def _all_tensor_names(g: onnx.GraphProto) -> list[str]:
    names: list[str] = []
    for v in (*g.input, *g.output, *g.initializer):
        names.append(v.name)
    for node in g.node:
        names.extend(node.input)
        names.extend(node.output)
    return sorted({n for n in names if n})


def _value_infos(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    return [*g.input, *g.output, *g.value_info]


def _initializer_with_data(g: onnx.GraphProto, rng: random.Random) -> TensorProto | None:
    inits = [t for t in g.initializer if t.raw_data]
    return rng.choice(inits) if inits else None


# ---------------------------------------------------------------------------------------
# Graph-level mutations: each edits the model in place and says what it did
# ---------------------------------------------------------------------------------------

Mutation = Callable[[onnx.ModelProto, random.Random], str]


def mutate_int_attribute(model: onnx.ModelProto, rng: random.Random) -> str:
    """A hostile value, length or size for an integer attribute."""
    pairs = [(n, a) for n in model.graph.node for a in INT_ATTRS.get(n.op_type, ())]
    node, name = rng.choice(pairs)
    old = _attr(node, name)
    h = rng.choice(HOSTILE_INTS)
    value: Any
    if name in LIST_ATTRS:
        base = list(old) if old else [1] * rng.choice((2, 4))
        form = rng.choice(("one", "one", "all", "shorter", "longer", "empty", "huge"))
        if form == "one":
            value = base[:]
            value[rng.randrange(len(value))] = h
        elif form == "all":
            value = [h] * len(base)
        elif form == "shorter":
            value = base[:-1]
        elif form == "longer":
            value = [*base, rng.choice((1, h))]
        elif form == "empty":
            value = []
        else:
            value = [rng.choice((1, h))] * rng.choice((1000, 100_000))
    else:
        value = h
    _set_attr(node, name, value)
    return f"{_where(node)} {name}={_show(value)}"


def mutate_float_attribute(model: onnx.ModelProto, rng: random.Random) -> str:
    """A hostile value for a float attribute (alpha, beta, epsilon)."""
    pairs = [(n, a) for n in model.graph.node for a in FLOAT_ATTRS.get(n.op_type, ())]
    if not pairs:
        return mutate_int_attribute(model, rng)
    node, name = rng.choice(pairs)
    value = rng.choice(HOSTILE_FLOATS)
    _set_attr(node, name, value)
    return f"{_where(node)} {name}={value!r}"


def mutate_attribute_type(model: onnx.ModelProto, rng: random.Random) -> str:
    """An attribute of the wrong type (floats for ints, a string, a tensor, a graph),
    an unknown attribute, or a dropped one."""
    pairs = [(n, a) for n in model.graph.node
             for a in (*INT_ATTRS.get(n.op_type, ()), *FLOAT_ATTRS.get(n.op_type, ()))]
    node, name = rng.choice(pairs)
    form = rng.choice(("floats", "float", "string", "strings", "tensor", "graph", "ints",
                       "drop", "unknown"))
    value: Any = {
        "floats": [1.5, 2.0],
        "float": 1.5,
        "string": "1",
        "strings": ["1", "1"],
        "tensor": numpy_helper.from_array(np.array([1, 1], np.int64)),
        "graph": helper.make_graph([], "g", [], []),
        "ints": [1, 1],
    }.get(form)
    if form == "drop":
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept)
        return f"{_where(node)} without attribute {name}"
    if form == "unknown":
        other = rng.choice(("axis", "perm", "foo", "kernel_shape", "auto_pad", "mode"))
        _set_attr(node, other, rng.choice((1, "SAME_UPPER", "VALID", "bogus", [1, 1])))
        return f"{_where(node)} extra attribute {other}={_show(_attr(node, other))}"
    _set_attr(node, name, value)
    return f"{_where(node)} {name} as {form} {_show(_attr(node, name))}"


def drop_node(model: onnx.ModelProto, rng: random.Random) -> str:
    """Remove a node, leaving its output dangling, or bypass it (its uses read its
    first input instead: a valid graph that computes something else)."""
    g = model.graph
    index = rng.randrange(len(g.node))
    node = g.node[index]
    bypass = rng.random() < 0.5 and node.input and node.input[0]
    if bypass:
        old, new = node.output[0], node.input[0]
        for other in g.node:
            other.input[:] = [new if i == old else i for i in other.input]
        for out in g.output:
            if out.name == old:
                out.name = new
    del g.node[index]
    return f"{'bypass' if bypass else 'drop'} node {_where(node)}"


def duplicate_node(model: onnx.ModelProto, rng: random.Random) -> str:
    """Add a copy of a node: with the same outputs (not SSA), or with fresh ones
    (dead code), or with the same name only."""
    g = model.graph
    index = rng.randrange(len(g.node))
    copy = onnx.NodeProto()
    copy.CopyFrom(g.node[index])
    form = rng.choice(("same outputs", "fresh outputs"))
    if form == "fresh outputs":
        copy.output[:] = [f"{o}_dup" for o in copy.output]
    g.node.insert(index + rng.choice((0, 1)), copy)
    return f"duplicate node {_where(copy)} ({form})"


def reorder_nodes(model: onnx.ModelProto, rng: random.Random) -> str:
    """Nodes out of topological order: shuffled, reversed, or two swapped."""
    g = model.graph
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in g.node]
    form = rng.choice(("shuffle", "reverse", "swap"))
    if form == "shuffle":
        rng.shuffle(nodes)
    elif form == "reverse":
        nodes.reverse()
    else:
        i, j = rng.sample(range(len(nodes)), 2)
        nodes[i], nodes[j] = nodes[j], nodes[i]
        form = f"swap {_where(nodes[i])} and {_where(nodes[j])}"
    del g.node[:]
    g.node.extend(nodes)
    return f"reorder nodes: {form}"


def _rename_everywhere(g: onnx.GraphProto, old: str, new: str) -> None:
    for v in (*_value_infos(g), *g.initializer):
        if v.name == old:
            v.name = new
    for node in g.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]


def rename_tensor(model: onnx.ModelProto, rng: random.Random) -> str:
    """Rename a tensor everywhere (a hostile or a colliding name), or only at one of
    its uses (leaving the use undefined)."""
    g = model.graph
    names = _all_tensor_names(g)
    old = rng.choice(names)
    new = rng.choice((*HOSTILE_NAMES, *names))
    if rng.random() < 0.75:
        _rename_everywhere(g, old, new)
        return f"rename tensor {_show(old)} -> {_show(new)} everywhere"
    uses = [(n, k) for n in g.node for k, i in enumerate(n.input) if i == old]
    if not uses:
        _rename_everywhere(g, old, new)
        return f"rename tensor {_show(old)} -> {_show(new)} everywhere"
    node, k = rng.choice(uses)
    node.input[k] = new
    return f"{_where(node)} input {k} {_show(old)} -> {_show(new)}"


def rename_node(model: onnx.ModelProto, rng: random.Random) -> str:
    """A hostile node name, the same name for every node, or the graph's name."""
    g = model.graph
    new = rng.choice(HOSTILE_NAMES)
    form = rng.choice(("one", "all", "graph"))
    if form == "graph":
        g.name = new
        return f"graph name {_show(new)}"
    targets = list(g.node) if form == "all" else [rng.choice(g.node)]
    for node in targets:
        old = node.name
        node.name = new
    return (f"every node named {_show(new)}" if form == "all"
            else f"rename node {_show(old)} -> {_show(new)}")


def mutate_outputs(model: onnx.ModelProto, rng: random.Random) -> str:
    """Duplicate graph outputs, an output that is also an input, an input or an
    intermediate tensor that is also an output, an output nothing computes, or none."""
    g = model.graph
    form = rng.choice(("duplicate", "output as input", "input as output",
                       "intermediate as output", "undefined output", "no outputs"))
    if form == "duplicate":
        g.output.append(g.output[0])
        return f"graph output {_show(g.output[0].name)} listed twice"
    if form == "output as input":
        g.input.append(g.output[0])
        return f"graph output {_show(g.output[0].name)} also a graph input"
    if form == "input as output":
        g.output.append(g.input[0])
        return f"graph input {_show(g.input[0].name)} also a graph output"
    if form == "intermediate as output":
        node = rng.choice(g.node[:-1] or g.node)
        g.output.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None))
        return f"intermediate {_show(node.output[0])} also a graph output (no shape)"
    if form == "undefined output":
        name = rng.choice(("nothing", "", "x"))
        g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]))
        return f"graph output {_show(name)} that no node computes"
    del g.output[:]
    return "no graph outputs"


def mutate_dims(model: onnx.ModelProto, rng: random.Random) -> str:
    """A hostile dim, a symbolic one, another rank or no shape for a graph input or
    output, or a value_info that contradicts the graph."""
    g = model.graph
    value = rng.choice((*g.input, *g.output))
    tt = value.type.tensor_type
    form = rng.choice(("dim", "dim", "symbolic", "rank+1", "rank-1", "no shape", "value_info"))
    if form == "value_info":
        node = rng.choice(g.node)
        dims = [rng.choice(HOSTILE_DIMS) for _ in range(rng.choice((1, 2, 4)))]
        g.value_info.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT,
                                                          dims))
        return f"value_info {_show(node.output[0])} shape {dims}"
    if form == "no shape":
        tt.ClearField("shape")
        return f"{_show(value.name)} without a shape"
    if form == "rank+1":
        tt.shape.dim.add().dim_value = rng.choice((1, 2))
        return f"{_show(value.name)} one more dim: {_dims(tt)}"
    if form == "rank-1" and len(tt.shape.dim):
        del tt.shape.dim[-1]
        return f"{_show(value.name)} one dim fewer: {_dims(tt)}"
    if not len(tt.shape.dim):
        tt.shape.dim.add().dim_value = 1
    dim = tt.shape.dim[rng.randrange(len(tt.shape.dim))]
    if form == "symbolic":
        dim.dim_param = rng.choice(("N", "", "*/", "a\nb", "x" * 1000))
    else:
        dim.dim_value = rng.choice(HOSTILE_DIMS)
    return f"{_show(value.name)} shape {_dims(tt)}"


def _dims(tt: onnx.TypeProto.Tensor) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else _show(d.dim_param)
                           for d in tt.shape.dim) + "]"


def mutate_dtype(model: onnx.ModelProto, rng: random.Random) -> str:
    """Another element type for a graph input or output, or an initializer (whose
    bytes then no longer fit)."""
    g = model.graph
    dtype = rng.choice(DTYPES)
    label = TensorProto.DataType.Name(dtype) if dtype in TensorProto.DataType.values() \
        else str(dtype)
    if rng.random() < 0.5:
        value = rng.choice((*g.input, *g.output))
        value.type.tensor_type.elem_type = dtype
        return f"{_show(value.name)} dtype {label}"
    init = rng.choice(g.initializer)
    init.data_type = dtype
    return f"initializer {_show(init.name)} dtype {label}"


def corrupt_initializer(model: onnx.ModelProto, rng: random.Random) -> str:
    """raw_data of the wrong length, dims that do not match it, hostile dims, data in
    two fields at once, or no data at all."""
    g = model.graph
    init = _initializer_with_data(g, rng)
    if init is None:
        return remove_initializer(model, rng)
    form = rng.choice(("short raw", "long raw", "empty raw", "dims", "hostile dims",
                       "no dims", "two fields", "odd raw"))
    where = f"initializer {_show(init.name)}"
    if form == "short raw":
        init.raw_data = init.raw_data[: rng.randrange(len(init.raw_data))]
        return f"{where} raw_data cut to {len(init.raw_data)} bytes"
    if form == "long raw":
        init.raw_data = init.raw_data + bytes(rng.choice((1, 4, 4096)))
        return f"{where} raw_data grown to {len(init.raw_data)} bytes"
    if form == "empty raw":
        init.ClearField("raw_data")
        return f"{where} without data"
    if form == "odd raw":
        init.raw_data = init.raw_data[:-1]
        return f"{where} raw_data one byte short"
    if form == "two fields":
        init.float_data.extend([1.0, 2.0])
        return f"{where} raw_data and float_data both set"
    old = list(init.dims)
    if form == "no dims":
        del init.dims[:]
        return f"{where} dims {old} -> [] (scalar)"
    new = old[:] or [1]
    k = rng.randrange(len(new))
    new[k] = rng.choice(HOSTILE_DIMS) if form == "hostile dims" else new[k] + rng.choice((1, -1))
    del init.dims[:]
    init.dims.extend(new)
    return f"{where} dims {old} -> {new}"


def external_data(model: onnx.ModelProto, rng: random.Random) -> str:
    """Move an initializer's data "outside" the model: to ``../x``, ``/etc/passwd``,
    ``/dev/zero``, absolute paths, with hostile offsets and lengths."""
    g = model.graph
    init = _initializer_with_data(g, rng) or rng.choice(g.initializer)
    location = rng.choice(EXTERNAL_LOCATIONS)
    entries = {"location": location}
    if rng.random() < 0.5:
        entries["offset"] = str(rng.choice((0, 1, -1, 4096, 2**40, 2**63 - 1)))
    if rng.random() < 0.5:
        entries["length"] = str(rng.choice((0, 4, -1, 2**31, 2**40, "x")))
    if rng.random() < 0.1:
        entries["checksum"] = "0"
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    for key, value in entries.items():
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    return f"initializer {_show(init.name)} external data {_show(entries)}"


def mutate_versions(model: onnx.ModelProto, rng: random.Random) -> str:
    """Another default opset (in range or not), a second or no ai.onnx import, an
    unknown domain, or another IR version."""
    form = rng.choice(("opset", "opset", "no import", "two imports", "domain", "ir"))
    if form == "opset":
        version = rng.choice((0, 1, 7, 10, 11, 12, 13, 18, 21, 22, 99, -1, 2**40))
        model.opset_import[0].version = version
        return f"opset {version}"
    if form == "no import":
        del model.opset_import[:]
        return "no opset import"
    if form == "two imports":
        model.opset_import.append(helper.make_opsetid("", rng.choice((11, 13, 99))))
        return f"two ai.onnx imports, {[o.version for o in model.opset_import]}"
    if form == "domain":
        model.opset_import.append(helper.make_opsetid(rng.choice(DOMAINS), 1))
        return f"extra opset import {_show(model.opset_import[-1].domain)}"
    version = rng.choice((0, 1, 3, 4, 7, 10, 11, 99, -1))
    model.ir_version = version
    return f"ir_version {version}"


def remove_initializer(model: onnx.ModelProto, rng: random.Random) -> str:
    """Remove one initializer or all of them (the weights become undefined)."""
    g = model.graph
    if rng.random() < 0.2:
        del g.initializer[:]
        return "no initializers"
    index = rng.randrange(len(g.initializer))
    name = g.initializer[index].name
    del g.initializer[index]
    return f"remove initializer {_show(name)}"


def mutate_weights(model: onnx.ModelProto, rng: random.Random) -> str:
    """Non-finite, huge, tiny or negative-zero values in an initializer (or, for the
    Reshape shape and Clip bounds, hostile ints and bounds)."""
    g = model.graph
    init = _initializer_with_data(g, rng)
    if init is None:
        return remove_initializer(model, rng)
    array = numpy_helper.to_array(init).copy()
    if array.dtype == np.int64:
        values = [rng.choice((0, -1, -2, 1, 3, 2**31, 2**40, -(2**63))) for _ in array.flat]
        array = np.array(values, np.int64).reshape(array.shape)
    elif array.size:
        special = rng.choice(HOSTILE_FLOATS[2:])
        flat = array.reshape(-1)
        count = rng.choice((1, 1, 2, flat.size))
        picks = rng.sample(range(flat.size), min(count, flat.size))
        flat[picks] = special
        init.CopyFrom(numpy_helper.from_array(array, init.name))
        return f"initializer {_show(init.name)} {len(picks)} value(s) {special!r}"
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    return f"initializer {_show(init.name)} = {_show(array.tolist())}"


def change_op_type(model: onnx.ModelProto, rng: random.Random) -> str:
    """Another operator (supported or not, or a hostile name), or another domain."""
    node = rng.choice(model.graph.node)
    old = _where(node)
    if rng.random() < 0.2:
        node.domain = rng.choice(DOMAINS)
        return f"{old} domain {_show(node.domain)}"
    node.op_type = rng.choice(OP_TYPES)
    return f"{old} becomes {_show(node.op_type)}"


def change_node_inputs(model: onnx.ModelProto, rng: random.Random) -> str:
    """Fewer or more inputs or outputs, an empty input name, a node reading its own
    output, or a cycle."""
    g = model.graph
    node = rng.choice(g.node)
    names = _all_tensor_names(g)
    form = rng.choice(("drop input", "extra input", "empty input", "self loop", "cycle",
                       "extra output", "no outputs"))
    if form == "drop input" and node.input:
        del node.input[-1]
    elif form == "extra input":
        node.input.append(rng.choice((*names, "nothing")))
    elif form == "empty input" and node.input:
        node.input[rng.randrange(len(node.input))] = ""
    elif form == "self loop" and node.input:
        node.input[0] = node.output[0]
    elif form == "cycle":
        g.node[0].input[0] = g.node[-1].output[0]
        node = g.node[0]
    elif form == "extra output":
        node.output.append(f"{node.output[0]}_extra")
    else:
        del node.output[:]
        form = "no outputs"
    return f"{_where(node)} {form}: inputs {_show(list(node.input))} outputs " \
           f"{_show(list(node.output))}"


def restate_initializer(model: onnx.ModelProto, rng: random.Random) -> str:
    """Valid restatements of the weights: an initializer also listed as a graph input
    (with its shape or a wrong one), or turned into a Constant node."""
    g = model.graph
    init = rng.choice(g.initializer)
    if rng.random() < 0.5:
        dims = list(init.dims)
        if dims and rng.random() < 0.3:
            dims[0] = rng.choice(HOSTILE_DIMS)
        g.input.append(helper.make_tensor_value_info(init.name, init.data_type or 1, dims))
        return f"initializer {_show(init.name)} also a graph input of shape {dims}"
    tensor = TensorProto()
    tensor.CopyFrom(init)
    tensor.name = ""
    names = [i.name for i in g.initializer]
    del g.initializer[names.index(init.name)]
    g.node.insert(0, helper.make_node("Constant", [], [init.name], name=f"const_{init.name}",
                                      value=tensor))
    return f"initializer {_show(init.name)} as a Constant node"


GRAPH_MUTATIONS: tuple[Mutation, ...] = (
    mutate_int_attribute, mutate_int_attribute, mutate_int_attribute, mutate_float_attribute,
    mutate_attribute_type, drop_node, duplicate_node, reorder_nodes, rename_tensor,
    rename_tensor, rename_node, mutate_outputs, mutate_dims, mutate_dims, mutate_dtype,
    corrupt_initializer, external_data, mutate_versions, remove_initializer, mutate_weights,
    change_op_type, change_node_inputs, restate_initializer,
)


# ---------------------------------------------------------------------------------------
# Byte-level mutations of the serialized model
# ---------------------------------------------------------------------------------------


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Truncate, flip, insert, delete, duplicate or blank bytes of ``data``."""
    if not data:
        return bytes([rng.randrange(256)]), "one random byte"
    form = rng.choice(("truncate", "flip", "flip", "insert", "delete", "duplicate", "blank"))
    n = len(data)
    if form == "truncate":
        k = rng.randrange(n)
        return data[:k], f"truncate to {k} of {n} bytes"
    if form == "flip":
        buf = bytearray(data)
        spots = sorted(rng.randrange(n) for _ in range(rng.choice((1, 2, 8))))
        for spot in spots:
            buf[spot] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
        return bytes(buf), f"flip bytes at {spots}"
    if form == "insert":
        k = rng.randrange(n + 1)
        junk = bytes(rng.randrange(256) for _ in range(rng.choice((1, 3, 16))))
        return data[:k] + junk + data[k:], f"insert {junk.hex()} at {k}"
    if form == "delete":
        k = rng.randrange(n)
        length = rng.choice((1, 2, 16, 256))
        return data[:k] + data[k + length:], f"delete {length} bytes at {k}"
    if form == "duplicate":
        k = rng.randrange(n)
        length = rng.choice((4, 64, 1024, n))
        chunk = data[k:k + length]
        at = rng.randrange(n + 1)
        return data[:at] + chunk + data[at:], f"copy {len(chunk)} bytes from {k} to {at}"
    k = rng.randrange(n)
    length = rng.choice((4, 64))
    fill = rng.choice((0x00, 0xFF))
    return (data[:k] + bytes([fill]) * length + data[k + length:],
            f"set {length} bytes at {k} to {fill:#x}")


# ---------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------

INPUT_KINDS = ("normal", "nan", "inf", "huge", "zeros")


@dataclass(frozen=True)
class Case:
    """One fuzz case: the seed it came from, what was done to it, the model bytes, and
    what kind of input values it is run on."""

    number: int
    seed: str
    mutation: str
    data: bytes
    input_kind: str = "normal"

    @property
    def description(self) -> str:
        """The mutation, and the input when it is not plain random normal values."""
        extra = "" if self.input_kind == "normal" else f"; input with {self.input_kind}"
        return f"{self.mutation}{extra}"


def generate_case(number: int) -> Case:
    """The fuzz case ``number``: deterministic, different for every number."""
    rng = random.Random(number)
    names = sorted(SEEDS)
    if number % UNMUTATED_EVERY == 0:
        seed = names[(number // UNMUTATED_EVERY) % len(names)]
        return Case(number, seed, "unmutated", _seed_bytes(seed))
    seed = rng.choice(names)
    model = seed_model(seed)
    steps: list[str] = []
    byte_only = rng.random() < 0.25
    for _ in range(0 if byte_only else rng.choice((1, 1, 1, 2, 3))):
        mutation = rng.choice(GRAPH_MUTATIONS)
        try:
            steps.append(mutation(model, rng))
        except Exception as e:  # nothing to mutate that way
            steps.append(f"{mutation.__name__} not applicable ({type(e).__name__})")
    try:
        data = model.SerializeToString()
    except Exception as e:  # protobuf refuses some hostile messages
        steps.append(f"(unserializable: {type(e).__name__}; seed bytes used)")
        data = _seed_bytes(seed)
    if byte_only or rng.random() < 0.1:
        for _ in range(rng.choice((1, 1, 2))):
            data, what = mutate_bytes(data, rng)
            steps.append(what)
    kind = rng.choices(INPUT_KINDS, weights=(88, 3, 3, 3, 3))[0]
    return Case(number, seed, "; ".join(steps), data, kind)


def case_inputs(data: bytes, number: int, kind: str) -> list[tuple[str, np.ndarray]] | None:
    """The inputs a case is run on, in the order of the model's graph inputs: random
    normal float32 values seeded by ``number`` (``kind`` puts NaN, inf or huge values
    in, or makes them all zero); a symbolic or non-positive dim is 1. None when the
    bytes do not parse or an input has no shape or is too large to allocate."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # garbage bytes: patcc must say so, there is no input
        return None
    rng = np.random.default_rng(number)
    initializers = {t.name for t in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tt = value.type.tensor_type
        if not tt.HasField("shape"):
            return None
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                      for d in tt.shape.dim)
        if math.prod(shape) > 2**22:
            return None
        array = rng.standard_normal(shape).astype(np.float32)
        flat = array.reshape(-1)
        spots = rng.integers(0, max(flat.size, 1), size=min(3, flat.size))
        if kind == "nan":
            flat[spots] = np.nan
        elif kind == "inf":
            flat[spots] = np.array([np.inf, -np.inf, np.inf], np.float32)[: len(spots)]
        elif kind == "huge":
            flat[spots] = 3e38
        elif kind == "zeros":
            array[...] = 0.0
        inputs.append((value.name, array))
    return inputs


# ---------------------------------------------------------------------------------------
# The worker: runs cases in-process and reports each as one JSON line
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _captured_fd(fd: int) -> Iterator[Callable[[], str]]:
    """Send file descriptor ``fd`` to a temporary file; yields a function returning
    what was written (by native code, or Python writing to the descriptor)."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(fd)
        os.dup2(sink.fileno(), fd)
        try:
            yield lambda: (sink.seek(0), sink.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def call_cli(argv: Sequence[str]) -> tuple[int | None, str, str]:
    """Run ``patcc.cli.main(argv)`` in this process as a fresh ``patcc`` process would:
    returns (exit status, or None when an exception escaped; stdout; stderr). Warnings
    are printed once per place, as Python's default filter does in a new process; an
    escaping exception's traceback is part of stderr."""
    from patcc.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | None
    with _captured_fd(2) as native_err, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse, or a sys.exit deep inside
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=err)
        except BaseException:  # a real process would die with a traceback
            code = None
            err.write(traceback.format_exc())
        fd_text = native_err()
    seen: set[tuple[str, str, str, int]] = set()
    shown = []
    for w in caught:
        key = (str(w.message), w.category.__name__, w.filename, w.lineno)
        if key not in seen:
            seen.add(key)
            shown.append(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
    return code, out.getvalue(), fd_text + "".join(shown) + err.getvalue()


def classify_exit(code: int | None, stderr: str, out_dir: Path, expected: Path | None
                  ) -> tuple[str, str]:
    """The outcome class of one CLI command and a message: exit status, stderr, and
    the files left in ``out_dir`` (only ``expected``, and only on success)."""
    files = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    first = stderr.strip().splitlines()[0] if stderr.strip() else ""
    if code is None or "Traceback (most recent call last)" in stderr:
        last = [line for line in stderr.strip().splitlines() if line.strip()]
        return "traceback", " | ".join(last[-3:])[:500]
    if code == 1:
        return "internal_error", first[:500]
    if code == 0:
        wanted = [] if expected is None else [expected.name]
        if files != wanted:
            return "partial_output", f"exit 0 left {_show(files)}, expected {wanted}"
        if stderr.strip():
            return "noisy", f"stderr on success: {first[:300]}"
        return "ok", ""
    if code != 2:
        return "bad_exit", f"exit {code}: {first[:300]}"
    if files:
        return "partial_output", f"exit 2 left {_show(files)}: {first[:300]}"
    lines = stderr.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("patcc: error: ") or not \
            stderr.endswith("\n"):
        return "bad_message", (f"{len(lines)} stderr lines: "
                               f"{_show(stderr[:300])}")
    return "user_error", lines[0][:300]


def compare_outputs(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], what: str
                    ) -> str | None:
    """Why ``got`` differs from ``ref`` (names, dtype, shape, finiteness, values within
    1e-4 of the reference's largest finite magnitude), or None when they agree.

    A key of ``got`` that names no reference output is read percent-decoded: ``patcc
    run`` stores a name that is not a safe file name under its ``%XX`` form."""
    got = {(k if k in ref else urllib.parse.unquote(k)): v for k, v in got.items()}
    if sorted(got) != sorted(ref):
        return f"{what}: outputs {_show(sorted(got))}, reference has {_show(sorted(ref))}"
    for name, expected in ref.items():
        actual = got[name]
        if actual.dtype != np.float32:
            return f"{what}: output {_show(name)} has dtype {actual.dtype}"
        if actual.shape != expected.shape:
            return f"{what}: output {_show(name)} shape {actual.shape}, reference " \
                   f"{expected.shape}"
        expected = expected.astype(np.float32)
        nan_got, nan_ref = np.isnan(actual), np.isnan(expected)
        if not np.array_equal(nan_got, nan_ref):
            return f"{what}: output {_show(name)} NaN at {int(nan_got.sum())} places, " \
                   f"reference at {int(nan_ref.sum())}"
        finite = np.isfinite(expected)
        inf_bad = ~finite & ~nan_ref & (actual != expected)
        if inf_bad.any():
            k = int(np.argmax(inf_bad.reshape(-1)))
            return f"{what}: output {_show(name)}[{k}] = {actual.reshape(-1)[k]}, " \
                   f"reference {expected.reshape(-1)[k]}"
        scale = float(np.abs(expected[finite]).max(initial=0.0)) or 1.0
        err = np.abs(actual[finite].astype(np.float64) - expected[finite])
        if err.size and err.max() > RELATIVE_TOLERANCE * scale:
            k = int(np.flatnonzero(finite)[np.argmax(err)])
            return f"{what}: output {_show(name)}[{k}] = {actual.reshape(-1)[k]}, reference " \
                   f"{expected.reshape(-1)[k]} (max |ref| {scale:.3g})"
    return None


OVERFLOW_SCALE = 1e18
"""A magnitude whose products (or sums of a few thousand) leave float32's range."""


def overflowed(model: Path, inputs: Sequence[tuple[str, np.ndarray]],
               reference: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> bool:
    """True when float32 overflow explains a difference: the reference or the result
    has a non-finite output, every input and float constant of the model is finite,
    and some of them (or a float attribute, such as Gemm's alpha) is at least
    OVERFLOW_SCALE in magnitude. Past the range, the result depends on the order of
    the arithmetic (and the interpreter accumulates in float64)."""
    outputs = [*reference.values(), *actual.values()]
    if all(np.isfinite(v).all() for v in outputs):
        return False
    if not all(np.isfinite(a).all() for _, a in inputs):
        return False
    largest = max((float(np.abs(a).max(initial=0.0)) for _, a in inputs), default=0.0)
    try:
        proto = onnx.load(str(model), load_external_data=False)
        tensors = [*proto.graph.initializer,
                   *(a.t for n in proto.graph.node for a in n.attribute if a.HasField("t"))]
        for tensor in tensors:
            array = numpy_helper.to_array(tensor)
            if array.dtype.kind in "fc":
                if not np.isfinite(array).all():
                    return False
                largest = max(largest, float(np.abs(array).max(initial=0.0)))
        for node in proto.graph.node:
            for attribute in node.attribute:
                for number in (attribute.f, *attribute.floats):
                    largest = max(largest, abs(number))
    except Exception:  # unreadable constants: not a case this can vouch for
        return False
    return largest >= OVERFLOW_SCALE


def _load_npz(path: Path) -> dict[str, np.ndarray] | str:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as e:  # a broken output file is the finding
        return f"{path.name} does not load: {type(e).__name__}: {e}"


def run_onnxruntime(model: Path, inputs: Sequence[tuple[str, np.ndarray]]
                    ) -> dict[str, np.ndarray] | str:
    """The model's outputs from onnxruntime's CPU provider on one thread, with graph
    optimizations off, or why onnxruntime refused."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        with _captured_fd(2):
            session = ort.InferenceSession(str(model), options,
                                           providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            values = session.run(names, dict(inputs))
    except Exception as e:  # any refusal means: no reference from here
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    result: dict[str, np.ndarray] = {}
    for name, value in zip(names, values, strict=True):
        if not isinstance(value, np.ndarray):
            return f"output {_show(name)} is a {type(value).__name__}"
        result.setdefault(name, value)
    return result


def _injected(number: int) -> str | None:
    """A fault to inject into case ``number`` (``PATCC_FUZZ_INJECT=N:KIND,...``): the
    harness's self-test checks that each is reported. Kinds: signal, hang, internal,
    leak, mismatch."""
    for item in os.environ.get("PATCC_FUZZ_INJECT", "").split(","):
        n, _, kind = item.partition(":")
        if n.strip() == str(number):
            return kind.strip()
    return None


@contextlib.contextmanager
def _fault(kind: str | None, step: str, out_dir: Path) -> Iterator[None]:
    """Inject fault ``kind`` into ``step`` (see ``_injected``); nothing otherwise."""
    from unittest import mock

    if kind in ("signal", "hang", "internal", "leak") and step == "compile":
        def broken(*args: object, **kwargs: object) -> None:
            if kind == "signal":
                os.kill(os.getpid(), signal.SIGSEGV)
            if kind == "hang":
                time.sleep(3600)
            if kind == "leak":
                from patcc.errors import PatccError

                (out_dir / ".model.so.123.tmp").write_bytes(b"half")
                raise PatccError("injected failure")
            raise ValueError("injected bug")

        with mock.patch("patcc.compiler.compile", broken):
            yield
        return
    if kind == "mismatch" and step == "run-so":
        import patcc.fileio

        original = patcc.fileio.save_npz

        def skewed(path: Any, arrays: Any) -> None:
            original(path, {k: v + 1 for k, v in arrays.items()})

        with mock.patch("patcc.fileio.save_npz", skewed):
            yield
        return
    yield


def run_case(request: dict[str, Any], emit: Callable[[dict[str, Any]], None]
             ) -> dict[str, Any]:
    """Run every step of one case (see the module docstring) and return its record:
    ``{"number", "outcome", "steps": [{"step", "outcome", "message", ...}]}``."""
    number = int(request["number"])
    model = Path(request["model"])
    scratch = Path(request["scratch"])
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    fault = _injected(number)
    steps: list[dict[str, Any]] = []
    inputs = case_inputs(model.read_bytes(), number, request.get("input_kind", "normal"))
    input_files = []
    for k, (_, array) in enumerate(inputs or [("dummy", np.zeros(1, np.float32))]):
        path = scratch / f"input{k}.npy"
        np.save(path, array)
        input_files.append(str(path))

    def cli(step: str, argv: list[str], out_dir: Path, expected: Path | None,
            ) -> tuple[int | None, str]:
        emit({"event": "step", "number": number, "step": step})
        out_dir.mkdir()
        with _fault(fault, step, out_dir):
            code, stdout, stderr = call_cli(argv)
        outcome, message = classify_exit(code, stderr, out_dir, expected)
        steps.append({"step": step, "outcome": outcome, "message": message, "exit": code})
        return (code if outcome in ("ok", "noisy") else None), stdout

    code, stdout = cli("inspect", ["inspect", "--json", str(model)], scratch / "inspect", None)
    if code == 0:
        try:
            json.loads(stdout)
        except ValueError as e:
            steps[-1].update(outcome="bad_output", message=f"inspect --json: {e}")
    so = scratch / "compile" / "model.so"
    compiled, _ = cli("compile", ["compile", str(model), "-o", str(so), "--target", TARGET,
                                  "--no-tune"], so.parent, so)
    ref_npz = scratch / "interp" / "out.npz"
    interp_code, _ = cli("run-onnx", ["run", str(model), *_inputs_argv(input_files), "-o",
                                      str(ref_npz)], ref_npz.parent, ref_npz)
    native_code = None
    so_npz = scratch / "native" / "out.npz"
    if compiled == 0:
        native_code, _ = cli("run-so", ["run", str(so), *_inputs_argv(input_files), "-o",
                                        str(so_npz), "--threads", "1"], so_npz.parent, so_npz)
    results: dict[str, dict[str, np.ndarray]] = {}
    for step, code, path in (("run-onnx", interp_code, ref_npz), ("run-so", native_code, so_npz)):
        if code == 0:
            loaded = _load_npz(path)
            if isinstance(loaded, str):
                steps.append({"step": step, "outcome": "bad_output", "message": loaded})
            else:
                results[step] = loaded
    reference: dict[str, np.ndarray] | None = None
    if results and inputs is not None:
        emit({"event": "step", "number": number, "step": "onnxruntime"})
        ort_result = run_onnxruntime(model, inputs)
        if isinstance(ort_result, str):
            steps.append({"step": "onnxruntime", "outcome": "ok",
                          "message": f"onnxruntime refuses: {ort_result[:300]}"})
        else:
            reference = ort_result
    # without onnxruntime's outputs the interpreter's are the reference
    checks: list[tuple[str, str, dict[str, np.ndarray] | None]]
    if reference is not None:
        checks = [("run-onnx", "interpreter vs onnxruntime", reference),
                  ("run-so", "compiled vs onnxruntime", reference)]
    else:
        checks = [("run-so", "compiled vs interpreter", results.get("run-onnx"))]
    for step, what, ref in checks:
        if step not in results:
            continue
        if ref is None:
            steps.append({"step": f"compare {step}", "outcome": "unchecked",
                          "message": f"{step} succeeded, no reference to compare with"})
            continue
        problem = compare_outputs(results[step], ref, what)
        outcome = "ok" if problem is None else "mismatch"
        if problem is not None and overflowed(model, inputs or [], ref, results[step]):
            outcome = "overflow"
        steps.append({"step": f"compare {step}", "outcome": outcome, "message": problem or ""})
    return {"number": number, "outcome": worst(s["outcome"] for s in steps), "steps": steps}


def _inputs_argv(files: Sequence[str]) -> list[str]:
    return [arg for f in files for arg in ("-i", f)]


def worker_main(crash_log: str) -> int:
    """Serve cases: a JSON request per stdin line, JSON events on the original stdout
    (file descriptor 1 itself goes to /dev/null so that nothing else lands there)."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    crash = open(crash_log, "w")  # faulthandler writes here when it dies
    faulthandler.enable(file=crash, all_threads=True)
    with contextlib.suppress(ValueError, OSError):
        import resource

        limit = int(os.environ.get("PATCC_FUZZ_MEMORY", MEMORY_LIMIT))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # every import before saying ready: start-up is not a case's time, and a module
    # that does not import (mid-edit) stops the run instead of failing every case
    import onnxruntime  # noqa: F401

    import patcc.cli
    import patcc.compiler  # noqa: F401
    import patcc.fileio  # noqa: F401
    import patcc.frontends.onnx  # noqa: F401
    import patcc.runtime  # noqa: F401
    import patcc.runtime.native  # noqa: F401
    import patcc.stats  # noqa: F401

    patcc.cli.build_parser()

    def emit(event: dict[str, Any]) -> None:
        protocol.write(json.dumps(event) + "\n")
        protocol.flush()

    emit({"event": "ready"})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            record = run_case(request, emit)
        except Exception:  # a harness bug: report it with the case
            record = {"number": request.get("number"), "outcome": "traceback", "steps": [
                {"step": "harness", "outcome": "traceback",
                 "message": traceback.format_exc()[-1000:]}]}
        emit({"event": "done", **record})
    return 0


# ---------------------------------------------------------------------------------------
# The parent: workers, timeouts, results and the summary
# ---------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """What happened to one case."""

    number: int
    seed: str
    mutation: str
    outcome: str
    steps: list[dict[str, Any]]
    seconds: float
    saved: Path | None = None

    @property
    def bad(self) -> bool:
        """True when the case broke the contract."""
        return self.outcome in BAD_OUTCOMES

    def problems(self) -> list[str]:
        """One line per step that broke the contract."""
        return [f"{s['step']}: {s['outcome']}: {s['message']}" for s in self.steps
                if s["outcome"] in BAD_OUTCOMES]


class Worker:
    """A ``worker`` process and the thread that reads its events."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.crash_log = home / "crash.log"
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def start(self) -> None:
        """Start the process and wait until it has imported everything."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.events = queue.Queue()
        with open(self.home / "worker.log", "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "worker", str(self.crash_log)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                cwd=self.home, env=self.env, start_new_session=True)
        threading.Thread(target=self._read, args=(self.proc.stdout, self.events),
                         daemon=True).start()
        try:
            event = self._next(WORKER_START_TIMEOUT_S)
        except queue.Empty:
            event = {"event": f"nothing in {WORKER_START_TIMEOUT_S:.0f} s"}
        if event is None or event.get("event") != "ready":
            self.stop()
            tail = (self.home / "worker.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"fuzz worker did not start: {event}\n{tail}")

    @staticmethod
    def _read(stream: TextIO, events: queue.Queue[dict[str, Any] | None]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                events.put(json.loads(line))
        events.put(None)

    def _next(self, timeout: float) -> dict[str, Any] | None:
        return self.events.get(timeout=max(timeout, 0.01))

    def stop(self) -> None:
        """Kill the process (and anything it started)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.proc = None

    def run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one case, and return its record; on a timeout or a death, kill the
        worker and return a record saying so (the next ``run`` restarts it)."""
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        step = "start"
        while True:
            try:
                event = self._next(deadline - time.monotonic())
            except queue.Empty:
                self.stop()
                outcome = "reference_failed" if step == "onnxruntime" else "timeout"
                return _dead(request, step, outcome, f"no result after {timeout:.0f} s")
            if event is None:
                code = self.proc.wait()
                self.stop()
                crash = _crash_summary(self.crash_log)
                if code < 0:
                    name = signal.Signals(-code).name
                    outcome = "reference_failed" if step == "onnxruntime" else "signal"
                    return _dead(request, step, outcome, f"{name}{crash}")
                return _dead(request, step, "bad_exit", f"worker exited {code}{crash}")
            if event.get("event") == "step":
                step = event["step"]
            elif event.get("event") == "done":
                return event


def _dead(request: dict[str, Any], step: str, outcome: str, message: str) -> dict[str, Any]:
    return {"number": request["number"], "outcome": outcome,
            "steps": [{"step": step, "outcome": outcome, "message": message}]}


def _crash_summary(log: Path) -> str:
    """The innermost frames of the dying thread from faulthandler's dump."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    frames = [line.strip() for line in lines if line.strip().startswith("File ")]
    return f" in {' <- '.join(frames[:4])}" if frames else ""


def worker_env(home: Path) -> dict[str, str]:
    """The environment of a worker: untuned compiles, a private tuning cache, one
    thread per library, this checkout's patcc first on the path."""
    env = dict(os.environ)
    env.update(PATCC_TUNE="0", PATCC_CACHE_DIR=str(home / "cache"), OMP_NUM_THREADS="1",
               PYTHONFAULTHANDLER="1", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("PATCC_DEBUG", None)
    return env


def save_case(case: Case, result: CaseResult, directory: Path) -> Path:
    """Write a bad case's model and a note (mutation, problems, how to rerun) into
    ``directory``; returns the model's path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"case{case.number}.onnx"
    path.write_bytes(case.data)
    note = [f"case {case.number} from seed {case.seed!r}: {case.description}",
            f"outcome: {result.outcome}", *result.problems(), "",
            f"rerun: python -m tests.support.cli_fuzzer show {case.number} --out DIR",
            "steps:", json.dumps(result.steps, indent=1)]
    (directory / f"case{case.number}.txt").write_text("\n".join(note) + "\n")
    return path


def run_fuzz(numbers: Sequence[int], jobs: int = 1, workdir: Path | None = None,
             save_dir: Path | None = None, timeout: float = CASE_TIMEOUT_S,
             on_result: Callable[[CaseResult], None] | None = None,
             env: dict[str, str] | None = None) -> list[CaseResult]:
    """Run the cases ``numbers`` on ``jobs`` worker processes; bad ones are saved into
    ``save_dir``. Returns the results in case order."""
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="patcc-fuzz-")) if workdir is None else workdir
    todo: queue.Queue[int] = queue.Queue()
    for n in numbers:
        todo.put(n)
    results: list[CaseResult] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    workers: list[Worker] = []

    def job(k: int) -> None:
        home = root / f"job{k}"
        worker = Worker(home, {**worker_env(home), **(env or {})})
        with lock:
            workers.append(worker)
        done = 0
        try:
            while True:
                try:
                    number = todo.get_nowait()
                except queue.Empty:
                    return
                case = generate_case(number)
                model = home / "model.onnx"
                home.mkdir(parents=True, exist_ok=True)
                model.write_bytes(case.data)
                start = time.monotonic()
                record = worker.run({"number": number, "model": str(model),
                                     "scratch": str(home / "scratch"),
                                     "input_kind": case.input_kind}, timeout)
                result = CaseResult(number, case.seed, case.description, record["outcome"],
                                    record["steps"], time.monotonic() - start)
                if result.bad and save_dir is not None:
                    result.saved = save_case(case, result, save_dir)
                with lock:
                    results.append(result)
                    if on_result is not None:
                        on_result(result)
                done += 1
                if done % RECYCLE_EVERY == 0:
                    worker.stop()
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)
        finally:
            worker.stop()

    threads = [threading.Thread(target=job, args=(k,), daemon=True)
               for k in range(max(1, jobs))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:  # Ctrl-C: no worker may outlive the run
        with lock:
            for worker in workers:
                worker.stop()
        raise
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    if errors:
        raise errors[0]
    return sorted(results, key=lambda r: r.number)


@dataclass
class Summary:
    """Counts per outcome class and the bad cases of a run."""

    results: list[CaseResult]
    seconds: float
    save_dir: Path | None = None
    counts: Counter[str] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = Counter(r.outcome for r in self.results)

    @property
    def bad(self) -> list[CaseResult]:
        """The cases that broke the contract."""
        return [r for r in self.results if r.bad]

    def __str__(self) -> str:
        lines = [f"patcc fuzz: {len(self.results)} cases in {self.seconds:.1f} s, "
                 f"{len(self.bad)} bad"]
        for outcome in OUTCOMES:
            mark = "  <- bad" if outcome in BAD_OUTCOMES and self.counts[outcome] else ""
            lines.append(f"  {outcome.replace('_', ' '):17s}{self.counts[outcome]:6d}{mark}")
        if self.bad:
            where = f" (saved in {self.save_dir})" if self.save_dir else ""
            lines.append(f"bad cases{where}:")
            for r in self.bad:
                lines.append(f"  #{r.number} [{r.seed}] {r.mutation[:300]}")
                lines.extend(f"      {p[:300]}" for p in r.problems())
        notes = [r for r in self.results if r.outcome in NOTED_OUTCOMES]
        if notes:
            lines.append("not contract breaks, but worth a look:")
            for r in notes[:NOTES_SHOWN]:
                first = next(s for s in r.steps if s["outcome"] == r.outcome)
                lines.append(f"  #{r.number} {r.outcome} [{r.seed}] {r.mutation[:120]}: "
                             f"{first['step']}: {first['message'][:200]}")
            if len(notes) > NOTES_SHOWN:
                lines.append(f"  ... and {len(notes) - NOTES_SHOWN} more")
        return "\n".join(lines)


def fuzz_summary(numbers: Sequence[int], jobs: int, save_dir: Path | None,
                 timeout: float = CASE_TIMEOUT_S, verbose: bool = False) -> Summary:
    """Run ``numbers`` and summarize; ``verbose`` prints each bad case as found."""
    def report(result: CaseResult) -> None:
        if verbose and result.bad:
            print(f"#{result.number} {result.outcome}: {result.mutation[:200]}\n    "
                  + "\n    ".join(p[:400] for p in result.problems()), flush=True)

    start = time.monotonic()
    results = run_fuzz(numbers, jobs, save_dir=save_dir, timeout=timeout, on_result=report)
    return Summary(results, time.monotonic() - start, save_dir)


def host_runs_target() -> str | None:
    """None when this machine runs ``TARGET`` code, else why not."""
    from patcc.backends.target import get_target

    target = get_target(TARGET)
    if target.runs_here:
        return None
    return f"this CPU cannot run {TARGET} code (it lacks " \
           f"{', '.join(target.missing_features()) or 'the architecture'})"


def show_case(number: int, out: Path) -> str:
    """Write case ``number``'s model and inputs into ``out``; returns the commands that
    rerun it."""
    case = generate_case(number)
    out.mkdir(parents=True, exist_ok=True)
    model = out / f"case{number}.onnx"
    model.write_bytes(case.data)
    files = []
    for k, (_, array) in enumerate(case_inputs(case.data, number, case.input_kind) or []):
        files.append(out / f"case{number}-input{k}.npy")
        np.save(files[-1], array)
    inputs = " ".join(f"-i {f}" for f in files) or "-i INPUT.npy"
    return "\n".join([
        f"# case {number} from seed {case.seed!r}: {case.description}",
        f"patcc inspect --json {model}",
        f"PATCC_TUNE=0 patcc compile {model} -o {out}/case{number}.so --target {TARGET} "
        "--no-tune",
        f"patcc run {model} {inputs} -o {out}/reference.npz",
        f"patcc run {out}/case{number}.so {inputs} -o {out}/compiled.npz --threads 1",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """``worker CRASH_LOG``, ``run [--cases N] [--seed S] [--jobs J]``, ``show N``."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.cli_fuzzer",
                                     description="Fuzz the patcc CLI with hostile models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("worker", help="serve cases on stdin (started by the parent)")
    p.add_argument("crash_log")
    p = sub.add_parser("run", help="run cases and print the summary")
    p.add_argument("--cases", type=int, default=500)
    p.add_argument("--seed", type=int, default=0, help="number of the first case")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S, help="seconds per case")
    p.add_argument("--save", type=Path, default=Path("fuzz-cases"),
                   help="folder for the bad cases (default: ./fuzz-cases)")
    p.add_argument("-v", "--verbose", action="store_true", help="print bad cases as found")
    p = sub.add_parser("show", help="write a case's model and inputs, print how to rerun")
    p.add_argument("number", type=int)
    p.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if args.command == "worker":
        return worker_main(args.crash_log)
    if args.command == "show":
        print(show_case(args.number, args.out))
        return 0
    why = host_runs_target()
    if why is not None:
        print(f"cannot fuzz: {why}", file=sys.stderr)
        return 2
    summary = fuzz_summary(range(args.seed, args.seed + args.cases), args.jobs, args.save,
                           args.timeout, args.verbose)
    print(summary)
    return 1 if summary.bad else 0


if __name__ == "__main__":
    sys.exit(main())
