"""Static analysis of the generated inner loops (``patcc/backends/llvm/mca.py``) and
what ``--report`` shows of it: the FMA instruction, FMAs and loads per iteration read
from the assembly, and llvm-mca's cycles on the target's scheduling model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import patcc
from patcc.backends.llvm import mca
from patcc.backends.target import get_target
from patcc.cli import main
from patcc.compiler import CompiledModel
from patcc.errors import PatccError
from patcc.report import add_loop_figures, layer_rows
from support.tools import MISSING_TOOL, require_lld

X86_ASM = """\
f:
# %bb.0:
\tmovl\t$0, %eax
.LBB0_1:                                # %L0.f.body
                                        # =>This Loop Header: Depth=1
\tmovq\t8(%rsp), %rcx                   # 8-byte Reload
.LBB0_2:                                # %L0.k0.body
                                        #   Parent Loop BB0_1 Depth=1
                                        # =>  This Inner Loop Header: Depth=2
\tvfmadd231ps\t(%rdi,%rax,4), %zmm1, %zmm0
\tvbroadcastss\t4(%rsi), %zmm2
\tvfmadd231ps\t%zmm2, %zmm3, %zmm4    # comment
\tvmovups\t%zmm0, (%rdx)
\tleaq\t(%rax,%rax), %rcx
# %bb.3:                                #   in Loop: Header=BB0_2 Depth=2
\taddq\t$1, %rax
\tjne\t.LBB0_2
# %bb.4:                                #   in Loop: Header=BB0_1 Depth=1
\tjmp\t.LBB0_1
\t.p2align\t4, 0x90
.LBB0_5:                                # %L1.k0.body.us
                                        # =>This Inner Loop Header: Depth=1
\tvfmadd231ps\t%ymm1, %ymm2, %ymm3
\tjne\t.LBB0_5
.LBB0_6:                                # %L1.k0.body
                                        # =>This Inner Loop Header: Depth=1
\tvfmadd231ps\t%ymm1, %ymm2, %ymm3
\tvfmadd231ps\t%ymm1, %ymm2, %ymm4
\tjne\t.LBB0_6
.LBB0_7:                                # %worker.loop
                                        # =>This Inner Loop Header: Depth=1
\tvfmadd231ps\t%ymm1, %ymm2, %ymm3
\tvfmadd231ps\t%ymm1, %ymm2, %ymm4
\tvfmadd231ps\t%ymm1, %ymm2, %ymm5
\tjne\t.LBB0_7
"""

ARM_ASM = """\
.LBB3_9:                                // %L4.k1.body.1.i.i
                                        // =>This Inner Loop Header: Depth=1
