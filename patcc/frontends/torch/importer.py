"""The export driver and the graph walk: ``torch.export`` the module, then visit the
ATen graph node by node, folding constant operations with torch and handing the rest
to the converters of ``ops``.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence
from typing import Any

from patcc.errors import FrontendError
from patcc.frontends.torch.builder import GraphBuilder, IRTensor, import_torch, where
from patcc.frontends.torch.ops import CONVERTERS
from patcc.ir.graph import Graph, TensorType
from patcc.ir.layers import IRError
from patcc.passes import FRONTEND_PIPELINE, run_pipeline


class _Importer(GraphBuilder):
    """The walk over an exported program's nodes, in order, building the graph."""

    def __init__(self, exported: Any, input_names: Sequence[str]) -> None:
        super().__init__()
        self.ep = exported
        self.input_names = list(input_names)
        self.inputs: dict[str, TensorType] = {}
        self.env: dict[str, Any] = {}

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
                    raise FrontendError(f"input {name!r} has a dynamic shape {list(shape)}; "
                                        "patcc compiles static shapes: export with the "
                                        "deployment shape (no dynamic_shapes)")
                if val.dtype != torch.float32:
                    raise FrontendError(f"input {name!r} is {val.dtype}; patcc compiles "
                                        "float32 inputs")
                self.inputs[name] = TensorType(tuple(int(d) for d in shape))
                self.env[node.name] = IRTensor(name, tuple(int(d) for d in shape))
            elif node.op == "call_function":
                self.env[node.name] = self.call(node)
            elif node.op == "output":
                results = node.args[0]
                for r in (results if isinstance(results, (list, tuple)) else [results]):
                    value = self.env[r.name] if hasattr(r, "name") else r
                    if not isinstance(value, IRTensor):
                        raise FrontendError("an output of the module is a constant (it does not "
                                            "depend on the inputs); patcc compiles computed "
                                            "outputs", "output")
                    outputs.append(value.name)
            else:
                raise FrontendError(f"unexpected {node.op} node in the exported graph", node.name)
        if len(set(outputs)) != len(outputs):
            raise FrontendError("the module returns the same tensor twice", "output")
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
        convert = CONVERTERS.get(op)
        if convert is None:
            raise FrontendError(f"unsupported operation aten.{op} ({node.target}); patcc "
                                f"compiles the operations classification CNNs use", where(node))
        try:
            return convert(self, node, args, kwargs)
        except (IRError, ValueError) as e:
            raise FrontendError(f"aten.{op}: {e}", where(node)) from e


def _computed(values: Sequence[Any]) -> bool:
    for v in values:
        if isinstance(v, IRTensor):
            return True
        if isinstance(v, (list, tuple)) and _computed(v):
            return True
    return False


def import_module(module: Any, example_inputs: Any, input_names: Sequence[str] | None = None
                  ) -> Graph:
    """Import ``module`` (an ``nn.Module``) run on ``example_inputs`` (a tensor or a
    tuple of tensors, with the deployment shapes) into a verified patcc graph:
    ``read_module``, then ``FRONTEND_PIPELINE``. Raises ``FrontendError`` for a module
    patcc cannot import, naming the operation."""
    graph = read_module(module, example_inputs, input_names)
    try:
        return run_pipeline(graph, FRONTEND_PIPELINE, check=True)
    except IRError as e:
        raise FrontendError(f"import produced an inconsistent graph: {e}", "module") from e


def read_module(module: Any, example_inputs: Any, input_names: Sequence[str] | None = None
                ) -> Graph:
    """Read ``module`` run on ``example_inputs`` into the raw patcc graph (no pass run
    yet: ``import_module`` runs them). Raises ``FrontendError`` for a module patcc
    cannot import, naming the operation."""
    torch = import_torch()
    if not isinstance(module, torch.nn.Module):
        raise FrontendError(f"expected an nn.Module, got {type(module).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs or not all(
            isinstance(t, torch.Tensor) for t in example_inputs):
        raise FrontendError("example_inputs must be a tensor or a tuple of tensors with the "
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
                      "module itself is left as it was", stacklevel=4)
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(module, tuple(example_inputs), strict=False)
    except Exception as e:  # torch raises many types; the first line says what
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FrontendError(f"torch.export cannot export {type(module).__name__}: {message}") \
            from e
    finally:
        for m, mode in modes.items():
            m.train(mode)
    names = list(input_names) if input_names else []
    graph = _Importer(exported, names).run()
    return graph.replace(name=type(module).__name__)

