"""``patcc prune``: prune an ONNX model and write a new one (the pruning algorithms
themselves are ``patcc.pruning``, in ``patcc/frontends/pruning/``).

``--method admm`` (data-free ADMM) and ``--method project`` (projection only) keep
the model's structure and write the pruned weights into its initializers, pruned
weights as zeros (patcc detects the pattern style when it compiles the result), with
the pattern library in the model's metadata (``patcc.pattern_library``: one
9-character row-major mask per pattern). ``--method fpgm|l1|l2`` prunes ``--ratio``
of the filters and removes them physically; the compact model is exported afresh
(input ``input``, output ``output``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import onnx

from patcc.errors import PruningError

PATTERN_METHODS = ("admm", "project")
FILTER_METHODS = ("fpgm", "l1", "l2")


@dataclass(frozen=True)
class PruneOptions:
    method: str
    patterns: int = 8
    rate: float = 6.0
    ratio: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    progress: bool = False
    recipe: str = "patcc"  # or "published": AdmmConfig.published()


def check_options(options: PruneOptions) -> None:
    """Raise ``PruningError`` for options no pruning can honour, before any work.

    A ``--rate`` below 2.25 is impossible (a pattern keeps 4 of a 3x3 kernel's 9
    weights, so patterns alone compress 2.25x) and is refused rather than taken as
    2.25. ``--epochs``/``--batch-size`` of 0 or less are refused rather than taken
    as the defaults: ADMM needs at least one epoch and one input (pruning without
    ADMM is ``--method project``).
    """
    from patcc.frontends.pruning import PATTERN_ONLY_RATE, AdmmConfig

    if options.method not in PATTERN_METHODS + FILTER_METHODS:
        raise PruningError(f"unknown --method {options.method!r}; expected one of "
                           f"{', '.join(PATTERN_METHODS + FILTER_METHODS)}")
    if options.method in PATTERN_METHODS:
        if not (math.isfinite(options.rate) and options.rate >= PATTERN_ONLY_RATE):
            raise PruningError(f"--rate {options.rate:g} is impossible: a pattern keeps 4 of a "
                               "3x3 kernel's 9 weights, so the compression is "
                               f"{PATTERN_ONLY_RATE:g} (patterns alone) or more, e.g. --rate 6")
        if not 1 <= options.patterns <= 56:
            raise PruningError(f"--patterns {options.patterns}: a pattern library holds 1 to 56 "
                               "patterns (each keeps the centre and 3 of the 8 other weights), "
                               "e.g. --patterns 8")
    defaults = AdmmConfig()
    if options.epochs is not None and options.epochs < 1:
        raise PruningError(f"--epochs {options.epochs}: ADMM runs 1 epoch or more (default "
                           f"{defaults.epochs}); to prune without ADMM, use --method project")
    if options.batch_size is not None and options.batch_size < 1:
        raise PruningError(f"--batch-size {options.batch_size}: must be 1 or more (default "
                           f"{defaults.batch_size})")


def prune_onnx(path: str, options: PruneOptions) -> tuple[onnx.ModelProto, list[dict[str, Any]],
                                                          list[str]]:
    """Prune the model at ``path``: (the new model, one summary row per pruned layer,
    warnings about layers left alone). Raises ``PatccError`` for a file patcc cannot
    import, ``PruningError`` for a model or options it cannot prune (options first, see
    ``check_options``); an error that names no place names the file."""
    from patcc.frontends.pruning.onnx_bridge import import_for_pruning

    check_options(options)
    proto, model = import_for_pruning(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if options.method in PATTERN_METHODS:
                result, rows = _pattern(proto, model, options)
            else:
                result, rows = _filters(model, options)
        except PruningError as e:
            if e.where is not None:
                raise
            raise PruningError(e.message, path) from e
    return result, rows, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _pattern(proto: onnx.ModelProto, model: Any, options: PruneOptions
             ) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    from patcc.frontends.pruning import (
        AdmmConfig,
        admm_prune,
        keep_fraction,
        pattern_prune,
        reconstruction_errors,
    )
    from patcc.frontends.pruning.onnx_bridge import write_back

    keep_fraction(options.rate)  # a bad rate fails before any work
    if not any(tuple(model.module.get_submodule(ident).kernel_size) == (3, 3)
               for ident in model.convs):
        raise PruningError("the model has no 3x3 convolution to pattern-prune")
    original = copy.deepcopy(model.module)
    if options.method == "admm":
        recipe = AdmmConfig.published() if options.recipe == "published" else AdmmConfig()
        config = dataclasses.replace(
            recipe, seed=options.seed,
            epochs=recipe.epochs if options.epochs is None else options.epochs,
            batch_size=recipe.batch_size if options.batch_size is None else options.batch_size)
        report = admm_prune(model.module, model.input_shape, options.rate, options.patterns,
                            config, progress=options.progress)
    else:
        config = AdmmConfig(seed=options.seed)
        report = pattern_prune(model.module, options.rate, options.patterns)
    errors = reconstruction_errors(model.module, original, model.input_shape,
                                   [layer.name for layer in report.layers], seed=options.seed + 1,
                                   config=config)
    library = ["".join("1" if v else "0" for v in mask.reshape(-1)) for mask in report.library]
    metadata = {"patcc.pattern_library": json.dumps(library),
                "patcc.pruning": json.dumps({"method": options.method, "rate": options.rate,
                                             "patterns": len(library),
                                             "achieved_rate": round(report.rate, 4)})}
    rows = [{"layer": model.convs[layer.name].name, "kernels": layer.total_kernels,
             "kept": layer.kept_kernels,
             "compression": round(9 * layer.total_kernels / max(1, 4 * layer.kept_kernels), 2),
             "error": round(errors[layer.name], 4)}
            for layer in report.layers]
    return write_back(proto, model, metadata), rows


def _filters(model: Any, options: PruneOptions) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    import tempfile
    from pathlib import Path

    from patcc.frontends.pruning import plan_filter_removal
    from patcc.models.export import export_onnx

    if options.ratio is None:
        raise PruningError(f"--method {options.method} needs --ratio (e.g. --ratio 0.3)")
    module = model.module
    plan = plan_filter_removal(module, model.input_shape, options.ratio, options.method)
    compact = plan.compact(module).eval()
    with tempfile.TemporaryDirectory(prefix="patcc-prune-") as tmp:
        export_onnx(compact, Path(tmp) / "compact.onnx", model.input_shape)
        result = onnx.load(Path(tmp) / "compact.onnx")
    entry = result.metadata_props.add()
    entry.key = "patcc.pruning"
    entry.value = json.dumps({"method": options.method, "ratio": options.ratio})
    rows = []
    for ident, conv in model.convs.items():
        before = module.get_submodule(ident).out_channels
        after = compact.get_submodule(ident).out_channels
        rows.append({"layer": conv.name, "filters": before, "kept": after,
                     "compression": round(before / after, 2)})
    return result, rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The summary table ``patcc prune`` prints: the rows' keys as columns."""
    if not rows:
        return ""
    keys = list(rows[0])
    table = [keys] + [[str(r[k]) for k in keys] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in table)


