"""Prune with fair_pruner, then fine-tune the pruned module with your own PyTorch loop under
DistributedDataParallel: the Python user's replacement for the `finetune.py` that
`fair-pruner prune` exports.

    python crates/python/examples/finetune_ddp.py [--world-size 2] [--epochs 4]

Runs on the CPU with the gloo backend: `torch.multiprocessing.spawn` starts one process per
rank on this machine. On GPUs the loop is the same under `torchrun --nproc-per-node N`: take
the rank from the environment (`LOCAL_RANK`), use the "nccl" backend and move the module and
batches to `cuda:LOCAL_RANK` (the README shows that version). The data are small synthetic class-structured images, so
the example runs in seconds; put your own `Dataset` in their place.

It checks what it claims and exits with an error otherwise. The meaningful check is that the
training loss of the pruned module goes down: the pruned module trains under DDP. It also
checks that every rank ends with the same parameters, but that is close to guaranteed by DDP
itself (it broadcasts rank 0's parameters when wrapping the module and averages the
gradients in every step, so the replicas stay equal): it is a sanity check of the setup (one
module per rank, the same optimizer everywhere), not evidence that the pruned module works.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import fair_pruner as fp


class Net(nn.Module):
    """A small CNN: two conv-BatchNorm-ReLU blocks and a linear head."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def synthetic(n: int, classes: int = 4, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random images whose pixels each class shifts by its own offset, and their labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, size, size, generator=g) + (y.view(-1, 1, 1, 1).float() - classes / 2) * 0.5
    return x, y


def mean_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy of ``net`` (in eval mode) over all of ``(x, y)``."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        loss = F.cross_entropy(net(x), y).item()
    net.train(was_training)
    return loss


def free_port() -> int:
    """A TCP port that is free on this machine now (for the process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fine_tune(rank: int, world_size: int, pruned_path: str, epochs: int) -> dict:
    """One rank's fine-tuning under DDP on its shard of the data: the losses before and
    after, and whether every rank ended with the same parameters."""
    torch.manual_seed(rank)
    x, y = synthetic(512, seed=1)
    # `fp.load` rebuilds the pruned module (its generated class and weights) in this process.
    module = fp.load(pruned_path)
    before = mean_loss(module, x, y)
    net = DDP(module)
    data = TensorDataset(x, y)
    sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=32, sampler=sampler)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    net.train()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()  # DDP all-reduces (averages) the gradients here
            opt.step()
            sched.step()
    after = mean_loss(net.module, x, y)
    # Every rank's parameters, flattened, gathered on every rank: they must be equal.
    flat = torch.cat([p.detach().flatten() for p in net.module.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(gathered, flat)
    equal = all(torch.equal(gathered[0], g) for g in gathered)
    # Your own run would save `net.module.state_dict()` here (rank 0 only).
    return {"before": before, "after": after, "equal": equal}


def train(rank: int, world_size: int, port: int, pruned_path: str, result_path: str, epochs: int) -> None:
    """One rank: joins the process group, fine-tunes, and leaves the group only after the
    DDP wrapper is gone. Rank 0 writes the losses."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)  # the ranks share this machine's cores
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        out = fine_tune(rank, world_size, pruned_path, epochs)
        if rank == 0:
            Path(result_path).write_text(json.dumps(out))
    finally:
        # The DDP wrapper holds the process group; if it outlived destroy_process_group, the
        # group's threads would be torn down at interpreter exit and abort the process
        # (seen with gloo on torch 2.11). Collect it first.
        gc.collect()
        dist.destroy_process_group()
    # All work is done and the group is gone: leave without the interpreter's teardown, where
    # libtorch's static destructors after a gloo group can still abort the rank (seen again
    # under load; `finetune.py` leaves a distributed run the same way). Errors above still
    # propagate, so `mp.spawn` reports them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world-size", type=int, default=2, help="processes (ranks)")
    ap.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs")
    args = ap.parse_args()
    if sys.platform.startswith("linux") and os.path.exists("/sys/class/net/lo"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep the rendezvous on loopback

    torch.manual_seed(0)
    model = Net()
    x, y = synthetic(128, seed=0)
    # Prune half the MACs; finetune=None returns the module right after surgery.
    result = fp.prune(model, x[:1], calibration=(x, y), target_macs=0.5, finetune=None)
    achieved = result.report["results"][0]["achieved"]["macs"]
    print(f"pruned: {100 * achieved:.1f}% of MACs removed")

    with tempfile.TemporaryDirectory() as tmp:
        pruned_path = os.path.join(tmp, "pruned.pt")
        result_path = os.path.join(tmp, "result.json")
        fp.save(result.model, pruned_path)  # one file every rank loads
        mp.spawn(
            train,
            args=(args.world_size, free_port(), pruned_path, result_path, args.epochs),
            nprocs=args.world_size,
            join=True,
        )
        out = json.loads(Path(result_path).read_text())

    print(f"training loss: {out['before']:.4f} before fine-tuning, {out['after']:.4f} after")
    print(f"parameters equal on all {args.world_size} ranks: {out['equal']}")
    if not out["after"] < out["before"]:
        sys.exit("error: the loss did not go down")
    if not out["equal"]:
        sys.exit("error: the ranks ended with different parameters")
    print(json.dumps({"macs_removed": achieved, **out}))


if __name__ == "__main__":
    main()
