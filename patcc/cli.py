"""The ``patcc`` command line: compile, run, inspect and prune.

User errors print one line (``patcc: error: WHERE: WHAT``) and exit with status 2;
``--debug`` adds the traceback. Mistakes in the command line itself (an unknown
option, a value of the wrong type) are user errors too: one line, status 2, and
``--help`` for the usage.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from patcc import __version__
from patcc.errors import PatccError
from patcc.fileio import check_output

EXIT_USER_ERROR = 2


class UsageError(Exception):
    """A mistake in the command line, found by argparse; ``where`` is the subcommand."""

    def __init__(self, message: str, where: str) -> None:
        self.where = where
        super().__init__(message)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a usage error raises ``UsageError`` for ``main`` to print
    as one line, instead of printing the whole usage and exiting (subparsers are made
    of the same class, so every subcommand behaves alike)."""

    def error(self, message: str) -> NoReturn:
        """Raise ``UsageError`` with argparse's one-line ``message``."""
        raise UsageError(" ".join(message.split()), self.prog)


def _input_shapes(specs: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    from patcc.frontends.onnx import parse_shape_spec

    return dict(parse_shape_spec(s) for s in specs or ())


def _cmd_inspect(args: argparse.Namespace) -> int:
    from patcc.frontends.onnx import import_onnx
    from patcc.stats import format_stats, model_stats

    graph = import_onnx(args.model, _input_shapes(args.input_shape))
    stats = model_stats(graph)
    if args.json:
        print(json.dumps(stats, indent=1, allow_nan=False, default=str))
    else:
        print(format_stats(stats))
        if args.ir:
            print(graph)
    return 0


def _input_spec(spec: str) -> tuple[str | None, str]:
    """``-i NAME=FILE`` -> (NAME, FILE); ``-i FILE`` -> (None, FILE), also when FILE's
    own name has an ``=`` in it."""
    name, sep, file = spec.partition("=")
    if sep and not Path(spec).exists():
        return name, file
    return None, spec


def _read_inputs(specs: Sequence[str], names: Sequence[str]) -> dict[str, np.ndarray]:
    """``-i FILE`` fills inputs in order; ``-i NAME=FILE`` names one."""
    from patcc.fileio import load_npy

    named: dict[str, np.ndarray] = {}
    positional: list[np.ndarray] = []
    for spec in specs:
        name, file = _input_spec(spec)
        if name is not None:
            if name not in names:
                raise PatccError(f"-i {spec!r} names input {name!r}, but the model's inputs "
                                 f"are {list(names)}")
            named[name] = load_npy(file)
        else:
            positional.append(load_npy(file))
    free = [n for n in names if n not in named]
    if len(positional) > len(free):
        raise PatccError(f"{len(specs)} input files given for the model's inputs {list(names)}")
    named.update(zip(free, positional, strict=False))
    return named


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _artifact_kind(path: str) -> str:
    """What ``patcc run`` was given: ``"so"``, ``"package"`` or ``"onnx"``.

    Anything but a regular file or a package directory is refused before it is
    opened: reading a named pipe would block, a device such as ``/dev/zero`` never
    ends. Raises ``PatccError``.
    """
    from patcc.runtime.opencl import MANIFEST, is_package

    what = "give a compiled .so, an OpenCL package directory or an .onnx model"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise PatccError("no such file", where=path) from None
    except OSError as e:
        raise PatccError(f"cannot read: {e.strerror}", where=path) from e
    if stat.S_ISDIR(mode):
        if is_package(path):
            return "package"
        raise PatccError(f"is a directory but not an OpenCL package (it has no {MANIFEST}); "
                         f"{what}", where=path)
    if stat.S_ISFIFO(mode):
        raise PatccError(f"is a named pipe, not a file; {what}", where=path)
    if not stat.S_ISREG(mode):
        raise PatccError(f"is not a regular file (a device or a socket); {what}", where=path)
    return "so" if _is_elf(path) else "onnx"


def _cmd_compile(args: argparse.Namespace) -> int:
    import time

    from patcc.compiler import CompiledPackage
    from patcc.compiler import compile as compile_model

    start = time.perf_counter()
    from patcc.backends.opencl import OPENCL_TARGETS

    opencl = args.target in OPENCL_TARGETS
    emit = args.emit or ("opencl" if opencl else "so")
    if args.report and opencl:
        raise PatccError("--report reads CPU assembly; for an OpenCL package, time the "
                         "kernels with patcc.load(PACKAGE, profile=True).layer_times()")
    example = "model.ocl" if opencl else {"obj": "model.o", "llvm": "model.ll", "asm": "model.s",
                                          "header": "model.h"}.get(emit, "model.so")
    check_output(args.output, [args.model], example, package=opencl)
    model = compile_model(args.model, args.target, _input_shapes(args.input_shape),
                          tune=args.tune, progress=not args.quiet and sys.stderr.isatty(),
                          cpu=args.cpu, features=args.features, precision=args.precision,
                          fuse_blocks=args.fuse_blocks)
    model.save(args.output, emit)
    elapsed = time.perf_counter() - start
    if not args.quiet:
        if isinstance(model, CompiledPackage):
            layers, what, device = len(model.program.launches), "kernels", model.target.device
        else:
            layers, what, device = len(model.plan.codes), "layers", model.target.cpu
        print(f"{args.output}: {emit} for {model.target.tag} ({device}), "
              f"{layers} {what}, workspace {model.workspace_size / 2**20:.2f} MiB,"
              f" compiled in {elapsed:.1f} s")
    if args.report:
        from patcc.report import report

        print(report(model))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from patcc.fileio import save_npz

    kind = _artifact_kind(args.artifact)
    sources = [args.artifact, *(_input_spec(spec)[1] for spec in args.input)]
    if kind == "package":  # its files, which an output must not overwrite either
        sources += sorted(Path(args.artifact).iterdir())
    check_output(args.output, sources, "outputs.npz")
    if kind == "so":
        from patcc.runtime import load

        model = load(args.artifact, args.threads)
        inputs = _read_inputs(args.input, list(model.inputs))
        outputs = model.run(inputs)
    elif kind == "package":
        from patcc.runtime.opencl import load as load_package

        package = load_package(args.artifact)
        inputs = _read_inputs(args.input, package.input_names)
        outputs = package.run(inputs)
    else:
        from patcc.frontends.onnx import import_onnx
        from patcc.runtime import run

        graph = import_onnx(args.artifact, _input_shapes(args.input_shape))
        inputs = _read_inputs(args.input, list(graph.inputs))
        outputs = run(graph, inputs)
    save_npz(args.output, outputs)
    if not args.quiet:
        for name, value in outputs.items():
            print(f"{name}: {value.dtype}[{'x'.join(map(str, value.shape))}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``patcc`` command."""
    parser = ArgumentParser(
        prog="patcc", description="Compile pattern-pruned CNNs into fast native code.")
    parser.add_argument("--version", action="version", version=f"patcc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    shape_help = "fix an input's shape, e.g. input=1x3x224x224 (repeatable)"

    from patcc.backends.opencl import EMIT_KINDS as OPENCL_EMIT_KINDS
    from patcc.backends.opencl.codegen import PRECISIONS
    from patcc.backends.target import target_tags
    from patcc.compiler import EMIT_KINDS

    p = sub.add_parser("compile", help="compile an ONNX model into a shared object (or, "
                                       "for an OpenCL target, a package directory)")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--target", default="x86_64", metavar="TAG",
                   help=f"target tag: {', '.join(target_tags())}, or aarch64-androidNN for "
                        "Android API level NN (default: x86_64, this CPU)")
    p.add_argument("--cpu", metavar="NAME",
                   help="CPU to generate code for instead of the tag's, e.g. cortex-a55")
    p.add_argument("--features", metavar="LIST",
                   help="CPU features instead of the tag's, e.g. +neon,+dotprod")
    p.add_argument("--emit", default=None, choices=(*EMIT_KINDS, *OPENCL_EMIT_KINDS),
                   help="what to write (default: so; opencl, a package directory, for "
                        "an OpenCL target)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="OpenCL targets: fp16 stores and computes in half precision "
                        "(devices with cl_khr_fp16); default fp32")
    p.add_argument("--report", action="store_true",
                   help="print per-layer kernels, blocks, storage, loads/FMA and, for this "
                        "machine's target, measured times")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                   help="time each layer's candidate schedules on this machine and keep the "
                        "fastest, cached in the user cache directory (default: on for this "
                        "machine's target unless PATCC_TUNE=0; other targets use the cost "
                        "model)")
    p.add_argument("--fuse-blocks", action="store_true",
                   help="CPU targets: run each large inverted-residual block (1x1, depthwise, "
                        "1x1) as one computation over bands of rows; off by default (slower "
                        "on the CPUs measured so far, see the README)")
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("inspect", help="per-layer shapes, MACs, patterns and compression")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--ir", action="store_true", help="also print the imported IR")
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.set_defaults(func=_cmd_inspect)

    from patcc.prune_command import add_parser as add_prune_parser

    add_prune_parser(sub)

    p = sub.add_parser("run", help="run a model on .npy inputs, write the outputs as .npz")
    p.add_argument("artifact", metavar="ARTIFACT",
                   help="a compiled .so, an OpenCL package directory, or an .onnx model "
                        "(run by the reference interpreter)")
    p.add_argument("-i", "--input", action="append", required=True, metavar="[NAME=]FILE.npy",
                   help="an input array; NAME= selects the input (repeatable)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for a compiled model (default: one per core)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``patcc`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        command = e.where.removeprefix(parser.prog).strip()
        where = f"{command}: " if command else ""
        print(f"patcc: error: {where}{e} (see {e.where} --help)", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return int(args.func(args))
    except PatccError as e:
        if args.debug:
            traceback.print_exc()
        print(f"patcc: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug in patcc: say so instead of dumping a traceback
        if args.debug:
            traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"patcc: internal error: {type(e).__name__}: {first} "
              "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
