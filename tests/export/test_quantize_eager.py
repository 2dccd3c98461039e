"""Eager dynamic int8 quantization of the linear layers, against fp32."""

import torch

from sparseformer.export.quantize import cosine, quantize_eager

from .conftest import encoder


def test_eager_int8_quality():
    model = encoder(13)
    x = torch.randn(2, 64, 32)
    q = quantize_eager(model)
    with torch.no_grad():
        assert cosine(q(x), model(x)) >= 0.99
    assert type(q.layers[0].linear1) is not torch.nn.Linear  # replaced by the int8 module
    assert type(model.layers[0].linear1) is torch.nn.Linear  # the original is untouched
