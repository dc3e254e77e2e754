"""One engine of ``benchmarks/peers.py`` in its own process: load a model once, then
time runs on request.

Started by the driver as ``PYTHON peer_worker.py ENGINE`` with the Python of the
environment that holds ENGINE (patcc and onnxruntime: the project's ``.venv``;
OpenVINO, MNN and ExecuTorch: ``.venv-bench``; DeepSparse: ``.venv-deepsparse``).
Only the standard library and numpy are imported at the top, so this file runs in
every one of them; each engine's own imports live in its adapter.

The line protocol, over stdin/stdout (one JSON object per reply line):

- ``load {spec}``: ``spec`` is a JSON object: ``onnx`` (the model file), ``model`` and
  ``variant`` (the ``patcc.models.pruned_model`` arguments, for engines that start from
  the torch module), ``input`` (an ``.npy`` file), ``input_name``, ``output_names``,
  ``threads``, ``warmup`` (runs before any is timed), ``workdir`` (where to write
  converted models and outputs) and ``target`` (patcc's target tag). The worker loads
  or compiles the model, runs the warm-up runs, saves the outputs of its last run as
  ``.npy`` files and replies ``{"ok": true, "version", "config", "load_s",
  "outputs": [paths]}``, or ``{"ok": false, "error": "one line"}``.
- ``run K``: K runs, each timed alone; replies ``{"ok": true, "times": [seconds...]}``.
- ``quit`` (or end of input): exit.

Between requests the worker blocks on its read of stdin, so it takes no CPU while the
other engines run, unless the engine's own threads spin (measured by the driver).

Engines print to stdout from C code (MNN's converter, ExecuTorch's logs): the worker
keeps a private duplicate of stdout for its replies and points file descriptor 1 at
stderr, which the driver writes to a log file.

``python peer_worker.py ENGINE --probe`` prints ``{"ok": true, "version": ...}`` (or the
error) and exits: the driver's check that the engine's environment is there.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

import numpy as np


class Adapter:
    """One engine: ``load`` once, then ``run`` (one inference on the bound input, its
    outputs materialised as host arrays) as often as asked; ``outputs`` gives the last
    run's outputs, in ``spec["output_names"]`` order."""

    name = ""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.threads = int(spec["threads"])
        self.x = np.load(spec["input"])
        self.workdir = Path(spec["workdir"])

    @staticmethod
    def version() -> str:
        raise NotImplementedError

    def load(self) -> dict[str, Any]:
        """Load/compile the model; returns the configuration the engine runs with."""
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def outputs(self) -> list[np.ndarray]:
        raise NotImplementedError


class PatccAdapter(Adapter):
    """``benchmarks/run.py``'s ``compile_patcc``: ``patcc.compile(onnx, target=...,
    tune=PATCC_TUNE != "0")`` and ``.load(num_threads=threads)``. Its pool's threads
    spin only inside a run and sleep at once between runs."""

    name = "patcc"

    @staticmethod
    def version() -> str:
        import patcc

        return patcc.__version__

    def load(self) -> dict[str, Any]:
        from run import compile_patcc  # benchmarks/run.py, this script's directory

        target = self.spec.get("target", "x86_64")
        _, self.model, record = compile_patcc(Path(self.spec["onnx"]), self.threads, target)
        return {"target": target, "tune": os.environ.get("PATCC_TUNE") != "0",
                "num_threads": self.model.num_threads, "compile": record}

    def run(self) -> None:
        self.model(self.x)

    def outputs(self) -> list[np.ndarray]:
        outs = self.model.run([self.x])
        return [outs[n] for n in self.spec["output_names"]]


