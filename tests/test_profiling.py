"""The one measuring module: operation counts against the hand count, interleaved timing, devices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hnd_lightning.profiling import count_macs, machine_description, median_latencies_ms, resolve_device


def test_count_macs_matches_the_hand_count_of_convolutions_and_linear_layers():
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=True),  # bias additions are not multiply-accumulates
        nn.BatchNorm2d(8),
        nn.ReLU(),  # element-wise: not counted
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4),  # grouped: 2 input channels per output channel
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 10),
    ).eval()
    hand = 8 * 8 * 8 * 3 * 9 + 8 * 4 * 4 * 2 * 9 + 10 * 8 * 2 * 2
    # per image: a batch of 5 counts the same as one image
    assert count_macs(module, torch.zeros(5, 3, 8, 8)) == count_macs(module, torch.zeros(1, 3, 8, 8)) == hand


def test_count_macs_counts_matrix_products_outside_layers():
    class Gram(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, L) -> (N, C, C)
            return torch.bmm(x, x.transpose(1, 2))

    assert count_macs(Gram(), torch.zeros(3, 4, 6)) == 4 * 4 * 6


def test_median_latencies_take_turns_after_warmup():
    order = []

    class Recorder(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            order.append(self.name)
            return x

    calls = {name: (Recorder(name), (torch.zeros(1),)) for name in ("a", "b")}
    milliseconds = median_latencies_ms(calls, warmup=2, repeats=3, device=torch.device("cpu"))
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(milliseconds) == {"a", "b"}


def test_resolve_device_names_the_allowed_values():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="Unknown device 'tpu'.*auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is visible"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")


def test_machine_description_names_device_and_threads():
    torch.set_num_threads(1)
    machine = machine_description(torch.device("cpu"))
    assert machine["device"] == "cpu" and machine["torch_threads"] == 1 and machine["torch"] == torch.__version__
    assert machine["device_name"] == machine["processor"] and machine["device_name"]