def run(args: Any) -> int:
    """The ``patcc prune`` subcommand."""
    from patcc.fileio import atomic_write, check_output

    check_output(args.output, [args.model], "pruned.onnx")
    options = PruneOptions(args.method, args.patterns, args.rate, args.ratio, args.epochs,
                           args.batch_size, args.seed,
                           progress=not args.quiet and sys.stderr.isatty(),
                           recipe=args.recipe)
    result, rows, notes = prune_onnx(args.model, options)
    data = result.SerializeToString()
    atomic_write(args.output, lambda f: f.write(data))
    for note in notes:
        print(f"patcc: warning: {note}", file=sys.stderr)
    if not args.quiet:
        print(format_rows(rows))
        print(f"{args.output}: {options.method}")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``patcc prune`` on the CLI's subparsers."""
    p = sub.add_parser("prune", help="prune an ONNX model: patterns and connectivity, or "
                                     "filters")
    p.add_argument("model", metavar="IN.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    p.add_argument("--method", required=True, choices=PATTERN_METHODS + FILTER_METHODS,
                   help="admm: data-free ADMM on synthetic inputs; project: projection "
                        "only; fpgm, l1, l2: filter pruning, physically removed")
    p.add_argument("--patterns", type=int, default=8,
                   help="pattern library size, 1 to 56 (default 8)")
    p.add_argument("--rate", type=float, default=6.0,
                   help="3x3 conv compression for admm/project, 2.25 (patterns alone) or "
                        "more; each layer keeps at least one kernel (default 6)")
    p.add_argument("--ratio", type=float, help="fraction of filters to remove (fpgm, l1, l2)")
    p.add_argument("--epochs", type=int,
                   help="ADMM epochs per layer, 1 or more (default 44; no ADMM at all is "
                        "--method project)")
    p.add_argument("--batch-size", type=int,
                   help="synthetic batch size, 1 or more (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    p.add_argument("--recipe", choices=("patcc", "published"), default="patcc",
                   help="admm: patcc's (inputs matched to the batch-norm statistics, "
                        "lr 1e-2, masked refit; default) or the published recipe")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


__all__ = ["PruneOptions", "add_parser", "format_rows", "prune_onnx"]
