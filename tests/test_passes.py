"""Frontend passes: before/expected pairs, and verify() after each."""

from __future__ import annotations

import dataclasses

import numpy as np

from patcc.ir import (
    Activation,
    Binary,
    Conv,
    Graph,
    Pool,
    ScaleShift,
    Sparsity,
    TensorType,
    Unary,
    verify,
)
from patcc.ir.patterns import codes_to_masks
from patcc.passes import (
    detect_patterns,
    eliminate_dead_layers,
    fold_batchnorm,
    fuse_activations,
    fuse_residual_add,
    fuse_silu,
)

RNG = np.random.default_rng(7)
X = {"x": TensorType((1, 3, 6, 6))}


def conv(name: str, x: str, y: str, weight: np.ndarray | None = None, **kw) -> Conv:
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32) if weight is None else weight
    return Conv(name=name, inputs=(x,), outputs=(y,), weight=w,
                bias=np.arange(w.shape[0], dtype=np.float32), pads=(1, 1, 1, 1), **kw)


def relu(name: str, x: str, y: str) -> Unary:
    return Unary(name=name, inputs=(x,), outputs=(y,), activation=Activation("relu"))


def test_fold_batchnorm_scales_filters_and_takes_the_output_name() -> None:
    c = conv("c", "x", "a")
    scale = np.array([1, 2, 3, 4], np.float32)
    shift = np.array([0.5, 0, -1, 2], np.float32)
    before = Graph(X, (c, ScaleShift(name="bn", inputs=("a",), outputs=("y",),
                                     scale=scale, shift=shift)), ("y",))
    expected = Graph(X, (dataclasses.replace(
        c, outputs=("y",), weight=c.weight * scale[:, None, None, None],
        bias=c.bias * scale + shift),), ("y",))
    assert verify(fold_batchnorm(before)) == expected


def test_fold_batchnorm_leaves_a_shared_conv_output_alone() -> None:
    c = conv("c", "x", "a")
    bn = ScaleShift(name="bn", inputs=("a",), outputs=("b",),
                    scale=np.ones(4, np.float32), shift=np.ones(4, np.float32))
    add = Binary(name="add", inputs=("a", "b"), outputs=("y",), binop="add")
    before = Graph(X, (c, bn, add), ("y",))
    assert fold_batchnorm(before) is before


def test_fuse_activation_into_conv_but_not_across_a_graph_output() -> None:
    c = conv("c", "x", "a")
    before = Graph(X, (c, relu("r", "a", "y")), ("y",))
    expected = Graph(X, (dataclasses.replace(c, outputs=("y",),
                                             activation=Activation("relu")),), ("y",))
    assert verify(fuse_activations(before)) == expected
    keeps_a = before.replace(outputs=("y", "a"))
    assert fuse_activations(keeps_a) is keeps_a


def test_fuse_activation_into_residual_add() -> None:
    c1, c2 = conv("c1", "x", "a"), conv("c2", "x", "b")
    add = Binary(name="add", inputs=("a", "b"), outputs=("s",), binop="add")
    before = Graph(X, (c1, c2, add, relu("r", "s", "y")), ("y",))
    after = fuse_activations(before)
    assert [layer.name for layer in after.layers] == ["c1", "c2", "add"]
    assert after.layers[2] == dataclasses.replace(add, outputs=("y",),
                                                  activation=Activation("relu"))


def test_fuse_silu_then_into_conv() -> None:
    c = conv("c", "x", "a")
    sig = Unary(name="s", inputs=("a",), outputs=("g",), activation=Activation("sigmoid"))
    mul = Binary(name="m", inputs=("g", "a"), outputs=("y",), binop="mul")
    before = Graph(X, (c, sig, mul), ("y",))
    silu = fuse_silu(before)
    assert silu.layers[1] == Unary(name="m", inputs=("a",), outputs=("y",),
                                   activation=Activation("silu"))
    fused = verify(fuse_activations(silu))
    assert fused == Graph(X, (dataclasses.replace(c, outputs=("y",),
                                                  activation=Activation("silu")),), ("y",))


def test_fuse_silu_needs_the_same_tensor_on_both_sides() -> None:
    c1, c2 = conv("c1", "x", "a"), conv("c2", "x", "b")
    sig = Unary(name="s", inputs=("a",), outputs=("g",), activation=Activation("sigmoid"))
    mul = Binary(name="m", inputs=("g", "b"), outputs=("y",), binop="mul")
    before = Graph(X, (c1, c2, sig, mul), ("y",))
    assert fuse_silu(before) is before


def test_eliminate_dead_layers() -> None:
    live = conv("live", "x", "y")
    dead = Pool(name="dead", inputs=("x",), outputs=("z",), kind="max", kernel=(2, 2))
    before = Graph(X, (dead, live), ("y",), constants={"unused": np.ones(3, np.float32)})
    assert eliminate_dead_layers(before) == Graph(X, (live,), ("y",))
    assert eliminate_dead_layers(Graph(X, (live,), ("y",))).layers == (live,)


PLUS = 0b010111010
TEE = 0b000111010
CORNER = 0b000011011


def _masked(codes: np.ndarray) -> np.ndarray:
    """Random weights whose kernels have the given 9-bit masks (0 = removed)."""
    w = RNG.standard_normal((*codes.shape, 3, 3)).astype(np.float32)
    return (w * codes_to_masks(codes)).astype(np.float32)


