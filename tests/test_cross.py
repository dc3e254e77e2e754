"""Cross-compiling for ARM: target tags, --cpu/--features, and the linked ELF.

The shared objects are read back with ``patcc.backends.elf.read_symbols``: the
machine, the libraries they need (the target C library's names, nothing else) and the
symbols they export (the C ABI, nothing else).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import patcc
from patcc.backends.elf import EM_AARCH64, read_load_segments, read_symbols
from patcc.backends.llvm import toolchain
from patcc.backends.llvm.toolchain import LIBM_FUNCTIONS
from patcc.backends.target import get_target, with_overrides
from patcc.cli import main
from patcc.errors import PatccError
from patcc.frontends.onnx import import_onnx
from patcc.ir import verify
from patcc.models import INPUT_SHAPES
from patcc.runtime import run
from patcc.runtime.emulated import EmulatedModel
from support.compare import assert_close
from support.fuzz import fuzz_examples
from support.onnx_gen import OnnxCase, pattern_conv_models, small_graph_models
from support.reference_models import FULL_MATRIX, SLOW_ARCHITECTURES, reference_params
from support.tools import require_lld, require_tool

ABI = {"patcc_run", "patcc_workspace_size", "patcc_model_info", "patcc_set_num_threads",
       "patcc_get_num_threads", "patcc_abi_version"}
ARM_TAGS = ("aarch64-linux", "aarch64-android")


def test_arm_tags() -> None:
    android = get_target("aarch64-android")
    assert android.triple == "aarch64-unknown-linux-android24"
    assert android.cpu == "cortex-a76" and "+dotprod" in android.features.split(",")
    assert "+fullfp16" in android.features.split(",")
    assert android.vector_width == 4 and not android.pin_threads and not android.is_host
    assert android.libraries[:2] == ("libc.so", "libm.so")
    assert get_target("aarch64-linux").libraries[:2] == ("libc.so.6", "libm.so.6")
    assert get_target("aarch64-android29").triple == "aarch64-unknown-linux-android29"
    with pytest.raises(PatccError, match="API level 19 .* aarch64-android29"):
        get_target("aarch64-android19")


@pytest.mark.parametrize(("cpu", "features", "quoted", "example"), [
    ("cortex-a99", None, "CPU 'cortex-a99' is not known to LLVM", "--cpu cortex-a76"),
    (None, "+neon,+warp", "feature '+warp' is not known to LLVM", "--features +neon,+dotprod"),
    (None, "neon", "'neon' is not +name or -name", "--features +neon,+dotprod"),
    ("a76; rm", None, "--cpu 'a76; rm' is not a CPU name", "--cpu cortex-a76"),
])
def test_bad_cpu_or_features_quote_the_string(cpu: str | None, features: str | None,
                                              quoted: str, example: str) -> None:
    with pytest.raises(PatccError) as error:
        with_overrides(get_target("aarch64-android"), cpu, features)
    assert quoted in str(error.value) and f"(e.g. {example}" in str(error.value)


def test_overrides_replace_the_tags() -> None:
    little = with_overrides(get_target("aarch64-android"), cpu="cortex-a55",
                            features="+neon,+dotprod")
    assert (little.cpu, little.features) == ("cortex-a55", "+neon,+dotprod")
    assert little.triple == get_target("aarch64-android").triple


@pytest.fixture(scope="module")
def tiny(exported_model) -> Path:  # type: ignore[no-untyped-def]
    return exported_model("senet_tiny", "6x")[1]


@pytest.mark.parametrize("tag", ARM_TAGS)
def test_cross_compiled_elf(tag: str, tiny: Path, tmp_path: Path) -> None:
    require_lld()
    target = get_target(tag)
    compiled = patcc.compile(tiny, target=tag)
    assert "llvm.x86" not in str(compiled.llvm_module)  # nothing x86-specific in ARM code
    path = tmp_path / "libsenet.so"
    compiled.save(path)
    data = path.read_bytes()
    elf = read_symbols(data)
    # Android's loader knows a library by its soname; glibc's finds one by path.
    assert elf.soname == ("libsenet.so" if target.soname else None)
    for segment in read_load_segments(data):  # loadable with 4, 16 and 64 KiB pages
        assert segment.align >= 65536 and segment.align % 16384 == 0
        assert (segment.offset - segment.vaddr) % segment.align == 0
    assert elf.machine == EM_AARCH64
    assert elf.defined == ABI
    libc, libm = target.libraries[:2]
    assert libc in elf.needed and set(elf.needed) <= {libc, libm}, elf.needed
    assert (libm in elf.needed) == any(s in LIBM_FUNCTIONS for s in elf.undefined)
    assert any(s.startswith("pthread_") for s in elf.undefined)
    code = read_symbols(compiled.code_object)  # the pattern kernel ran for this target
    assert code.machine == EM_AARCH64
    assert any(c.kernel == "pattern" for c in compiled.plan.codes)


def test_cross_emit_obj_is_relocatable(tiny: Path, tmp_path: Path) -> None:
    require_lld()
    out = tmp_path / "model.o"
    assert main(["compile", str(tiny), "--target", "aarch64-android", "--emit", "obj",
                 "-o", str(out), "-q"]) == 0
    data = out.read_bytes()
    assert data[16] == 1 and read_symbols(data).machine == EM_AARCH64  # ET_REL


def test_missing_linker_says_how_to_get_one(tiny: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: None)
    monkeypatch.setattr(toolchain.importlib.util, "find_spec", lambda name: None)
    compiled = patcc.compile(tiny, target="aarch64-linux")
    with pytest.raises(PatccError, match="apt-get install lld.*pip install ziglang"):
        compiled.shared_object()


def test_cli_bad_cpu_exits_2_and_writes_nothing(tiny: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.so"
    status = main(["compile", str(tiny), "--target", "aarch64-android", "--cpu", "cortex-a99",
                   "-o", str(out)])
    assert status == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'cortex-a99'" in err[0] and "--cpu cortex-a76" in err[0]


def test_cli_android_model_named_like_libm_exits_2(tiny: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "libm.so"  # its soname would shadow the C library's libm
    assert main(["compile", str(tiny), "--target", "aarch64-android", "-o", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libm.so is the name of a system library" in err[0]


# ---------------------------------------------------------------------------------------
# Running under qemu
# ---------------------------------------------------------------------------------------

QEMU_PACKAGES = "apt-get install qemu-user gcc-aarch64-linux-gnu libc6-arm64-cross " \
                "libc6-dev-arm64-cross"


def require_emulation() -> None:
    require_lld()
    require_tool("qemu-aarch64", QEMU_PACKAGES)
    require_tool("aarch64-linux-gnu-gcc", QEMU_PACKAGES)




def _arm_case_runs(name: str, variant: str, tag: str) -> bool:
    if FULL_MATRIX:
        return True
    if name in SLOW_ARCHITECTURES:
        return False
    return (tag == "aarch64-android") == (variant != "dense")


ARM_CASES = [case for case in reference_params(ARM_TAGS) if _arm_case_runs(*case.values)]
"""Every reference architecture but the slow two (ResNet-50 and VGG-16 are ResNet-18's
kernels again, 40-50 s each under qemu), each variant once: dense for glibc, pruned
for Android, so every model's dense and pattern kernels run on ARM and each C
library's loader runs every model. ``PATCC_FULL_MATRIX=1`` runs every case."""


