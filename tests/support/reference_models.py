"""Which reference architectures, in which variants, a test runs: the subset that
keeps ``make test`` within its time, or everything under ``make test-full``."""

from __future__ import annotations

import itertools
import os

import pytest

PRUNED_VARIANT = {
    "resnet18": "6x",
    "resnet50": "6x",
    "vgg16": "8x",
    "mobilenet_v2": "dw-patterns+pw50",
    "lraspp_mobilenet_v3": "dw-patterns+pw50",
}
"""The pruned variant tested for each architecture (the others use "6x"): patterns on
the depthwise convolutions and half of each 1x1 for the MobileNets."""

SLOW_ARCHITECTURES = ("resnet50", "vgg16")

FULL_MATRIX = os.environ.get("PATCC_FULL_MATRIX") == "1"
"""``make test-full``: every architecture in every variant on every backend and target.
``make test`` keeps to 15 minutes on 2 cores with the subsets each test file states
(each kernel family and each new operator still runs on every backend)."""


def reference_params(*more: tuple[str, ...], packed: bool = False) -> list[object]:
    """pytest params ``(name, variant, *one of each of more)`` over every reference
    architecture, dense and its pruned variant; resnet50 and vgg16 are marked slow and,
    unless ``FULL_MATRIX``, run pruned only (their dense layers are ResNet-18's; each
    costs 10-25 s a build).
    ``packed``: each param is one tuple (for a parametrized fixture)."""
    from patcc.models import REFERENCE_ARCHITECTURES

    params = []
    for name in REFERENCE_ARCHITECTURES:
        marks = [pytest.mark.slow] if name in SLOW_ARCHITECTURES else []
        variants = ("dense",) * (FULL_MATRIX or name not in SLOW_ARCHITECTURES) + (
            PRUNED_VARIANT.get(name, "6x"),)
        for variant in variants:
            for extra in itertools.product(*more):
                values = (name, variant, *extra)
                params.append(pytest.param(*((values,) if packed else values), marks=marks,
                                           id="-".join(values)))
    return params
