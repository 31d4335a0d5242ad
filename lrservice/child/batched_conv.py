"""Convolutions of K vmapped children as one channels-last grouped convolution.

``torch.func.vmap`` turns K children's convolution into one grouped convolution (groups = K)
over a ``(N, K*C, H, W)`` input laid out channel-first, which on CPU is no faster per child than
K plain ones (docs/performance.md, section 4). The same grouped convolution over a channels-last
input (each pixel's K*C channels adjacent in memory) is several times faster. This module gives
the children's convolution layers that layout under vmap:

* :func:`convolution` is a custom op (``lrservice::convolution``) whose vmap rule lays the K
  children's inputs out as ``(N, *spatial, K, C)``, runs one grouped convolution, and hands the
  result back as ``(K, N, *spatial, O)`` in memory — each child's maps channels-last, so the
  pooling and activations after it read them as one ``(K*N, ...)`` batch without a copy.
  Outside vmap it is ``torch.nn.functional.conv{1,2,3}d`` with the same autograd.
* :func:`batched_convolutions` points every ``nn.Conv2d`` of a model (built-in or plugin) with
  zero padding at that op. The op is correct for 1-D and 3-D too, but a 1-D convolution, and any
  convolution of a model with BatchNorm, measured slower this way on CPU (``bench/batched.py``),
  so those keep vmap's own rule. The batched trainer applies it to its own copy of the model, so
  the vmap trial still checks it against the model's unmodified forward.

The arithmetic is the convolution's own; only the memory layout and the kernel chosen change,
so results agree with separate children to float32 rounding (tests/test_batched.py).
"""

from __future__ import annotations

import types
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MODULES = (nn.Conv2d,)  # 1-D: measured slower this way (bench/batched.py, convnet1d), so vmap's own rule stays


@torch.library.custom_op("lrservice::convolution", mutates_args=())
def convolution(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
                dilation: list[int], groups: int) -> Tensor:
    """``F.conv{d}d(x, weight, bias, stride, padding, dilation, groups)`` for d = ``weight.dim() - 2``."""
    return _CONV[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)


@convolution.register_fake
def _(x, weight, bias, stride, padding, dilation, groups):
    return torch.ops.aten.convolution(x, weight, bias, stride, padding, dilation, False, [0] * len(stride), groups)


def _setup(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.conv = (None if bias is None else list(bias.shape), stride, padding, dilation, groups)


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    bias_sizes, stride, padding, dilation, groups = ctx.conv
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias_sizes is not None and ctx.needs_input_grad[2]]
    gx, gw, gb = torch.ops.aten.convolution_backward(grad, x, weight, bias_sizes, stride, padding, dilation, False,
                                                      [0] * len(stride), groups, mask)
    return gx, gw, gb, None, None, None, None


convolution.register_autograd(_backward, setup_context=_setup)


def _children(t: Tensor | None, dim: int | None, k: int) -> Tensor | None:
    """``t`` with the children's dimension first (broadcast to K when it is shared)."""
    if t is None:
        return None
    return t.movedim(dim, 0) if dim is not None else t.unsqueeze(0).expand(k, *t.shape)


@convolution.register_vmap
def _(info, in_dims, x, weight, bias, stride, padding, dilation, groups):
    x_dim, w_dim, b_dim = in_dims[:3]
    k = info.batch_size
    if w_dim is None and b_dim is None:  # shared weights: the children are just more samples
        out = convolution(x.movedim(x_dim, 0).flatten(0, 1), weight, bias, stride, padding, dilation, groups)
        return out.unflatten(0, (k, -1)), 0
    xs = _children(x, x_dim, k)                      # (K, N, C, *S)
    n, c, spatial = xs.shape[1], xs.shape[2], xs.shape[3:]
    d = len(spatial)
    # (N, *S, K, C) in memory, seen as (N, K*C, *S): channels-last, child-major channels.
    packed = xs.permute(1, *range(3, 3 + d), 0, 2).reshape(n, *spatial, k * c).movedim(-1, 1)
    ws = _children(weight, w_dim, k)                 # (K, O, C/g, *kernel)
    o = ws.shape[1]
    bs = _children(bias, b_dim, k)
    out = _CONV[d](packed, ws.reshape(k * o, *ws.shape[2:]), None if bs is None else bs.reshape(k * o),
                   stride, padding, dilation, groups * k)  # (N, K*O, *S')
    # (K, N, *S', O) in memory, seen as (K, N, O, *S'): every child's maps channels-last.
    out = out.movedim(1, -1).unflatten(-1, (k, o)).movedim(-2, 0).contiguous()
    return out.movedim(-1, 2), 0


def _forward(self: nn.Module, x: Tensor) -> Tensor:
    return convolution(x, self.weight, self.bias, list(self.stride), list(self.padding), list(self.dilation),
                       self.groups)


def batched_convolutions(model: nn.Module) -> nn.Module:
    """``model`` with each zero-padded, numerically padded ``nn.Conv2d`` computing through
    :func:`convolution` (others, e.g. ``padding='same'`` or reflect padding, are left as they are).

    A model with BatchNorm is left as it is: vmap's batch-norm rule copies channels-last maps back
    and forth, and such a model measured slower this way (``bench/batched.py``, convbn: 0.86x)."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    for module in model.modules():
        if (type(module) in _MODULES and module.padding_mode == "zeros" and not isinstance(module.padding, str)):
            module.forward = types.MethodType(_forward, module)
    return model
