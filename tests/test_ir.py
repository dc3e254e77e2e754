"""The IR: shapes, printing, structural equality and verify()."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from patcc.ir import (
    Activation,
    Binary,
    Conv,
    Dense,
    Graph,
    IRError,
    PatternLibrary,
    PatternStyle,
    Pool,
    Reshape,
    Sparsity,
    TensorType,
    verify,
)
from patcc.ir.patterns import codes_to_masks, masks_to_codes


def conv(name: str, x: str, y: str, o: int = 4, i: int = 3, k: int = 3, **kw) -> Conv:
    rng = np.random.default_rng(0)
    return Conv(name=name, inputs=(x,), outputs=(y,),
                weight=rng.standard_normal((o, i, k, k)).astype(np.float32),
                bias=np.zeros(o, np.float32), **kw)


def small_graph() -> Graph:
    return Graph(
        inputs={"x": TensorType((1, 3, 9, 9))},
        layers=(
            conv("c1", "x", "a", pads=(1, 1, 1, 1), activation=Activation("relu")),
            Pool(name="p", inputs=("a",), outputs=("b",), kind="max", kernel=(2, 2),
                 strides=(2, 2), ceil_mode=True),
            Reshape(name="r", inputs=("b",), outputs=("f",), shape=(1, 100)),
            Dense(name="fc", inputs=("f",), outputs=("y",),
                  weight=np.ones((10, 100), np.float32), bias=np.zeros(10, np.float32)),
        ),
        outputs=("y",),
    )


def test_shapes_follow_from_inputs_and_layers() -> None:
    g = small_graph()
    assert g.shapes["a"] == (1, 4, 9, 9)
    assert g.shapes["b"] == (1, 4, 5, 5)  # ceil mode: (9 - 2) / 2 rounded up, + 1
    assert g.shapes["y"] == (1, 10)


def test_ceil_mode_never_starts_a_window_in_the_right_padding() -> None:
    p = Pool(name="p", inputs=("x",), outputs=("y",), kind="max", kernel=(2, 2),
             strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True)
    # ceil((5 + 2 - 2) / 2) + 1 = 4 windows, but the 4th would start at 6: right padding
    assert p.infer_shapes([(1, 1, 5, 5)]) == ((1, 1, 3, 3),)
    assert p.infer_shapes([(1, 1, 6, 6)]) == ((1, 1, 4, 4),)


def test_str_prints_one_line_per_layer() -> None:
    text = str(small_graph())
    lines = text.splitlines()
    assert len(lines) == 4 + 3
    assert "Conv(%x) -> 1x4x9x9" in lines[1] and "+relu" in lines[1]
    assert "ceil" in lines[2]


def test_structural_equality_compares_arrays_by_value() -> None:
    a, b = small_graph(), small_graph()
    assert a == b
    w = a.layers[3].weight.copy()
    w[0, 0] = 2
    c = a.replace(layers=(*a.layers[:3], dataclasses.replace(a.layers[3], weight=w)))
    assert a != c


def test_verify_rejects_broken_graphs() -> None:
    g = small_graph()
    verify(g)
    with pytest.raises(IRError, match="undefined tensor 'nope'"):
        verify(g.replace(layers=(conv("c1", "nope", "a"),)))
    with pytest.raises(IRError, match="used twice"):
        verify(g.replace(layers=(conv("c", "x", "a", pads=(1, 1, 1, 1)),
                                 conv("c", "a", "b", i=4))))
    with pytest.raises(IRError, match="input has 3 channels but weight"):
        verify(g.replace(layers=(conv("c1", "x", "a", i=5),), outputs=("a",)))
    with pytest.raises(IRError, match="never produced"):
        verify(g.replace(outputs=("zzz",)))
    nan = small_graph().layers[0].weight.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(IRError, match="NaN"):
        verify(g.replace(layers=(dataclasses.replace(g.layers[0], weight=nan), *g.layers[1:])))
    with pytest.raises(IRError, match="do not broadcast"):
        verify(Graph(inputs={"x": TensorType((2, 3)), "z": TensorType((4,))},
                     layers=(Binary(name="b", inputs=("x", "z"), outputs=("y",), binop="add"),),
                     outputs=("y",)))


def _pattern_conv() -> Conv:
    masks = codes_to_masks(np.array([0b010111010, 0b000111010]))  # plus, and a T
    ids = np.array([[0, -1, 1], [1, 1, -1]], dtype=np.int8)
    w = np.random.default_rng(1).standard_normal((2, 3, 3, 3)).astype(np.float32)
    style = PatternStyle(PatternLibrary(masks), ids)
    return Conv(name="pc", inputs=("x",), outputs=("y",), weight=w * style.dense_mask(),
                bias=np.zeros(2, np.float32), sparsity=Sparsity.PATTERN, pattern=style)


def test_pattern_style_derived_counts() -> None:
    c = _pattern_conv()
    assert c.pattern is not None
    assert c.pattern.kernels_kept == 4 and c.pattern.kernels_total == 6
    assert c.pattern.nonzero_weights == 5 + 4 + 4 + 4
    assert c.nonzero_weights == c.pattern.nonzero_weights
    assert c.pattern.patterns_used == (0, 1)


def test_verify_checks_pattern_style_against_weights() -> None:
    c = _pattern_conv()
    g = Graph(inputs={"x": TensorType((1, 3, 5, 5))}, layers=(c,), outputs=("y",))
    verify(g)
    w = c.weight.copy()
    w[0, 1, 1, 1] = 1.0  # kernel (0, 1) is removed
    with pytest.raises(IRError, match=r"weight \[0,1,1,1\] is non-zero outside"):
        verify(g.replace(layers=(dataclasses.replace(c, weight=w),)))
    assert c.pattern is not None
    bad_ids = c.pattern.kernel_pattern.copy()
    bad_ids[0, 0] = 7
    with pytest.raises(IRError, match="out of range"):
        verify(g.replace(layers=(dataclasses.replace(
            c, pattern=PatternStyle(c.pattern.library, bad_ids)),)))
    with pytest.raises(IRError, match="sparsity dense"):
        verify(g.replace(layers=(dataclasses.replace(c, sparsity=Sparsity.DENSE),)))


def test_mask_codes_round_trip() -> None:
    codes = np.arange(512)
    assert (masks_to_codes(codes_to_masks(codes)) == codes).all()
    assert codes_to_masks(np.array(1))[0, 0] and codes_to_masks(np.array(1)).sum() == 1


def test_pool_window_of_padding_alone_is_rejected() -> None:
    p = Pool(name="p", inputs=("x",), outputs=("y",), kind="max", kernel=(2, 2),
             dilations=(3, 3), pads=(1, 1, 1, 1))
    # window 0 reads rows -1 and 2 of a 2-row input: padding only
    with pytest.raises(IRError, match="output 0 on axis 2 reads only padding"):
        p.infer_shapes([(1, 1, 2, 2)])
    assert p.infer_shapes([(1, 1, 3, 3)]) == ((1, 1, 2, 2),)


def test_ir_arrays_are_read_only_and_the_callers_stay_writable() -> None:
    """A node's arrays are read-only views from construction on (a pass cannot write
    into a weight another graph shares), the caller's own arrays stay writable, and
    a graph's constants refuse changes yet pickle (the tuner ships graphs to workers)."""
    import pickle

    weight = np.ones((2, 1, 3, 3), np.float32)
    conv = Conv(name="c", inputs=("x",), outputs=("y",), weight=weight,
                bias=np.zeros(2, np.float32), groups=1)
    with pytest.raises(ValueError, match="read-only"):
        conv.weight[0, 0, 0, 0] = 5.0
    weight[0, 0, 0, 0] = 5.0  # the caller's array is not frozen ...
    assert conv.weight[0, 0, 0, 0] == 5.0  # ... and the node sees it (a view, no copy)
    graph = Graph(inputs={"x": TensorType((1, 1, 4, 4))}, layers=(conv,), outputs=("y",),
                  constants={"k": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="read-only"):
        graph.constants["k"][0] = 2.0
    with pytest.raises(TypeError, match="read-only"):
        graph.constants["j"] = np.zeros(1, np.float32)  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):  # an empty mapping too
        graph.replace(constants={}).constants["j"] = np.zeros(1, np.float32)  # type: ignore[index]
    again = pickle.loads(pickle.dumps(graph))
    assert again == graph and not again.constants["k"].flags.writeable
