"""Half precision on a GPU: fp16 files on onnxruntime's CUDA provider and fp16 programs on CUDA."""

from __future__ import annotations

import pytest
import torch

from sapiens2.export import load_exported
from tests.export.conftest import input_size, tiny_network
from tests.export.test_onnx import FP16_REL

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_an_fp16_program_runs_on_cuda_within_its_bound(exports):
    program = load_exported(exports.get("seg", fmt="pt2", dtype="fp16"), allow_code=True).to("cuda")
    x = torch.randn(1, 3, *input_size("seg"))
    with torch.no_grad():
        want, got = tiny_network("seg")(x), program(x.cuda()).cpu()
    assert ((got - want).norm() / want.norm()).item() <= FP16_REL


def test_an_fp16_onnx_file_runs_on_the_cuda_provider(exports):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
    net = load_exported(exports.get("seg", dtype="fp16"), providers=["CUDAExecutionProvider"])
    x = torch.randn(1, 3, *input_size("seg"))
    with torch.no_grad():
        want, got = tiny_network("seg")(x), net(x)
    assert ((got - want).norm() / want.norm()).item() <= FP16_REL
