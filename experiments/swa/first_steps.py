"""The first 12 SGD steps of experiment=swa's network at the paper's lr 0.1 (momentum 0.9, weight decay 3e-4, batch
128) on synthetic CIFAR-shaped data (10 class prototypes + noise): our post-activation ResNet-164 blows up, the
paper's pre-activation PreResNet-164 (model=preresnet) does not. A plain torch loop, one thread, ~3 min on a CPU.

    python experiments/swa/first_steps.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ablate.models import PreResNet, ResNet


def first_losses(factory: type[torch.nn.Module], steps: int = 12, batch: int = 128, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    prototypes = torch.randn(10, 3, 32, 32)
    model = factory((3, 32, 32), 10, depth=164)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    losses = []
    for _ in range(steps):
        y = torch.randint(0, 10, (batch,))
        x = prototypes[y] + 1.05 * torch.randn(batch, 3, 32, 32)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 2))
    return losses


if __name__ == "__main__":
    torch.set_num_threads(1)
    for factory in (ResNet, PreResNet):
        params = sum(p.numel() for p in factory((3, 32, 32), 10, depth=164).parameters())
        print(f"{factory.__name__}-164 ({params / 1e6:.2f} M parameters): {first_losses(factory)}", flush=True)
