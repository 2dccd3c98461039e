"""``masked_attention``'s two ways of multiplying (4-D matmuls, or 3-D ``bmm`` within
``bmm_products()``, the form the ExecuTorch exports trace) give the same values."""

import pytest
import torch

from sparseformer.kernels.reference import bmm_products, masked_attention


@pytest.mark.parametrize(("heads", "kv_heads", "lq"), [(4, 4, 7), (4, 2, 1), (6, 1, 5)])
def test_bmm_products_equal_the_matmul_products(heads, kv_heads, lq):
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    b, lk, d, dv = 2, int(torch.randint(lq, 40, (), generator=g)), 8, 6
    q = torch.randn(b, heads, lq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, kv_heads, lk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, kv_heads, lk, dv, generator=g, dtype=torch.float64)
    mask = torch.rand(1, heads, lq, lk, generator=g) > 0.3
    keep = torch.rand(b, lk, generator=g) > 0.2
    sinks = torch.randn(heads, generator=g, dtype=torch.float64)
    args = dict(key_padding_mask=keep, scale=0.3, softcap=4.0, sinks=sinks)
    want = masked_attention(q, k.transpose(2, 3).contiguous().transpose(2, 3), v, mask, **args)
    with bmm_products():
        got = masked_attention(q, k.transpose(2, 3).contiguous().transpose(2, 3), v, mask, **args)
    assert got.shape == (b, heads, lq, dv)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
