"""The albedo head's channel RMSNorm works on contiguous tensors and returns one, as the reference does."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sapiens2.models.heads import AlbedoHead, DenseHeadConfig, RMSNorm2d


def _norm(channels: int = 64) -> RMSNorm2d:
    norm = RMSNorm2d(channels)
    with torch.no_grad():
        norm.norm.weight.copy_(torch.linspace(0.5, 1.5, channels))
    return norm


def reference_rms_norm_2d(norm: RMSNorm2d, x: torch.Tensor) -> torch.Tensor:
    """The reference's order of operations: channels last made contiguous, normalise, back, contiguous."""
    y = F.rms_norm(x.permute(0, 2, 3, 1).contiguous(), (x.shape[1],), norm.norm.weight, norm.norm.eps)
    return y.permute(0, 3, 1, 2).contiguous()


def test_output_is_contiguous_and_the_reference_bit_for_bit():
    norm = _norm()
    x = torch.randn(2, 64, 32, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = norm(x)
    assert y.is_contiguous()
    assert torch.equal(y, reference_rms_norm_2d(norm, x))


def test_input_layout_does_not_change_the_result():
    norm = _norm()
    x = torch.randn(1, 64, 16, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = norm(x)
        b = norm(x.contiguous(memory_format=torch.channels_last))
    assert b.is_contiguous()
    assert torch.equal(a, b)


def test_normalises_across_channels_at_each_pixel():
    norm = _norm(8)
    x = torch.randn(1, 8, 3, 5, generator=torch.Generator().manual_seed(2)) * 7
    with torch.no_grad():
        y = norm(x)
    expected = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6) * norm.norm.weight.view(1, 8, 1, 1)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)


def test_albedo_head_output_is_contiguous():
    head = AlbedoHead(DenseHeadConfig(16, (8, 8), (8,), (3,))).eval()
    features = torch.randn(1, 16, 4, 3).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # the backbone's view
    with torch.no_grad():
        y = head(features)
    assert y.shape == (1, 3, 16, 12) and y.is_contiguous()
