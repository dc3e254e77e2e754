"""The pruned benchmark and demo models, by architecture name and variant."""

from __future__ import annotations

import re

from torch import nn

from patcc.frontends.pruning import magnitude_prune, pattern_prune
from patcc.models.registry import REFERENCE_ARCHITECTURES

# The variants the benchmarks and the demo use; others of the same forms also work.
BENCHMARK_VARIANTS: tuple[tuple[str, str], ...] = (
    ("resnet18", "dense"),
    ("resnet18", "6x"),
    ("vgg16", "8x"),
    ("mobilenet_v2", "dw-patterns+pw50"),
    ("yolo_tiny", "6x"),
    ("unet_small", "6x"),
)

_RATE = re.compile(r"(\d+(?:\.\d+)?)x")
_DEPTHWISE_POINTWISE = re.compile(r"dw-patterns\+pw(\d{1,3})")


def pruned_model(name: str, variant: str) -> nn.Module:
    """Build a reference architecture and prune it deterministically.

    Variants:
        ``"dense"``: unpruned.
        ``"<rate>x"`` (e.g. ``"6x"``, ``"8x"``, ``"2.25x"``): :func:`pattern_prune` of
        every 3x3 convolution at that compression rate.
        ``"dw-patterns+pw<percent>"`` (e.g. ``"dw-patterns+pw50"``): patterns on the
        depthwise 3x3 convolutions only, then ``percent`` % of each 1x1 convolution's
        weights removed by magnitude.

    Args:
        name: a key of ``REFERENCE_ARCHITECTURES``, e.g. ``"resnet18"``.
        variant: one of the forms above.

    Returns:
        the model in eval mode.

    Raises:
        KeyError: if ``name`` is not a registered architecture.
        ValueError: if ``variant`` has none of the forms above.
        PruningError: if the pruning arguments are out of range for this model.
    """
    if name not in REFERENCE_ARCHITECTURES:
        raise KeyError(
            f"pruned_model: unknown architecture {name!r}; "
            f"known: {', '.join(sorted(REFERENCE_ARCHITECTURES))}"
        )
    rate_match = _RATE.fullmatch(variant)
    dw_match = _DEPTHWISE_POINTWISE.fullmatch(variant)
    if variant != "dense" and rate_match is None and dw_match is None:
        raise ValueError(
            f"pruned_model: unknown variant {variant!r} for {name!r}; expected 'dense', "
            "'<rate>x' (e.g. '6x') or 'dw-patterns+pw<percent>' (e.g. 'dw-patterns+pw50')"
        )
    model = REFERENCE_ARCHITECTURES[name]()
    if rate_match is not None:
        pattern_prune(model, rate=float(rate_match.group(1)))
    elif dw_match is not None:
        pattern_prune(model, only_depthwise=True)
        magnitude_prune(model, int(dw_match.group(1)) / 100, kernel_size=(1, 1))
    return model.eval()
