"""The channels-last convolution of vmapped children against each child's own ``F.conv{1,2,3}d``
(outputs and gradients, float64), the op's autograd outside vmap, and which layers it takes over."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrservice.child.batched_conv import batched_convolutions, convolution

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
K = 3


@pytest.mark.parametrize("d, groups, stride, padding, dilation, bias", [
    (1, 1, [1], [2], [1], True),
    (2, 1, [1, 1], [2, 2], [1, 1], True),
    (2, 2, [2, 1], [1, 0], [1, 2], False),
    (3, 1, [1, 1, 1], [1, 1, 1], [1, 1, 1], True),
])
def test_vmapped_children_match_each_childs_own_convolution(d, groups, stride, padding, dilation, bias):
    g = torch.Generator().manual_seed(d * 10 + groups)
    x = torch.randn(K, 5, 4, *([7] * d), generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(K, 6, 4 // groups, *([3] * d), generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(K, 6, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    args = (stride, padding, dilation, groups)
    out = torch.func.vmap(lambda xi, wi, bi: convolution(xi, wi, bi, *args),
                          in_dims=(0, 0, 0 if bias else None))(x, w, b)
    ref = torch.stack([CONV[d](x[i], w[i], None if b is None else b[i], *args) for i in range(K)])
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    cotangent = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    inputs = [t for t in (x, w, b) if t is not None]
    got = torch.autograd.grad((out * cotangent).sum(), inputs)
    want = torch.autograd.grad((ref * cotangent).sum(), inputs)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


def test_shared_inputs_or_shared_weights_under_vmap():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 2, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(K, 3, 2, 3, 3, generator=g, dtype=torch.float64)
    args = ([1, 1], [1, 1], [1, 1], 1)
    one_input = torch.func.vmap(lambda wi: convolution(x, wi, None, *args))(w)  # the evaluation path: same batch
    torch.testing.assert_close(one_input, torch.stack([F.conv2d(x, w[i], None, *args) for i in range(K)]))
    xs = torch.randn(K, 4, 2, 6, 6, generator=g, dtype=torch.float64)
    one_weight = torch.func.vmap(lambda xi: convolution(xi, w[0], None, *args))(xs)
    torch.testing.assert_close(one_weight, torch.stack([F.conv2d(xs[i], w[0], None, *args) for i in range(K)]))


def test_autograd_outside_vmap_is_the_convolutions():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: convolution(*t, [2, 1], [1, 1], [1, 1], 1), (x, w, b))


def test_only_plain_zero_padded_convolutions_are_taken_over():
    class Own(nn.Conv2d):  # a subclass may compute something else: left alone
        pass

    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Conv2d(1, 2, 3, padding="same"), nn.Conv2d(1, 2, 3),
                          nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), Own(1, 2, 3),
                          nn.ConvTranspose2d(1, 2, 3))
    batched_convolutions(model)
    taken = ["forward" in vars(m) for m in model]
    assert taken == [False, False, True, False, False, False]  # 1-D: measured slower channels-last


def test_a_model_with_batch_norm_keeps_vmaps_own_rule():
    """Measured slower channels-last (vmap's batch-norm rule copies the layout back): left as it is."""
    model = batched_convolutions(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    assert "forward" not in vars(model[0])