@pytest.mark.parametrize(("name", "variant", "tag"), ARM_CASES)
def test_arm_model_matches_onnxruntime_under_qemu(name: str, variant: str, tag: str,
                                                 exported_model,  # type: ignore[no-untyped-def]
                                                 tmp_path: Path) -> None:
    # ARM_CASES (about 5 minutes in all under qemu).
    require_emulation()
    path = exported_model(name, variant)[1]
    so = tmp_path / "model.so"
    compiled = patcc.compile(path, target=tag)
    compiled.save(so)
    pattern = any(c.kernel == "pattern" for c in compiled.plan.codes)
    assert pattern == (variant != "dense")
    del compiled  # VGG-16's plan holds its 0.5 GB of weights
    model = patcc.load(so, num_threads=2)
    assert isinstance(model, EmulatedModel) and model.info["target"]["tag"] == tag
    x = np.random.default_rng(3).uniform(-1, 1, INPUT_SHAPES[name]).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = session.run(names, {session.get_inputs()[0].name: x})
    got = model.run([x])
    assert list(got) == names  # the detector's three, in order
    for out_name, ref in zip(names, expected, strict=True):
        assert_close(got[out_name], ref, f"{name} {variant} {out_name} for {tag} under qemu")
    if name.endswith("_tiny"):
        model.num_threads = 1
        for out_name, value in model.run([x]).items():  # threads split work, not results
            np.testing.assert_array_equal(value, got[out_name], err_msg=out_name)