class OnnxruntimeAdapter(Adapter):
    """``benchmarks/run.py``'s ``ort_session``: CPU provider, ``threads`` intra-op
    threads, one inter-op thread, ``session.intra_op.allow_spinning=0``."""

    name = "onnxruntime"

    @staticmethod
    def version() -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def load(self) -> dict[str, Any]:
        from run import ort_session  # benchmarks/run.py

        self.session = ort_session(Path(self.spec["onnx"]), self.threads)
        self.feed = {self.spec["input_name"]: self.x}
        options = self.session.get_session_options()
        return {"providers": self.session.get_providers(),
                "intra_op_num_threads": options.intra_op_num_threads,
                "inter_op_num_threads": options.inter_op_num_threads,
                "session.intra_op.allow_spinning": options.get_session_config_entry(
                    "session.intra_op.allow_spinning"),
                "graph_optimization_level": str(options.graph_optimization_level)}

    def run(self) -> None:
        self._outs = self.session.run(self.spec["output_names"], self.feed)

    def outputs(self) -> list[np.ndarray]:
        self.run()
        return list(self._outs)


class OpenvinoAdapter(Adapter):
    """OpenVINO on the CPU plugin, reading the same ONNX file: latency hint, ``threads``
    inference threads, fp32 inference precision set explicitly (on a CPU with
    AVX512_BF16 or AMX the plugin's default is bf16). ``Core.read_model`` sends no
    telemetry (only the ``ovc`` converter tool does)."""

    name = "openvino"
    READ_BACK = ("PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT",
                 "NUM_STREAMS", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING",
                 "SCHEDULING_CORE_TYPE", "EXECUTION_MODE_HINT")

    @staticmethod
    def version() -> str:
        import openvino

        return str(openvino.__version__).split("-")[0]

    def load(self) -> dict[str, Any]:
        import openvino

        core = openvino.Core()
        compiled = core.compile_model(self.spec["onnx"], "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": "f32"})
        self.request = compiled.create_infer_request()
        self.request.set_input_tensor(0, openvino.Tensor(self.x))
        names = [port.get_any_name() for port in compiled.outputs]
        self.order = [names.index(n) if n in names else i
                      for i, n in enumerate(self.spec["output_names"])]
        config = {}
        for key in self.READ_BACK:  # as the plugin reports them (an ov.Type: "f32")
            value = compiled.get_property(key)
            config[key] = value.to_string() if isinstance(value, openvino.Type) else str(value)
        config["full_version"] = openvino.get_version()
        return config

    def run(self) -> None:
        self.request.infer()

    def outputs(self) -> list[np.ndarray]:
        self.run()
        return [np.array(self.request.get_output_tensor(i).data) for i in self.order]


def mnn_convert(onnx_path: str, mnn_path: Path, sparse: bool) -> None:
    """Convert with MNN's converter, called as its compiled extension ``_tools``.

    Not through the ``mnnconvert`` console script: ``MNN/tools/mnnconvert.py`` imports
    ``MNN.tools.utils.log``, which runs ``pip install -U aliyun-log-python-sdk`` in
    the current Python when that SDK is missing and then posts usage logs (model
    GUID, sizes, arguments) to Aliyun. The script's ``convert`` is exactly
    ``_tools.mnnconvert(argv)``; calling that directly runs the same converter with
    no logger. ``--detectSparseSpeedUp`` makes the converter check each convolution's
    weight sparsity and store the sparse ones for MNN's sparse kernels.

    Raises:
        RuntimeError: if the converter reports failure or writes no file.
    """
    import _tools  # MNN's converter extension (site-packages/_tools.*.so)

    argv = ["mnnconvert", "-f", "ONNX", "--modelFile", onnx_path,
            "--MNNModel", str(mnn_path), "--bizCode", "MNN"]
    if sparse:
        argv.append("--detectSparseSpeedUp")
    if not _tools.mnnconvert(argv) or not mnn_path.is_file():
        raise RuntimeError(f"MNN's converter failed on {onnx_path} (see the worker log)")


