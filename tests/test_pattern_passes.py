"""Filter-kernel reorder and compressed weight storage: before/expected and verify()."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from patcc.cli import main
from patcc.ir import (
    Conv,
    Graph,
    IRError,
    PatternLibrary,
    PatternStyle,
    Sparsity,
    TensorType,
    verify,
)
from patcc.ir.patterns import codes_to_masks
from patcc.ir.storage import csr_bytes
from patcc.passes import compress_weights, reorder_filters
from patcc.passes.compress import compress_conv

PLUS, TEE = 0b010111010, 0b000111010


def pattern_conv(ids: np.ndarray, seed: int = 0, groups: int = 1) -> Conv:
    library = PatternLibrary(codes_to_masks(np.array([PLUS, TEE])))
    style = PatternStyle(library, ids.astype(np.int8))
    w = np.random.default_rng(seed).standard_normal((*ids.shape, 3, 3)).astype(np.float32)
    return Conv(name="c", inputs=("x",), outputs=("y",), weight=w * style.dense_mask(),
                bias=np.zeros(ids.shape[0], np.float32), pads=(1, 1, 1, 1), groups=groups,
                sparsity=Sparsity.PATTERN, pattern=style)


def test_reorder_puts_heavier_filters_first_then_by_pattern_mix() -> None:
    ids = np.array([[0, -1, -1],   # 1 kernel
                    [1, 1, 0],     # 3 kernels: 1 PLUS, 2 TEE
                    [0, 0, 1],     # 3 kernels: 2 PLUS, 1 TEE
                    [-1, 1, -1]])  # 1 kernel
    conv = pattern_conv(ids)
    after = reorder_filters(conv)
    assert isinstance(after, Conv) and after.filter_order is not None
    assert after.filter_order.tolist() == [2, 1, 0, 3]
    assert dataclasses.replace(after, filter_order=None) == conv  # nothing else changes


def test_reorder_leaves_dense_convs_alone() -> None:
    dense = dataclasses.replace(pattern_conv(np.zeros((2, 2))), pattern=None,
                                sparsity=Sparsity.DENSE)
    assert reorder_filters(dense) is dense


def test_compressed_layout_expected_and_exact() -> None:
    ids = np.array([[1, -1, 0], [-1, -1, 1]])
    conv = pattern_conv(ids)
    packed = compress_conv(conv)
    assert packed.tap_sets == (((0, 1), (1, 0), (1, 1), (1, 2), (2, 1)),
                               ((0, 1), (1, 0), (1, 1), (1, 2)))
    assert packed.counts.tolist() == [[1, 1], [0, 1]]
    assert packed.channels.tolist() == [2, 0, 2]  # filter 0: PLUS at 2, TEE at 0; filter 1
    assert packed.kernel_start.tolist() == [0, 2] and packed.weight_start.tolist() == [0, 9]
    assert packed.weights[:5].tolist() == conv.weight[0, 2][[0, 1, 1, 1, 2],
                                                            [1, 0, 1, 2, 1]].tolist()
    assert np.array_equal(packed.decompress(conv.weight.shape, 1, conv.storage_order),
                          conv.weight)


def test_compression_follows_the_filter_order_and_grouped_channels() -> None:
    ids = np.array([[0, 1], [-1, 1], [1, 1], [0, -1]])
    conv = reorder_filters(pattern_conv(ids, groups=2))
    g = Graph({"x": TensorType((1, 4, 5, 5))}, (compress_weights(conv),), ("y",))
    (packed_conv,) = verify(g).layers
    assert isinstance(packed_conv, Conv) and packed_conv.compressed is not None
    # stored in the conv's filter order, which the compressed weights do not repeat
    assert packed_conv.filter_order.tolist() != list(range(4))
    assert np.array_equal(packed_conv.compressed.decompress(
        packed_conv.weight.shape, 2, packed_conv.storage_order), packed_conv.weight)
    # filters 2 and 3 are in group 1: their channels are 2 and 3 of the input
    assert set(packed_conv.compressed.channels.tolist()) == {0, 1, 2, 3}


def test_verify_catches_corrupt_storage() -> None:
    conv = compress_weights(reorder_filters(pattern_conv(np.array([[0, 1], [1, -1]]))))
    assert isinstance(conv, Conv) and conv.compressed is not None
    g = Graph({"x": TensorType((1, 2, 5, 5))}, (conv,), ("y",))
    verify(g)
    bad_weights = conv.compressed.weights.copy()
    bad_weights[0] += 1
    broken = dataclasses.replace(conv, compressed=dataclasses.replace(
        conv.compressed, weights=bad_weights))
    with pytest.raises(IRError, match="do not decompress"):
        verify(g.replace(layers=(broken,)))
    # a filter order changed after compression no longer matches the storage
    with pytest.raises(IRError, match="in the conv's filter order"):
        verify(g.replace(layers=(dataclasses.replace(
            conv, filter_order=conv.storage_order[::-1].copy()),)))
    with pytest.raises(IRError, match="not a permutation"):
        verify(g.replace(layers=(dataclasses.replace(
            conv, filter_order=np.array([0, 0], np.int32), compressed=None),)))


def test_compressed_is_at_most_0_6_of_csr_for_4_entry_patterns() -> None:
    rng = np.random.default_rng(3)
    ids = rng.integers(-1, 2, size=(64, 64))
    conv = pattern_conv(np.where(ids == 0, 1, ids))  # TEE (4 taps) or removed
    ratio = compress_conv(conv).nbytes / csr_bytes(conv.weight)
    assert ratio <= 0.6


def test_inspect_reports_compressed_and_csr(exported_model,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, path = exported_model("resnet18", "6x")
    assert main(["inspect", "--json", str(path)]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert 0 < totals["compressed_bytes"] <= 0.6 * totals["csr_bytes"]
