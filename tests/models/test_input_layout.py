"""The network sees exactly the reference's input: a contiguous N x 3 x H x W float tensor.

Why it matters: the values are the same in any memory layout, but the patch-embedding convolution rounds
differently on channels_last strides (~6e-7), and 24 blocks with bfloat16 RoPE amplify that to ~1e-3 at
the outputs. Fed the reference's layout, the fixture networks reproduce the reference bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import sapiens2
from sapiens2.tasks import predictor_for
from sapiens2.tasks.resize import MEAN_RGB, STD_RGB, normalize
from tests.conftest import random_photo


def reference_input(network_images: np.ndarray) -> torch.Tensor:
    """The reference's way: HWC -> CHW made contiguous per image, stacked, then float (x - mean) / std."""
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in network_images])
    x = x.float()
    return (x - torch.tensor(MEAN_RGB).view(1, 3, 1, 1)) / torch.tensor(STD_RGB).view(1, 3, 1, 1)


def test_normalize_returns_a_contiguous_nchw_tensor():
    batch = np.stack([random_photo(16, 12, seed=s) for s in range(2)])
    x = normalize(batch)
    assert x.shape == (2, 3, 16, 12)
    assert x.is_contiguous()
    assert torch.equal(x, reference_input(batch))


def test_normalize_is_contiguous_for_a_tensor_and_a_lower_dtype():
    batch = torch.from_numpy(np.stack([random_photo(8, 6)]))
    x = normalize(batch, dtype=torch.bfloat16)
    assert x.dtype == torch.bfloat16 and x.is_contiguous()
    assert torch.equal(x, reference_input(batch.numpy()).to(torch.bfloat16))


def test_normalize_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match="N x H x W x 3"):
        normalize(np.zeros((2, 3, 8, 8), np.uint8))


class Recorder(nn.Module):
    """Runs the network and keeps what it was given and what it returned."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.task = network.task
        self.calls: list[tuple[torch.Tensor, object]] = []

    def forward(self, x: torch.Tensor):
        y = self.network(x)
        self.calls.append((x.clone(), y))
        return y


@pytest.mark.parametrize("case", ["normal_tiny", "albedo_tiny"])
def test_dense_predictor_output_is_the_network_on_the_reference_input_bit_for_bit(shared, case, one_thread):
    network = sapiens2.load(shared / "fixtures" / case / "weights.safetensors").eval()
    recorder = Recorder(network)
    predictor = predictor_for(network.task)(recorder, input_size=(256, 192))
    photos = [random_photo(333, 517, seed=1), random_photo(200, 120, seed=2)]
    predictor.batch_size = 2
    predictor(photos)

    (x, y), = recorder.calls
    assert x.is_contiguous()
    prepared = np.stack([predictor.prepare(p).input for p in photos])
    expected_x = reference_input(prepared)
    assert torch.equal(x, expected_x)
    with torch.no_grad():
        expected_y = network(expected_x)
    assert torch.equal(y, expected_y)


def test_pose_feeds_its_network_the_reference_input(shared, one_thread):
    from sapiens2.tasks.pose import Pose

    network = sapiens2.load(shared / "fixtures" / "pose_tiny" / "weights.safetensors").eval()
    recorder = Recorder(network)
    recorder.decode_head = network.decode_head  # what Pose reads its keypoint count from
    pose = Pose(recorder, detector=None, input_size=(256, 192), flip_test=False)
    crops = np.stack([random_photo(256, 192, seed=s) for s in range(2)])
    with torch.no_grad():
        heat = pose.heatmaps(crops)

    (x, y), = recorder.calls
    assert x.is_contiguous()
    expected_x = reference_input(crops)
    assert torch.equal(x, expected_x)
    with torch.no_grad():
        assert torch.equal(y, network(expected_x))
    assert np.array_equal(heat, y.numpy())