class MnnAdapter(Adapter):
    """MNN, dense: the ONNX file converted by MNN's converter, run by MNN's Python
    Module API on the CPU backend with ``numThread=threads`` and precision ``high``
    (fp32; ``low`` would allow fp16/bf16). MNN's workers sleep between runs."""

    name = "mnn"
    sparse = False

    @staticmethod
    def version() -> str:
        import MNN

        return str(MNN.version())

    def load(self) -> dict[str, Any]:
        import MNN

        path = self.workdir / f"{self.name}.mnn"
        start = time.perf_counter()
        mnn_convert(self.spec["onnx"], path, self.sparse)
        convert_s = time.perf_counter() - start
        F = MNN.expr
        self.F = F
        config = {"backend": "CPU", "numThread": self.threads, "precision": "high"}
        runtime = MNN.nn.create_runtime_manager((config,))
        self.net = MNN.nn.load_module_from_file(
            str(path), [self.spec["input_name"]], list(self.spec["output_names"]),
            runtime_manager=runtime)
        self.input = F.const(self.x, list(self.x.shape), F.NCHW)
        # MNN's defaults otherwise, Winograd included: with its default unit candidates
        # (hint WINOGRAD_MEMORY_LEVEL=3) dense 3x3 convs differ from onnxruntime by about
        # 1.1-1.3e-4 of max|ref| here; set_hint(3, 0) brings that to 6e-7, slower.
        return {**config, "converter": "_tools.mnnconvert (no usage logger)",
                "winograd_memory_level": "default (3)",
                "detectSparseSpeedUp": self.sparse, "convert_s": convert_s,
                "mnn_bytes": path.stat().st_size}

    def run(self) -> None:
        outs = self.net.forward([self.input])
        # Outputs come back in MNN's packed layout (NC4HW4) for 4-D tensors: converting
        # and reading them is part of what a caller pays.
        self._outs = [self.F.convert(o, self.F.NCHW).read() for o in outs]

    def outputs(self) -> list[np.ndarray]:
        self.run()
        return [np.array(o) for o in self._outs]


class MnnSparseAdapter(MnnAdapter):
    """MNN converted with ``--detectSparseSpeedUp``; otherwise as ``MnnAdapter``."""

    name = "mnn-sparse"
    sparse = True


class ExecutorchAdapter(Adapter):
    """ExecuTorch with XNNPACK: the same torch module (``patcc.models.pruned_model``,
    seeded weights; the output check confirms they match), ``torch.export.export``,
    lowered with ``XnnpackPartitioner`` by ``to_edge_transform_and_lower``, saved as a
    ``.pte`` and run by the ExecuTorch pybindings runtime. XNNPACK's work runs on
    ExecuTorch's process-wide pthreadpool, resized to ``threads`` threads with
    ``portable_lib._unsafe_reset_threadpool`` (read back with
    ``_threadpool_get_thread_count``) before the program is loaded."""

    name = "executorch"

    @staticmethod
    def version() -> str:
        from executorch.version import __version__

        return str(__version__).split("+")[0]

    def load(self) -> dict[str, Any]:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,
        )
        from executorch.exir import to_edge_transform_and_lower
        from executorch.extension.pybindings import portable_lib

        from patcc.models import pruned_model

        start = time.perf_counter()
        module = pruned_model(self.spec["model"], self.spec["variant"])
        self.xt = torch.from_numpy(self.x)
        exported = torch.export.export(module, (self.xt,))
        lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        # Ops left outside the XNNPACK delegate run on ExecuTorch's portable kernels.
        outside = sorted({str(node.target) for node in
                          lowered.exported_program().graph.nodes
                          if node.op == "call_function"
                          and "executorch_call_delegate" not in str(node.target)
                          and "getitem" not in str(node.target)})
        program = lowered.to_executorch()
        path = self.workdir / "executorch.pte"
        path.write_bytes(program.buffer)
        lower_s = time.perf_counter() - start
        portable_lib._unsafe_reset_threadpool(self.threads)
        self.module = portable_lib._load_for_executorch(str(path))
        return {"partitioner": "XnnpackPartitioner()", "lower_s": lower_s,
                "threadpool_threads": portable_lib._threadpool_get_thread_count(),
                "ops_outside_xnnpack": outside, "torch": torch.__version__,
                "pte_bytes": path.stat().st_size}

    def run(self) -> None:
        self._outs = self.module.forward((self.xt,))

    def outputs(self) -> list[np.ndarray]:
        self.run()
        return [o.detach().numpy().copy() for o in self._outs]


