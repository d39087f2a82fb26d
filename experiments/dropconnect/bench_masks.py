"""ms per training step of the 784-800-800-10 net (batch 128, 1 torch thread): no DropConnect, one mask per
mini-batch, one mask per example. Run: OMP_NUM_THREADS=1 python experiments/dropconnect/bench_masks.py"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from torch import nn

from ablate.layers.dropconnect_convert import convert_to_dropconnect


def net(masks: str) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 800), nn.ReLU(), nn.Linear(800, 800), nn.ReLU(), nn.Linear(800, 10))
    if masks != "none":
        convert_to_dropconnect(model, 0.5, per_sample=masks == "example")
    return model.train()


def ms_per_step(masks: str, steps: int) -> list[float]:
    model = net(masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    times = []
    for i in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            times.append(1000 * (time.perf_counter() - start))
    return times


if __name__ == "__main__":
    torch.set_num_threads(1)
    for masks in sys.argv[1:] or ["none", "batch", "example"]:
        t = ms_per_step(masks, 10 if masks == "example" else 100)
        print(f"{masks:8s} median {statistics.median(t):9.1f} ms/step   min {min(t):9.1f}", flush=True)
