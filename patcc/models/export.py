"""Export a torch module to an ONNX file with the legacy TorchScript exporter."""

from __future__ import annotations

import contextlib
import io
import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


def export_onnx(
    module: nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...],
    opset: int = 17,
    fold_batchnorm: bool = True,
    output_names: Sequence[str] = ("output",),
) -> None:
    """Export ``module`` in eval mode to ``path``, atomically.

    Uses the TorchScript exporter (``dynamo=False``), about 20x faster here than the
    dynamo one, with its deprecation chatter silenced. The graph has one input named
    ``input`` of static shape ``input_shape``, and outputs named ``output_names``
    (one, ``output``, by default). The file is written next to ``path`` under a
    temporary name and renamed into place, so a reader never sees a half-written model.
    The module's train/eval mode is restored.

    In eval mode the exporter itself folds each BatchNorm that follows a Conv into the
    Conv's weights; ``fold_batchnorm=False`` keeps them as ``BatchNormalization``
    nodes (inference form), so that patcc's own folding has something to do.

    Args:
        module: the model to export.
        path: destination ``.onnx`` file; its directory must exist.
        input_shape: static NCHW input shape, e.g. ``(1, 3, 224, 224)``.
        opset: ONNX opset version.
        fold_batchnorm: let the exporter fold Conv+BatchNorm pairs.
        output_names: a name for each output the module returns, in order (the
            exporter numbers any beyond them).

    Raises:
        ValueError: if ``input_shape`` has a non-positive dimension.
        FileNotFoundError: if the destination directory does not exist.
        RuntimeError: whatever the exporter raises for an unexportable module.
    """
    if not input_shape or any(int(d) <= 0 for d in input_shape):
        raise ValueError(
            f"export_onnx: input_shape must be positive dimensions, got {input_shape!r}"
            " (e.g. (1, 3, 224, 224))"
        )
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"export_onnx: directory {str(path.parent)!r} does not exist")
    example = torch.zeros(tuple(int(d) for d in input_shape))
    was_training = module.training
    # Not mkstemp: its 0600 mode would survive the rename; the exporter creates the file
    # with the usual umask-governed mode.
    tmp_name = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        module.eval()
        # The legacy exporter warns (DeprecationWarning, TracerWarning) and prints
        # diagnostics; none of it is actionable for these fixed-shape models.
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                tmp_name,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=list(output_names),
                # PRESERVE exports the module in its current (eval) mode but skips the
                # eval-only peephole pass that fuses Conv+BatchNorm.
                training=(
                    torch.onnx.TrainingMode.EVAL
                    if fold_batchnorm
                    else torch.onnx.TrainingMode.PRESERVE
                ),
            )
        os.replace(tmp_name, path)
    finally:
        module.train(was_training)
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_name)
