"""The PyTorch frontend: an ``nn.Module`` into the IR through ``torch.export``.

``import_module(module, example_inputs)`` exports the module in eval mode with static
shapes, then walks the ATen graph:

- every operation whose tensor operands are all constants (parameters, buffers,
  constants, or results of such operations) is evaluated once with torch: this is
  how ``torch.nn.utils.prune`` masks (``weight_orig * weight_mask``),
  ``torch.nn.utils.parametrize`` functions and any other weight arithmetic become
  the effective weights, with no clean-up by the user;
- the rest map onto IR layers (see ``_CONVERTERS``): convolution (grouped,
  depthwise, dilated, strided, ``padding="same"``), transposed convolution, batch
  norm, linear, ReLU, ReLU6 / hardtanh, hardswish, hardsigmoid, SiLU, sigmoid, tanh,
  leaky ReLU, ELU, SELU, GELU, Mish, softplus, exp, log, sqrt, neg, abs, reciprocal,
  erf, element-wise arithmetic with broadcasting (residuals, squeeze-excite), cat,
  flatten/view/reshape, transpose/permute (channel shuffle), split/chunk, mean and
  adaptive/global pooling, max/avg pooling, softmax, log_softmax, slicing, padding (constant,
  reflect, replicate), select / index_select / indexing with a constant index (a Gather),
  and dropout/identity/clone in eval mode (removed).

Then the frontend pipeline runs as for ONNX: batch norms fold into convolutions,
activations fuse, and each conv's pattern style is detected from its weights.

Errors are ``PatccError``: an unsupported operation names the ATen op, the module
(its path in the model and class) and the source line torch recorded; dynamic shapes
and modules torch cannot export are refused in one line.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from patcc.errors import PatccError
from patcc.frontends.transpose_conv import TransposedConv, lower_conv_transpose
from patcc.ir.graph import Graph, TensorType
from patcc.ir.layers import (
    Activation,
    Binary,
    Concat,
    Conv,
    Dense,
    Gather,
    GlobalPool,
    IRError,
    Layer,
    Pad,
    Pool,
    Reshape,
    Resize,
    ScaleShift,
    Slice,
    Softmax,
    Split,
    Transpose,
    Unary,
)
from patcc.passes import FRONTEND_PIPELINE, run_pipeline


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency of this path
        raise PatccError("compiling an nn.Module needs torch (pip install 'patcc[torch]')") \
            from e
    return torch


def _where(node: Any) -> str:
    """The module path and class, and the source line, torch recorded for ``node``."""
    parts = []
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        parts.append(f"module {path or '(root)'} ({cls_name.rsplit('.', 1)[-1]})")
    trace = (node.meta.get("stack_trace") or "").strip().splitlines()
    files = [line.strip() for line in trace if line.strip().startswith("File ")]
    if files:
        parts.append(files[-1].replace("File ", "", 1))
    return ", ".join(parts) or node.name


class _Importer:
    def __init__(self, exported: Any, input_names: Sequence[str]) -> None:
        self.torch = _torch()
        self.ep = exported
        self.input_names = list(input_names)
        self.layers: list[Layer] = []
        self.constants: dict[str, np.ndarray] = {}
        self.inputs: dict[str, TensorType] = {}
        self.env: dict[str, Any] = {}
        self.names: set[str] = set()

    # -- values -----------------------------------------------------------------------

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def tensor(self, value: Any, node: Any) -> str:
        """An IR tensor name for an operand: computed, or a new graph constant."""
        if isinstance(value, _Tensor):
            return value.name
        torch = self.torch
        if isinstance(value, torch.Tensor):
            array = value.detach().to(torch.float32).cpu().numpy()
        elif isinstance(value, (int, float, bool)):
            array = np.asarray(value, np.float32)
        else:
            raise PatccError(f"operand {value!r} of {node.target} is not a tensor",
                             _where(node))
        name = self.unique(f"{node.name}_const")
        self.constants[name] = np.ascontiguousarray(array, dtype=np.float32)
        return name

    def shape(self, value: Any) -> tuple[int, ...]:
        if isinstance(value, _Tensor):
            return value.shape
        return tuple(int(d) for d in value.shape)

    def array(self, value: Any, node: Any, what: str) -> np.ndarray:
        if isinstance(value, _Tensor):
            raise PatccError(f"{node.target}: the {what} must be a constant (a parameter or "
                             "buffer), not a computed tensor", _where(node))
        return np.ascontiguousarray(value.detach().to(self.torch.float32).cpu().numpy())

    def emit(self, layer: Layer, shape: tuple[int, ...]) -> _Tensor:
        self.layers.append(layer)
        return _Tensor(layer.outputs[0], shape)

    def out(self, node: Any, suffix: str = "") -> tuple[str, tuple[int, ...]]:
        """A fresh layer/tensor name for ``node`` -- the path of the module it runs in
        (``layer1.0.conv1``), else torch's node name -- and its output shape."""
        value = node.meta.get("val")
        shape = tuple(int(d) for d in value.shape) if value is not None else ()
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        return self.unique((path or node.name) + suffix), shape

    # -- the walk -----------------------------------------------------------------------

    def run(self) -> Graph:
        torch = self.torch
        ep = self.ep
        sig = ep.graph_signature
        state = {**ep.state_dict, **getattr(ep, "constants", {})}
        lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                  **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
        user_inputs = list(sig.user_inputs)
        outputs: list[str] = []
        for node in ep.graph.nodes:
            if node.op == "placeholder":
                if node.name in lifted:
                    self.env[node.name] = state[lifted[node.name]]
                    continue
                index = user_inputs.index(node.name)
                name = self.unique(self.input_names[index] if index < len(self.input_names)
                                   else node.name)  # the forward argument's name
                val = node.meta["val"]
                shape = tuple(val.shape)
                if any(not isinstance(d, int) for d in shape):
                    raise PatccError(f"input {name!r} has a dynamic shape {list(shape)}; "
                                     "patcc compiles static shapes: export with the "
                                     "deployment shape (no dynamic_shapes)")
                if val.dtype != torch.float32:
                    raise PatccError(f"input {name!r} is {val.dtype}; patcc compiles "
                                     "float32 inputs")
                self.inputs[name] = TensorType(tuple(int(d) for d in shape))
                self.env[node.name] = _Tensor(name, tuple(int(d) for d in shape))
            elif node.op == "call_function":
                self.env[node.name] = self.call(node)
            elif node.op == "output":
                results = node.args[0]
                for r in (results if isinstance(results, (list, tuple)) else [results]):
                    value = self.env[r.name] if hasattr(r, "name") else r
                    if not isinstance(value, _Tensor):
                        raise PatccError("an output of the module is a constant (it does not "
                                         "depend on the inputs); patcc compiles computed "
                                         "outputs", "output")
                    outputs.append(value.name)
            else:
                raise PatccError(f"unexpected {node.op} node in the exported graph", node.name)
        if len(set(outputs)) != len(outputs):
            raise PatccError("the module returns the same tensor twice", "output")
        return Graph(inputs=self.inputs, layers=tuple(self.layers), outputs=tuple(outputs),
                     constants=self.constants)

    def call(self, node: Any) -> Any:
        torch = self.torch

        def value(a: Any) -> Any:
            if isinstance(a, torch.fx.Node):
                return self.env[a.name]
            if isinstance(a, (list, tuple)):
                return type(a)(value(x) for x in a)
            return a

        args = [value(a) for a in node.args]
        kwargs = {k: value(v) for k, v in node.kwargs.items()}
        if not _computed(args) and not _computed(list(kwargs.values())):
            with torch.no_grad():
                return node.target(*args, **kwargs)  # constant folding, with torch
        if node.target is operator.getitem:  # one result of a multi-output operation
            return args[0][args[1]]
        op = getattr(node.target, "_opname", str(node.target))
        convert = _CONVERTERS.get(op)
        if convert is None:
            raise PatccError(f"unsupported operation aten.{op} ({node.target}); patcc "
                             f"compiles the operations classification CNNs use", _where(node))
        try:
            return convert(self, node, args, kwargs)
        except (IRError, ValueError) as e:
            raise PatccError(f"aten.{op}: {e}", _where(node)) from e