@pytest.mark.parametrize("tag", ARM_TAGS)
def test_arm_default_threads_follow_the_affinity_mask(tag: str, tiny: Path,
                                                      tmp_path: Path) -> None:
    require_tool("qemu-aarch64", "apt-get install qemu-user")
    so = tmp_path / "libmodel.so"
    patcc.compile(tiny, target=tag).save(so)
    model = patcc.load(so)
    assert isinstance(model, EmulatedModel)
    cpus = os.sched_getaffinity(0)
    assert int(model._harness("threads", "0")) == len(cpus)
    # Android's C library numbers its sysconf names unlike glibc's; the count comes
    # from the affinity mask (which qemu passes through), so it is right on both.
    os.sched_setaffinity(0, {min(cpus)})
    try:
        assert int(model._harness("threads", "0")) == 1
    finally:
        os.sched_setaffinity(0, cpus)


def test_cli_runs_an_arm_model(tiny: Path, tmp_path: Path) -> None:
    require_emulation()
    so, x_path, out = tmp_path / "m.so", tmp_path / "x.npy", tmp_path / "out.npz"
    assert main(["compile", str(tiny), "--target", "aarch64-android29", "-o", str(so),
                 "-q"]) == 0
    native = patcc.compile(tiny)
    x = np.random.default_rng(4).standard_normal(native.load().inputs["input"].shape)
    np.save(x_path, x.astype(np.float32))
    assert main(["run", str(so), "-i", str(x_path), "-o", str(out)]) == 0
    (got,) = np.load(out).values()
    assert_close(got, native(x.astype(np.float32)), "aarch64-android29 vs x86_64")


def test_missing_emulator_names_the_packages(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from patcc.runtime import emulated

    monkeypatch.setattr(emulated.shutil, "which", lambda name: None)
    fake = tmp_path / "arm.so"
    fake.write_bytes(b"\x7fELF")
    with pytest.raises(PatccError, match="qemu-aarch64.*apt-get install qemu-user"):
        EmulatedModel(fake, "aarch64")


ARM_EXAMPLES = max(2, fuzz_examples(25) // 2)
"""Random graphs per run: each costs a cross compile and a start of qemu (~0.5 s)."""


@settings(max_examples=ARM_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(st.one_of(small_graph_models(), pattern_conv_models()))
def test_random_graphs_on_aarch64_match_the_interpreter(case: OnnxCase) -> None:
    require_emulation()
    graph = verify(import_onnx(case.model, case.input_shapes))
    expected = run(graph, case.feeds)
    compiled = patcc.compile(case.model, target="aarch64-android",
                             input_shapes=case.input_shapes)
    with tempfile.TemporaryDirectory(prefix="patcc-arm-") as tmp:
        so = Path(tmp) / "model.so"
        compiled.save(so)
        got = patcc.load(so, num_threads=2).run(case.feeds)
    for name in case.output_names:
        assert_close(got[name], expected[name], f"{name} on aarch64 vs interpreter")


def test_pointwise_operators_under_qemu(tmp_path: Path) -> None:
    """exp, log, pow and the polynomial erf of the new point-wise operators, linked
    against the phone's libm and run under emulation."""
    from test_pointwise import feeds, pointwise_model

    from patcc.runtime import run

    require_emulation()
    compiled = patcc.compile(pointwise_model(), "aarch64-android", tune=False)
    compiled.save(tmp_path / "m.so")
    got = patcc.load(tmp_path / "m.so").run(feeds())
    for name, value in run(compiled.graph, feeds()).items():
        assert_close(got[name], value, name)


def test_resize_under_qemu(tmp_path: Path) -> None:
    """Every Resize form models export (nearest repeat, linear and cubic gathers), the
    U-Net up-sample + Concat, on aarch64."""
    from test_resize import SHAPE, TORCH_MODES, _feeds, _model, _unet_feeds, unet_merge_model

    from patcc.runtime import run

    require_emulation()
    for model, feeds in ((_model(SHAPE, TORCH_MODES), _feeds(SHAPE)),
                         (unet_merge_model(), _unet_feeds())):
        compiled = patcc.compile(model, "aarch64-android", tune=False)
        compiled.save(tmp_path / "m.so")
        got = patcc.load(tmp_path / "m.so").run(feeds)
        for name, value in run(compiled.graph, feeds).items():
            assert_close(got[name], value, name)


def test_conv_transpose_under_qemu(tmp_path: Path) -> None:
    """The Col2Im kernel's interleaving shuffles and masked stores on NEON (4 lanes)."""
    from test_conv_transpose import X_SHAPE, conv_transpose_model, feeds, grid_layers

    from patcc.runtime import run

    require_emulation()
    compiled = patcc.compile(conv_transpose_model(grid_layers(), X_SHAPE), "aarch64-android",
                             tune=False)
    compiled.save(tmp_path / "m.so")
    got = patcc.load(tmp_path / "m.so", num_threads=2).run(feeds(X_SHAPE))
    for name, value in run(compiled.graph, feeds(X_SHAPE)).items():
        assert_close(got[name], value, name)
