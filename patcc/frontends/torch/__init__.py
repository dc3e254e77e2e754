"""The PyTorch frontend: an ``nn.Module`` into the IR through ``torch.export``.

``import_module(module, example_inputs)`` exports the module in eval mode with static
shapes, then walks the ATen graph (``importer``):

- every operation whose tensor operands are all constants (parameters, buffers,
  constants, or results of such operations) is evaluated once with torch: this is
  how ``torch.nn.utils.prune`` masks (``weight_orig * weight_mask``),
  ``torch.nn.utils.parametrize`` functions and any other weight arithmetic become
  the effective weights, with no clean-up by the user;
- the rest map onto IR layers (see ``ops.CONVERTERS``): convolution (grouped,
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

Errors are ``FrontendError``: an unsupported operation names the ATen op, the module
(its path in the model and class) and the source line torch recorded; dynamic shapes
and modules torch cannot export are refused in one line.

Modules: ``importer`` (the export driver and the graph walk), ``ops`` (one converter
per ATen operation, and the table), ``builder`` (the graph under construction, which
both write through).
"""

from __future__ import annotations

from patcc.frontends.torch.importer import import_module, read_module

__all__ = ["import_module", "read_module"]