class DeepsparseAdapter(Adapter):
    """DeepSparse 1.8.0: ``deepsparse.compile_model(onnx, batch_size=1,
    num_cores=threads)`` on the same ONNX file (analytics off: NM_DISABLE_ANALYTICS)."""

    name = "deepsparse"

    @staticmethod
    def version() -> str:
        import deepsparse

        return str(deepsparse.__version__)

    def load(self) -> dict[str, Any]:
        import deepsparse

        self.engine = deepsparse.compile_model(self.spec["onnx"], batch_size=1,
                                               num_cores=self.threads)
        e = self.engine
        return {"batch_size": e.batch_size, "num_cores": e.num_cores,
                "num_streams": e.num_streams, "scheduler": str(e.scheduler),
                "cpu_avx_type": e.cpu_avx_type, "cpu_vnni": e.cpu_vnni,
                "fraction_of_supported_ops": e.fraction_of_supported_ops}

    def run(self) -> None:
        self._outs = self.engine.run([self.x])

    def outputs(self) -> list[np.ndarray]:
        self.run()
        return [np.array(o) for o in self._outs]


ADAPTERS: dict[str, type[Adapter]] = {a.name: a for a in (
    PatccAdapter, OnnxruntimeAdapter, OpenvinoAdapter, MnnAdapter, MnnSparseAdapter,
    ExecutorchAdapter, DeepsparseAdapter)}


def one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return " ".join(text.split())[:400]


def serve(adapter_class: type[Adapter], requests: IO[str], replies: IO[str]) -> int:
    """Answer ``load``/``run``/``quit`` requests until ``quit`` or end of input."""
    adapter: Adapter | None = None

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    for line in requests:
        command, _, argument = line.strip().partition(" ")
        try:
            if command == "load":
                spec = json.loads(argument)
                start = time.perf_counter()
                adapter = adapter_class(spec)
                config = adapter.load()
                for _ in range(int(spec.get("warmup", 3))):
                    adapter.run()
                load_s = time.perf_counter() - start
                paths = []
                for i, out in enumerate(adapter.outputs()):
                    path = Path(spec["workdir"]) / f"out{i}.npy"
                    np.save(path, np.asarray(out, dtype=np.float32))
                    paths.append(str(path))
                reply({"ok": True, "engine": adapter_class.name,
                       "version": adapter_class.version(), "config": config,
                       "load_s": load_s, "outputs": paths})
            elif command == "run":
                if adapter is None:
                    raise RuntimeError("run before load")
                times = []
                for _ in range(int(argument or 1)):
                    start = time.perf_counter()
                    adapter.run()
                    times.append(time.perf_counter() - start)
                reply({"ok": True, "times": times})
            elif command == "quit":
                return 0
            else:
                raise ValueError(f"unknown request {line.strip()[:40]!r}; expected "
                                 "'load {json}', 'run K' or 'quit'")
        except Exception as error:  # reported to the driver, which marks the engine
            traceback.print_exc()
            reply({"ok": False, "error": one_line(error)})
    return 0


def main(argv: list[str] | None = None,
         adapters: dict[str, type[Adapter]] | None = None) -> int:
    """``peer_worker.py ENGINE [--probe]``; ``adapters`` overrides ``ADAPTERS`` (tests)."""
    argv = sys.argv[1:] if argv is None else argv
    adapters = ADAPTERS if adapters is None else adapters
    if not argv or argv[0] not in adapters:
        print(f"usage: peer_worker.py ENGINE [--probe]; ENGINE is one of "
              f"{', '.join(adapters)}", file=sys.stderr)
        return 2
    # The replies get a private copy of stdout; whatever the engines print, from
    # Python or C, goes to stderr (the driver's log file) instead.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    adapter_class = adapters[argv[0]]
    if "--probe" in argv[1:]:
        try:
            message = {"ok": True, "version": adapter_class.version()}
        except Exception as error:
            message = {"ok": False, "error": one_line(error)}
        replies.write(json.dumps(message) + "\n")
        return 0
    return serve(adapter_class, sys.stdin, replies)


if __name__ == "__main__":
    sys.exit(main())