class _Tensor:
    """A computed tensor of the IR graph being built."""

    __slots__ = ("name", "shape")

    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape

    def __repr__(self) -> str:
        return f"<tensor {self.name} {list(self.shape)}>"


def _computed(values: Sequence[Any]) -> bool:
    for v in values:
        if isinstance(v, _Tensor):
            return True
        if isinstance(v, (list, tuple)) and _computed(v):
            return True
    return False


def _pairs(value: Any) -> tuple[int, int]:
    """An int or a one- or two-element list as (height, width)."""
    if isinstance(value, int):
        return (value, value)
    values = [int(v) for v in value]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


# -- converters: (importer, node, args, kwargs) -> value ------------------------------------

Converter = Callable[[_Importer, Any, list[Any], dict[str, Any]], Any]


def _arg(args: list[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _conv(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, weight = args[0], imp.array(args[1], node, "weight")
    bias = _arg(args, kwargs, 2, "bias", None)
    stride = _pairs(_arg(args, kwargs, 3, "stride", 1))
    padding = _arg(args, kwargs, 4, "padding", 0)
    dilation = _pairs(_arg(args, kwargs, 5, "dilation", 1))
    groups = int(_arg(args, kwargs, 6, "groups", 1))
    if getattr(node.target, "_opname", "") == "convolution":  # (.., transposed, out_pad, g)
        if _arg(args, kwargs, 6, "transposed", False):
            return _conv_transpose(imp, node, [
                x, args[1], bias, stride, padding, _arg(args, kwargs, 7, "output_padding", 0),
                _arg(args, kwargs, 8, "groups", 1), dilation], {})
        groups = int(args[8])
    if weight.ndim != 4:
        raise PatccError(f"only 2-D convolutions are supported (weight {weight.shape})",
                         _where(node))
    kh, kw = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        else:  # "same": stride 1; the extra pixel of an even window goes after
            total = ((kh - 1) * dilation[0], (kw - 1) * dilation[1])
            pads = (total[0] // 2, total[1] // 2, total[0] - total[0] // 2,
                    total[1] - total[1] // 2)
    else:
        ph, pw = _pairs(padding)
        pads = (ph, pw, ph, pw)
    b = imp.array(bias, node, "bias") if bias is not None else \
        np.zeros(weight.shape[0], np.float32)
    name, shape = imp.out(node)
    return imp.emit(Conv(name=name, inputs=(x.name,), outputs=(name,), weight=weight,
                         bias=b, strides=stride, pads=pads, dilations=dilation,
                         groups=groups), shape)


def _conv_transpose(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]
                    ) -> Any:
    """conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups,
    dilation): a flipped Conv or a 1x1 Conv and Col2Im (``patcc.frontends.transpose_conv``)."""
    x, weight = args[0], imp.array(args[1], node, "weight")
    bias = _arg(args, kwargs, 2, "bias", None)
    padding = _arg(args, kwargs, 4, "padding", 0)
    if isinstance(padding, str):
        raise PatccError(f"conv_transpose2d with padding={padding!r} is not supported "
                         "(give the padding as integers)", _where(node))
    ph, pw = _pairs(padding)
    spec = TransposedConv(
        weight=weight, bias=None if bias is None else imp.array(bias, node, "bias"),
        strides=_pairs(_arg(args, kwargs, 3, "stride", 1)), pads=(ph, pw, ph, pw),
        output_padding=_pairs(_arg(args, kwargs, 5, "output_padding", 0)),
        groups=int(_arg(args, kwargs, 6, "groups", 1)),
        dilations=_pairs(_arg(args, kwargs, 7, "dilation", 1)))
    name, shape = imp.out(node)
    for layer in lower_conv_transpose(
            spec, x.name, x.shape, name,
            lambda suffix: name if not suffix else imp.unique(name + suffix),
            lambda suffix: imp.unique(f"{name}_{suffix}"), _where(node)):
        imp.layers.append(layer)
    return _Tensor(name, shape)


def _batch_norm(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    op = node.target._opname
    x = args[0]
    weight, bias, mean, var = args[1:5]
    if op == "batch_norm":
        training, eps = args[5], args[7]
    else:  # _native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)
        training, eps = False, args[6]
    if training:
        raise PatccError("batch norm in training mode: call module.eval() first",
                         _where(node))
    c = imp.shape(x)[1]
    mean = imp.array(mean, node, "running mean").astype(np.float64)
    var = imp.array(var, node, "running variance").astype(np.float64)
    gamma = imp.array(weight, node, "scale").astype(np.float64) if weight is not None \
        else np.ones(c)
    beta = imp.array(bias, node, "shift").astype(np.float64) if bias is not None \
        else np.zeros(c)
    scale = gamma / np.sqrt(var + eps)
    name, shape = imp.out(node)
    result = imp.emit(ScaleShift(name=name, inputs=(x.name,), outputs=(name,),
                                 scale=scale.astype(np.float32),
                                 shift=(beta - mean * scale).astype(np.float32)), shape)
    return (result, None, None) if op != "batch_norm" else result


def _linear(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x, weight = args[0], imp.array(args[1], node, "weight")
    bias = _arg(args, kwargs, 2, "bias", None)
    b = imp.array(bias, node, "bias") if bias is not None else np.zeros(weight.shape[0],
                                                                         np.float32)
    name, shape = imp.out(node)
    return imp.emit(Dense(name=name, inputs=(x.name,), outputs=(name,), weight=weight,
                          bias=b), shape)


def _activation(kind: str, alpha: float = 0.0, beta: float = 0.0) -> Converter:
    def convert(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        a, b, chosen = alpha, beta, kind
        if kind == "leaky_relu":
            a = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
        elif kind == "clip":
            a = float(_arg(args, kwargs, 1, "min_val", -1.0))
            b = float(_arg(args, kwargs, 2, "max_val", 1.0))
        elif kind == "elu":
            a = float(_arg(args, kwargs, 1, "alpha", 1.0))
            scale = float(_arg(args, kwargs, 2, "scale", 1.0))
            if scale != 1.0 or float(_arg(args, kwargs, 3, "input_scale", 1.0)) != 1.0:
                raise PatccError("elu with a scale is not supported", _where(node))
        elif kind == "gelu" and _arg(args, kwargs, 1, "approximate", "none") == "tanh":
            chosen = "gelu_tanh"
        elif kind == "softplus" and (float(_arg(args, kwargs, 1, "beta", 1.0)) != 1.0
                                     or float(_arg(args, kwargs, 2, "threshold", 20.0)) != 20.0):
            raise PatccError("softplus with beta or threshold other than 1 and 20 is not "
                             "supported", _where(node))
        name, shape = imp.out(node)
        return imp.emit(Unary(name=name, inputs=(args[0].name,), outputs=(name,),
                              activation=Activation(chosen, a, b)), shape)
    return convert


def _clamp(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    lo = _arg(args, kwargs, 1, "min", None)
    hi = _arg(args, kwargs, 2, "max", None)
    if not all(isinstance(v, (int, float)) or v is None for v in (lo, hi)):
        raise PatccError("clamp with tensor bounds is not supported", _where(node))
    name, shape = imp.out(node)
    act = Activation("clip", -math.inf if lo is None else float(lo),
                     math.inf if hi is None else float(hi))
    return imp.emit(Unary(name=name, inputs=(args[0].name,), outputs=(name,), activation=act),
                    shape)


def _binary(binop: str, reverse: bool = False) -> Converter:
    def convert(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        a, b = args[0], args[1]
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        if alpha != 1:
            if isinstance(b, _Tensor):
                raise PatccError(f"{node.target} with alpha={alpha} is not supported",
                                 _where(node))
            b = b * alpha
        if reverse:
            a, b = b, a
        name, shape = imp.out(node)
        return imp.emit(Binary(name=name, inputs=(imp.tensor(a, node), imp.tensor(b, node)),
                               outputs=(name,), binop=binop), shape)
    return convert


def _alias(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return args[0]  # dropout / identity / clone / contiguous / detach in eval


def _reshape(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    name, shape = imp.out(node)
    return imp.emit(Reshape(name=name, inputs=(args[0].name,), outputs=(name,), shape=shape),
                    shape)


def _transpose(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    rank = len(imp.shape(args[0]))
    op = node.target._opname
    if op == "permute":
        perm = tuple(int(d) % rank for d in args[1])
    elif op == "t":
        perm = (1, 0)
    else:
        a, b = int(args[1]) % rank, int(args[2]) % rank
        perm_list = list(range(rank))
        perm_list[a], perm_list[b] = perm_list[b], perm_list[a]
        perm = tuple(perm_list)
    name, shape = imp.out(node)
    return imp.emit(Transpose(name=name, inputs=(args[0].name,), outputs=(name,), perm=perm),
                    shape)


def _cat(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    tensors = [imp.tensor(t, node) for t in args[0]]
    rank = len(node.meta["val"].shape)
    axis = int(_arg(args, kwargs, 1, "dim", 0)) % rank
    name, shape = imp.out(node)
    return imp.emit(Concat(name=name, inputs=tuple(tensors), outputs=(name,), axis=axis),
                    shape)


def _split(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    in_shape = imp.shape(x)
    op = node.target._opname
    dim = int(_arg(args, kwargs, 2, "dim", 0)) % len(in_shape)
    size = in_shape[dim]
    if op == "chunk":
        chunks = int(args[1])
        step = -(-size // chunks)
        sizes = [min(step, size - i) for i in range(0, size, step)]
    elif op == "split_with_sizes":
        sizes = [int(s) for s in args[1]]
    else:  # split.Tensor(x, split_size, dim)
        step = int(args[1])
        sizes = [min(step, size - i) for i in range(0, size, step)]
    names = [imp.unique(f"{node.name}_{i}") for i in range(len(sizes))]
    imp.layers.append(Split(name=imp.unique(node.name + "_split"), inputs=(x.name,),
                            outputs=tuple(names), axis=dim, sizes=tuple(sizes)))
    shapes = [tuple(s if a != dim else part for a, s in enumerate(in_shape)) for part in sizes]
    return [_Tensor(n, s) for n, s in zip(names, shapes, strict=True)]


def _mean(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    rank = len(imp.shape(x))
    dims = sorted(int(d) % rank for d in _arg(args, kwargs, 1, "dim", []))
    keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
    if rank < 3 or dims != list(range(2, rank)):
        raise PatccError(f"mean over dims {dims} is not supported (only over all spatial "
                         "dims of an NCHW tensor)", _where(node))
    return _global(imp, node, x, "avg", keepdim)


def _global(imp: _Importer, node: Any, x: _Tensor, kind: str, keepdim: bool) -> Any:
    name, shape = imp.out(node, "" if keepdim else "_pool")
    pooled_shape = tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2)
    result = imp.emit(GlobalPool(name=name, inputs=(x.name,), outputs=(name,), kind=kind),
                      pooled_shape)
    if keepdim:
        return result
    out_name, out_shape = imp.out(node)
    return imp.emit(Reshape(name=out_name, inputs=(name,), outputs=(out_name,),
                            shape=out_shape), out_shape)


def _adaptive_pool(kind: str) -> Converter:
    def convert(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = args[0]
        _, _, h, w = imp.shape(x)
        oh, ow = (h if s is None else int(s) for s in _pairs_none(args[1]))
        if (oh, ow) == (1, 1):
            result = _global(imp, node, x, kind, True)
            return (result, None) if node.target._opname.endswith("max_pool2d") else result
        if h % oh or w % ow:
            raise PatccError(f"adaptive pooling from {h}x{w} to {oh}x{ow} is not supported "
                             "(the output must divide the input)", _where(node))
        name, shape = imp.out(node)
        kernel = (h // oh, w // ow)
        result = imp.emit(Pool(name=name, inputs=(x.name,), outputs=(name,), kind=kind,
                               kernel=kernel, strides=kernel), shape)
        return (result, None) if kind == "max" else result
    return convert


def _pairs_none(value: Any) -> tuple[Any, Any]:
    if value is None or isinstance(value, int):
        return (value, value)
    value = tuple(value)
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def _max_pool(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    kernel = _pairs(args[1])
    stride = _pairs(_arg(args, kwargs, 2, "stride", []) or kernel)
    ph, pw = _pairs(_arg(args, kwargs, 3, "padding", 0))
    dilation = _pairs(_arg(args, kwargs, 4, "dilation", 1))
    ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    name, shape = imp.out(node)
    result = imp.emit(Pool(name=name, inputs=(x.name,), outputs=(name,), kind="max",
                           kernel=kernel, strides=stride, pads=(ph, pw, ph, pw),
                           dilations=dilation, ceil_mode=ceil_mode), shape)
    return (result, None) if node.target._opname.endswith("with_indices") else result


def _avg_pool(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    kernel = _pairs(args[1])
    stride = _pairs(_arg(args, kwargs, 2, "stride", []) or kernel)
    ph, pw = _pairs(_arg(args, kwargs, 3, "padding", 0))
    ceil_mode = bool(_arg(args, kwargs, 4, "ceil_mode", False))
    include = bool(_arg(args, kwargs, 5, "count_include_pad", True))
    if _arg(args, kwargs, 6, "divisor_override", None) is not None:
        raise PatccError("avg_pool2d with divisor_override is not supported", _where(node))
    name, shape = imp.out(node)
    return imp.emit(Pool(name=name, inputs=(x.name,), outputs=(name,), kind="avg",
                         kernel=kernel, strides=stride, pads=(ph, pw, ph, pw),
                         ceil_mode=ceil_mode, count_include_pad=include), shape)


def _slice(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """aten.slice.Tensor(x, dim, start, end, step): Python slicing of one axis."""
    x = args[0]
    in_shape = imp.shape(x)
    rank = len(in_shape)
    dim = int(_arg(args, kwargs, 1, "dim", 0)) % rank
    start = _arg(args, kwargs, 2, "start", None)
    end = _arg(args, kwargs, 3, "end", None)
    step = int(_arg(args, kwargs, 4, "step", 1))
    lo, hi, _ = slice(start, end, step).indices(in_shape[dim])
    starts = [0] * rank
    ends = list(in_shape)
    steps = [1] * rank
    starts[dim], ends[dim], steps[dim] = lo, hi, step
    name, shape = imp.out(node)
    if shape == in_shape:
        return x
    return imp.emit(Slice(name=name, inputs=(x.name,), outputs=(name,), starts=tuple(starts),
                          ends=tuple(ends), steps=tuple(steps)), shape)


def _upsample(mode: str, exact: bool = False, antialias: bool = False) -> Converter:
    """aten.upsample_{nearest,bilinear,bicubic}2d (and the ``.vec`` forms, the exact-
    nearest and antialiased variants) as a Resize in torch's coordinates: nearest reads
    floor(y / scale) (nearest-exact rounds half-pixel centres), bilinear and bicubic
    use half-pixel centres or, with align_corners, the corners; given scale factors
    set the coordinate scale, sizes the ratio of sizes. Antialiased filters, like
    torch's, drop the taps that fall outside the image and renormalise (and take
    bicubic with a = -0.5, as PIL)."""
    def convert(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        x = args[0]
        in_shape = imp.shape(x)
        name, shape = imp.out(node)
        opname = node.target._overloadname
        rest = args[1:]
        align = False
        if mode != "nearest":
            align = bool(rest[1] if len(rest) > 1 else kwargs.get("align_corners", False))
            rest = rest[:1] + rest[2:]
        if opname == "vec":  # (x, output_size, [align_corners,] scale_factors)
            factors = rest[1] if len(rest) > 1 else kwargs.get("scale_factors")
        else:  # (x, output_size, [align_corners,] scales_h, scales_w)
            factors = list(rest[1:3]) if len(rest) > 2 and None not in rest[1:3] else None
        if factors and not align:
            scales = (1.0, 1.0, *(float(f) for f in factors))
        else:  # align_corners maps corners to corners whatever the factor
            scales = tuple(o / i for o, i in zip(shape, in_shape, strict=True))
        if mode == "nearest":
            coordinate, rule = ("half_pixel", "round_prefer_ceil") if exact else \
                ("asymmetric", "floor")
        else:
            coordinate, rule = ("align_corners" if align else "half_pixel"), "floor"
        return imp.emit(Resize(name=name, inputs=(x.name,), outputs=(name,), size=shape,
                               scales=scales, mode=mode, coordinate_mode=coordinate,
                               nearest_mode=rule, cubic_a=-0.5 if antialias else -0.75,
                               antialias=antialias,
                               exclude_outside=antialias), shape)
    return convert


def _gather(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """aten.select (``x[:, 0]``), index_select and index with one constant index tensor
    (``x[:, [0, 2]]``): a Gather layer; negative indices count from the end."""
    x = args[0]
    shape = imp.shape(x)
    op = node.target._opname
    if op == "index":
        given = list(args[1])
        used = [i for i, t in enumerate(given) if t is not None]
        if len(used) != 1:
            raise PatccError(f"indexing with {len(used)} index tensors is not supported "
                             "(one, on one axis)", _where(node))
        dim, index = used[0], given[used[0]]
    else:
        dim, index = int(_arg(args, kwargs, 1, "dim", 0)), _arg(args, kwargs, 2, "index", 0)
    if not -len(shape) <= dim < len(shape) or isinstance(index, _Tensor):
        raise PatccError(f"aten.{op} on dim {dim} of {list(shape)} with a computed index is "
                         "not supported (the index must be a constant)", _where(node))
    dim %= len(shape)
    values = np.asarray(index.detach().cpu().numpy() if isinstance(index, imp.torch.Tensor)
                        else index)
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
        raise PatccError(f"aten.{op}: an index of dtype {values.dtype} is not supported "
                         "(integer indices)", _where(node))
    size = shape[dim]
    if ((values < -size) | (values >= size)).any():
        raise PatccError(f"aten.{op}: index {values.reshape(-1).tolist()[:8]} out of range "
                         f"for dim {dim} of size {size}", _where(node))
    name, out_shape = imp.out(node)
    return imp.emit(Gather(name=name, inputs=(x.name,), outputs=(name,), axis=dim,
                           indices=np.where(values < 0, values + size, values).astype(np.int64)),
                    out_shape)


def _pad(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """aten.constant_pad_nd / pad: torch's pads run from the last axis backwards in
    (begin, end) pairs; the IR's are all begins, then all ends."""
    x = args[0]
    rank = len(imp.shape(x))
    pad = [int(p) for p in args[1]]
    op = node.target._opname
    mode = "constant" if op == "constant_pad_nd" else str(_arg(args, kwargs, 2, "mode",
                                                                "constant"))
    value = _arg(args, kwargs, 2 if op == "constant_pad_nd" else 3, "value", 0.0)
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
    if mode not in modes or any(p < 0 for p in pad):
        raise PatccError(f"padding mode {mode!r} with pads {pad} is not supported "
                         "(constant, reflect or replicate, non-negative)", _where(node))
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        axis = rank - 1 - i
        begins[axis], ends[axis] = pad[2 * i], pad[2 * i + 1]
    name, shape = imp.out(node)
    return imp.emit(Pad(name=name, inputs=(x.name,), outputs=(name,),
                        pads=tuple(begins + ends), mode=modes[mode],
                        value=float(value or 0.0)), shape)


def _softmax(log: bool) -> Converter:
    def convert(imp: _Importer, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        rank = len(imp.shape(args[0]))
        name, shape = imp.out(node)
        return imp.emit(Softmax(name=name, inputs=(args[0].name,), outputs=(name,),
                                axis=int(args[1]) % rank, log=log), shape)
    return convert


_CONVERTERS: dict[str, Converter] = {
    "conv2d": _conv, "convolution": _conv, "_convolution": _conv,
    "conv_transpose2d": _conv_transpose,
    "batch_norm": _batch_norm, "_native_batch_norm_legit_no_training": _batch_norm,
    "linear": _linear,
    "relu": _activation("relu"), "relu_": _activation("relu"),
    "relu6": _activation("clip", 0.0, 6.0),
    "hardtanh": _activation("clip"), "hardtanh_": _activation("clip"),
    "hardswish": _activation("hard_swish"), "hardswish_": _activation("hard_swish"),
    "hardsigmoid": _activation("hard_sigmoid", 1 / 6, 0.5),
    "hardsigmoid_": _activation("hard_sigmoid", 1 / 6, 0.5),
    "silu": _activation("silu"), "silu_": _activation("silu"),
    "sigmoid": _activation("sigmoid"), "sigmoid_": _activation("sigmoid"),
    "tanh": _activation("tanh"), "leaky_relu": _activation("leaky_relu"),
    "leaky_relu_": _activation("leaky_relu"),
    "clamp": _clamp, "clamp_": _clamp,
    "add": _binary("add"), "add_": _binary("add"), "sub": _binary("sub"),
    "rsub": _binary("sub", reverse=True), "mul": _binary("mul"), "mul_": _binary("mul"),
    "div": _binary("div"), "maximum": _binary("max"), "minimum": _binary("min"),
    "dropout": _alias, "dropout_": _alias, "feature_dropout": _alias, "alpha_dropout": _alias,
    "clone": _alias, "contiguous": _alias, "detach": _alias, "identity": _alias,
    "alias": _alias, "lift_fresh_copy": _alias,
    "_assert_tensor_metadata": lambda imp, node, args, kwargs: None,
    "to": _alias, "_to_copy": _alias,
    "flatten": _reshape, "view": _reshape, "reshape": _reshape, "_unsafe_view": _reshape,
    "squeeze": _reshape, "unsqueeze": _reshape,
    "transpose": _transpose, "permute": _transpose, "t": _transpose,
    "cat": _cat, "concat": _cat,
    "split": _split, "split_with_sizes": _split, "chunk": _split,
    "mean": _mean,
    "adaptive_avg_pool2d": _adaptive_pool("avg"), "_adaptive_avg_pool2d": _adaptive_pool("avg"),
    "adaptive_max_pool2d": _adaptive_pool("max"),
    "max_pool2d": _max_pool, "max_pool2d_with_indices": _max_pool,
    "avg_pool2d": _avg_pool,
    "softmax": _softmax(False), "_softmax": _softmax(False),
    "log_softmax": _softmax(True), "_log_softmax": _softmax(True),
    "elu": _activation("elu"), "elu_": _activation("elu"),
    "selu": _activation("selu", 1.6732632423543772, 1.0507009873554805),
    "selu_": _activation("selu", 1.6732632423543772, 1.0507009873554805),
    "gelu": _activation("gelu"), "mish": _activation("mish"), "mish_": _activation("mish"),
    "softplus": _activation("softplus"), "erf": _activation("erf"),
    "exp": _activation("exp"), "log": _activation("log"), "sqrt": _activation("sqrt"),
    "neg": _activation("neg"), "abs": _activation("abs"),
    "reciprocal": _activation("reciprocal"),
    "slice": _slice, "constant_pad_nd": _pad, "pad": _pad,
    "select": _gather, "index_select": _gather, "index": _gather,
    "upsample_nearest2d": _upsample("nearest"),
    "_upsample_nearest_exact2d": _upsample("nearest", exact=True),
    "upsample_bilinear2d": _upsample("linear"), "upsample_bicubic2d": _upsample("cubic"),
    "_upsample_bilinear2d_aa": _upsample("linear", antialias=True),
    "_upsample_bicubic2d_aa": _upsample("cubic", antialias=True),
}
"""ATen operation (overload packet name) -> converter."""


def import_module(module: Any, example_inputs: Any, input_names: Sequence[str] | None = None
                  ) -> Graph:
    """Import ``module`` (an ``nn.Module``) run on ``example_inputs`` (a tensor or a
    tuple of tensors, with the deployment shapes) into a verified patcc graph."""
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise PatccError(f"expected an nn.Module, got {type(module).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs or not all(
            isinstance(t, torch.Tensor) for t in example_inputs):
        raise PatccError("example_inputs must be a tensor or a tuple of tensors with the "
                         "shapes to compile for, e.g. example_inputs=(torch.randn(1, 3, 224, "
                         "224),)")
    # The modes that change what a module computes: the root's (a forward may read
    # self.training), batch norms' and dropouts'. Parametrisation modules registered
    # after .eval() are in training mode and change nothing.
    moded = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)
    training = [name or "(root)" for name, m in module.named_modules()
                if m.training and (m is module or isinstance(m, moded))]
    if training:
        warnings.warn(f"{type(module).__name__} is in training mode "
                      f"({len(training)} module(s), e.g. {training[0]}): compiled in eval "
                      "mode (batch norms on their running statistics, dropout off); the "
                      "module itself is left as it was", stacklevel=3)
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(module, tuple(example_inputs), strict=False)
    except Exception as e:  # torch raises many types; the first line says what
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PatccError(f"torch.export cannot export {type(module).__name__}: {message}") \
            from e
    finally:
        for m, mode in modes.items():
            m.train(mode)
    names = list(input_names) if input_names else []
    graph = _Importer(exported, names).run()
    graph = graph.replace(name=type(module).__name__)
    try:
        return run_pipeline(graph, FRONTEND_PIPELINE, check=True)
    except IRError as e:
        raise PatccError(f"import produced an inconsistent graph: {e}", "module") from e


__all__ = ["import_module"]