def test_detect_patterns_builds_a_frequency_ordered_library() -> None:
    a = np.array([[PLUS, TEE, 0], [PLUS, 0, CORNER], [PLUS, TEE, TEE], [0, 0, PLUS]])
    b = np.array([[TEE, TEE, TEE, 0], [0, CORNER, 0, 0], [TEE, 0, 0, 0], [TEE, TEE, 0, 0]])
    before = Graph(X, (conv("a", "x", "h", weight=_masked(a)),
                       conv("b", "h", "y", weight=_masked(b))), ("y",))
    after = verify(detect_patterns(before))
    ca, cb = after.layers
    assert ca.sparsity is Sparsity.PATTERN and cb.sparsity is Sparsity.PATTERN
    assert ca.pattern is not None and cb.pattern is not None
    # TEE is used 9 times, PLUS 4, CORNER 2
    expected_library = codes_to_masks(np.array([TEE, PLUS, CORNER]))
    assert (ca.pattern.library.masks == expected_library).all()
    assert ca.pattern.library == cb.pattern.library
    assert ca.pattern.kernel_pattern.tolist() == [[1, 0, -1], [1, -1, 2], [1, 0, 0], [-1, -1, 1]]
    assert ca.pattern.kernels_kept == 8


def test_dense_and_unstructured_convs() -> None:
    dense = conv("d", "x", "a")
    w1 = RNG.standard_normal((4, 4, 1, 1)).astype(np.float32)
    w1[0, 0] = 0
    one = Conv(name="u", inputs=("a",), outputs=("y",), weight=w1, bias=np.zeros(4, np.float32))
    after = detect_patterns(Graph(X, (dense, one), ("y",)))
    assert [c.sparsity for c in after.layers] == [Sparsity.DENSE, Sparsity.UNSTRUCTURED]
    assert after.pattern_library is None


def test_connectivity_only_pruning_is_a_full_mask_pattern() -> None:
    w = _masked(np.array([[511, 0, 511]] * 4))
    after = verify(detect_patterns(Graph(X, (conv("c", "x", "y", weight=w),), ("y",))))
    (c,) = after.layers
    assert c.pattern is not None and len(c.pattern.library) == 1
    assert c.pattern.library.masks[0].all() and c.pattern.kernels_kept == 8


def test_too_many_masks_make_the_rarest_layers_unstructured() -> None:
    common = np.array([[PLUS, TEE, PLUS]] * 4)  # PLUS 8 times, TEE 4 times
    many = np.arange(1, 17).reshape(4, 4)  # 16 distinct masks, once each
    before = Graph(X, (conv("common", "x", "a", weight=_masked(common)),
                       conv("many", "a", "y", weight=_masked(many))), ("y",))
    after = verify(detect_patterns(before, max_library=8))
    assert after.layers[0].sparsity is Sparsity.PATTERN
    assert after.layers[1].sparsity is Sparsity.UNSTRUCTURED
    assert after.pattern_library is not None and len(after.pattern_library) == 2


def test_incidental_zeros_do_not_make_patterns() -> None:
    dense = RNG.standard_normal((16, 16, 3, 3)).astype(np.float32)
    dense[3, 5, 0, 2] = 0.0  # one exactly-zero weight in 256 kernels
    codes = np.full((16, 16), PLUS)
    codes[::2, 1::2] = TEE
    pattern = _masked(codes)
    pattern[0, 0, 1, 1] = 0.0  # a zero inside a kept PLUS kernel
    x = {"x": TensorType((1, 16, 6, 6))}
    before = Graph(x, (conv("d", "x", "a", weight=dense),
                       conv("p", "a", "y", weight=pattern)), ("y",))
    after = verify(detect_patterns(before))
    assert after.layers[0].sparsity is Sparsity.UNSTRUCTURED  # not pattern style
    p = after.layers[1].pattern
    assert p is not None and len(p.library) == 2  # PLUS and TEE only
    assert p.kernel_pattern[0, 0] == int(np.flatnonzero(
        (p.library.masks == codes_to_masks(np.array(PLUS))).all(axis=(1, 2)))[0])


def test_fuse_residual_add_into_the_later_conv() -> None:
    c1 = conv("c1", "x", "a")
    c2 = conv("c2", "x", "b")
    add = Binary(name="add", inputs=("a", "b"), outputs=("s",), binop="add",
                 activation=Activation("relu"))
    before = Graph(X, (c1, c2, add), ("s",))
    after = verify(fuse_residual_add(before))
    # c2 runs after c1 has produced its output, so c2 takes the add; c1 cannot (b is
    # produced after it)
    assert after.layers == (c1, dataclasses.replace(c2, inputs=("x", "a"), outputs=("s",),
                                                    activation=Activation("relu")))


def test_fuse_residual_add_respects_activations_and_readers() -> None:
    c1 = conv("c1", "x", "a", activation=Activation("relu"))
    c2 = conv("c2", "x", "b")
    add = Binary(name="add", inputs=("b", "a"), outputs=("s",), binop="add")
    reads_b = Unary(name="u", inputs=("b",), outputs=("t",), activation=Activation("tanh"))
    before = Graph(X, (c1, c2, add, reads_b), ("s", "t"))
    assert fuse_residual_add(before) is before  # c2's output has another reader
    shared = Graph(X, (c1, c2, add), ("s",))
    fused = verify(fuse_residual_add(shared))
    assert [layer.name for layer in fused.layers] == ["c1", "c2"]
    assert fused.layers[1].inputs == ("x", "a")