\tldrh\tw9, [x4], #2
\tldp\tq0, q1, [x0], #32
\tld1\t{ v5.4s, v6.4s }, [x1]
\tldr\ts2, [x2, #4]                     // 4-byte Folded Reload
\tfmla\tv3.4s, v0.4s, v2.s[0]
\tfmla\tv4.4s, v1.4s, v2.s[0]
\tfmla\tv7.4s, v5.4s, v6.4s
\tstr\tq3, [x3]
\tsubs\tx8, x8, #1
\tb.ne\t.LBB3_9
"""


def test_innermost_layer_loops_are_found_with_their_blocks() -> None:
    loops = mca.parse_inner_loops(X86_ASM, "x86_64")
    assert [(lp.layer, lp.name, lp.fmas) for lp in loops] == [(0, "k0", 2), (1, "k0", 1),
                                                             (1, "k0", 2)]
    first = loops[0]
    # The header block and the latch block that says it is in the loop, no more.
    assert first.instructions[0].startswith("vfmadd231ps") and first.instructions[-1] == \
        "jne\t.LBB0_2"
    assert "vfmadd231ps\t%zmm2, %zmm3, %zmm4" in first.instructions  # comment gone
    assert first.loaded == 2  # the folded operand and the broadcast; not the store, lea
    assert first.fma_form == "vfmadd231ps zmm"
    hot = mca.hot_loops(loops)
    assert sorted(hot) == [0, 1] and [lp.fmas for lp in hot[1]] == [2]


def test_arm_loads_count_registers_and_immediates_survive() -> None:
    (loop,) = mca.parse_inner_loops(ARM_ASM, "aarch64")
    assert (loop.layer, loop.name, loop.fmas) == (4, "k1", 3)
    assert loop.loaded == 1 + 2 + 2 + 1  # ldrh, ldp, two-register ld1, ldr
    assert "ldp\tq0, q1, [x0], #32" in loop.instructions
    assert "ldr\ts2, [x2, #4]" in loop.instructions
    assert loop.fma_form == "fmla .4s"


@pytest.fixture(scope="module")
def tiny(exported_model) -> Path:  # type: ignore[no-untyped-def]
    return exported_model("senet_tiny", "6x")[1]


@pytest.fixture(scope="module")
def arm_model(tiny: Path) -> CompiledModel:
    return patcc.compile(tiny, "aarch64-android")


def test_arm_pattern_loops_are_neon_fma_with_the_planned_loads(
        arm_model: CompiledModel) -> None:
    compiled = arm_model
    rows = layer_rows(compiled)
    add_loop_figures(compiled, rows)
    pattern = [r for r in rows if r["kernel"] == "pattern"]
    assert pattern
    for r in pattern:
        rows_, nvec = map(int, re.match(r"(\d+)r x (\d+)v", r["block"]).groups())
        assert r["fma_form"] == "fmla .4s"
        assert r["loop_fmas"] == 4 * rows_ * nvec  # a kernel: 4 taps x the register tile
        # Machine code loads exactly what the plan counted: the shared tap vectors
        # are loaded once, nothing is spilled and reloaded.
        assert r["asm_loads_per_fma"] == pytest.approx(r["loads_per_fma"], abs=2e-3)
        assert r["asm_loads_per_fma"] < r["loads_per_fma_without_lre"]
    asm = compiled.emit("asm").decode()
    assert "fmla\tv" in asm and not re.search(r"%[xyz]mm|\bvfmadd", asm)


def _mca() -> mca.Mca:
    mca.find_llvm_mca.cache_clear()
    tool = mca.find_llvm_mca()
    if tool is None or tool.version < (17,):
        pytest.skip(f"{MISSING_TOOL} llvm-mca 17 or later (apt-get install llvm-19)")
    return tool


def test_mca_cycles_per_region_in_order() -> None:
    tool = _mca()
    target = get_target("aarch64-android")
    chain = ("fmla v0.4s, v1.4s, v2.4s",)  # each iteration waits for the last
    wide = tuple(f"fmla v{i}.4s, v30.4s, v31.4s" for i in range(24))
    one, many = tool.cycles([chain, wide], target)
    assert 2 <= one <= 8  # FMA latency, not throughput
    assert many == pytest.approx(12, rel=0.1)  # 24 FMAs on the A76's two FMA pipes
    assert tool.fma_peak(target) == pytest.approx(2.0, rel=0.05)


def test_arm_report_estimates_pattern_loops(arm_model: CompiledModel) -> None:
    _mca()
    compiled = arm_model
    rows = layer_rows(compiled)
    notes = add_loop_figures(compiled, rows)
    assert "neoverse-n1 for cortex-a76" in notes[0]
    for r in rows:
        if r["kernel"] != "pattern":
            continue
        # No loop beats the model's FMA peak, and none is mostly stalled.
        assert r["loop_cycles"] >= r["loop_fmas"] / 2.0 - 0.1
        assert 30 < r["fma_peak_pct"] <= 100
        assert r["est_mcycles"] == pytest.approx(
            r["nonzero_macs"] / 4 / r["fma_per_cycle"] / 1e6, rel=0.02)


def test_report_without_llvm_mca_says_how_to_get_it(
        arm_model: CompiledModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = arm_model
    rows = layer_rows(compiled)
    monkeypatch.setenv("PATH", str(tmp_path))
    mca.find_llvm_mca.cache_clear()
    try:
        notes = add_loop_figures(compiled, rows)
        assert notes == ["no llvm-mca on PATH, so no cycle estimates "
                         "(apt-get install llvm-19)"]
        assert all("loop_cycles" not in r for r in rows)
        assert any(r.get("fma_form") == "fmla .4s" for r in rows)  # the asm still is
        monkeypatch.setenv("PATCC_LLVM_MCA", str(tmp_path / "nothing"))
        mca.find_llvm_mca.cache_clear()
        with pytest.raises(PatccError, match="is not a working llvm-mca"):
            mca.find_llvm_mca()
        assert add_loop_figures(compiled, rows)[0].startswith("no cycle estimates: ")
    finally:
        mca.find_llvm_mca.cache_clear()


def test_cli_report_for_arm(tiny: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    require_lld()
    out = tmp_path / "m.so"
    assert main(["compile", str(tiny), "--target", "aarch64-android", "-o", str(out),
                 "--report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(line for line in lines if line.startswith("layer"))
    assert "FMA op" in head and "ld/FMA asm" in head and " ms " not in head + " "
    assert any("pattern" in line and "fmla .4s" in line for line in lines)
    assert out.exists()
