"""The CPU targets the tests build for, and which of them this machine can run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import pytest

X86_TAGS = ("x86_64-avx2", "x86_64-avx512")
"""The portable x86 targets whose code the compiled tests run where this CPU can: an
AVX-512 machine runs both, an AVX2 one only the first (``PATCC_HOST_TARGET`` makes
an AVX-512 machine pass for an AVX2 one)."""

CPU_TAGS = ("x86_64-avx512", "x86_64-avx2", "aarch64-android")
"""One target per register file patcc generates code for: 32 x 16 lanes, 16 x 8 lanes,
32 x 4 lanes (compile-only tests cover all three on any host)."""


def runnable_target(tag: str):  # type: ignore[no-untyped-def]
    """The ``Target`` for ``tag``; skips (also in CI: no tool is missing, the CPU is
    what it is) when this machine cannot run its code."""
    from patcc.backends.target import get_target

    target = get_target(tag)
    if not target.runs_here:
        pytest.skip(f"this CPU cannot run {tag} code (it lacks "
                    f"{', '.join(target.missing_features()) or 'the architecture'})")
    return target


def runnable_x86_tags() -> list[str]:
    """The tags of ``X86_TAGS`` this machine can run (for hypothesis to draw from)."""
    from patcc.backends.target import get_target

    return [tag for tag in X86_TAGS if get_target(tag).runs_here]


def compiled_outputs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                     input_shapes: Mapping[str, Sequence[int]] | None = None
                     ) -> dict[str, dict[str, np.ndarray]]:
    """Tag -> the outputs of ``model`` built (untuned) for each x86 tag this machine
    can run, on ``feeds`` at two threads."""
    import patcc

    return {tag: patcc.compile(model, tag, input_shapes=input_shapes, tune=False)
            .load(num_threads=2).run(feeds) for tag in runnable_x86_tags()}
