#!/usr/bin/env python3
"""Fine-tune this exported fair-pruner model with PyTorch DDP (torchrun-ready).

Written by fair-pruner next to model.py, model.safetensors and finetune.json. The settings
(data source, input transform, input shape, classes, epochs, learning rate, batch size) come
from finetune.json, so the common case needs no flags:

    python -m torch.distributed.run --standalone --nproc_per_node 8 finetune.py
    torchrun --nnodes 2 --node_rank 0 --master_addr host0 --master_port 29500 \\
             --nproc_per_node 8 finetune.py --epochs 90        # multi-node: once per node
    python finetune.py                                         # one process, no torchrun

Backend: NCCL when CUDA is available, gloo on CPU. torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) sets up the process group; without it the
script runs as a single process. `--batch-size` is the global batch (split over the
processes). On CUDA the forward pass runs under autocast (float16 with a gradient scaler;
`--no-amp` turns it off). The learning rate follows the recorded schedule per step (cosine
by default); the loss is cross-entropy with `--label-smoothing`, plus, with `--teacher DIR`
(a directory holding model.py and model.safetensors, e.g. the unpruned model),
`--distill-weight` × T² × KL(teacher ‖ student) at temperature T (`--distill-temperature`).
The optimizer is finetune.json's "optimizer", as fair-train's: "sgd" (the default: momentum
and L2 weight decay) or "adamw" (torch.optim.AdamW, betas 0.9 and 0.999, eps 1e-8, decoupled
weight decay; momentum unused).

Outputs, in `--out` (default `finetune/` next to this script), written by rank 0 and always
atomically (temporary name, then rename):
- checkpoint.pt after every epoch (model, optimiser, gradient scaler, epoch, step, history,
  the learning-rate schedule's position, and every process's random state: the global torch
  generator, the augmentation generator, CUDA's generator on CUDA, Python's `random`);
- finetuned.safetensors: the weights with the same keys and dtypes as model.safetensors, so
  fair-pruner loads them back (`--weights`);
- result.json: epochs done, steps, the optimizer, train loss and learning rate per epoch,
  test top-1 and loss, wall time.

Resuming (`--resume [CHECKPOINT]`, default OUT/checkpoint.pt): rank 0 reads the checkpoint
and broadcasts it, so on several nodes only rank 0's node needs the file. Epochs, optimiser
steps, momentum, the data order and the random state carry on: with the same `--epochs` and
number of processes, an interrupted run resumed ends as the uninterrupted run would have
(`--stop-after E` ends a run after epoch E on purpose, e.g. to fit a queue's time limit).
`--epochs` defaults to the checkpoint's total. The learning rate never jumps on resume: a
cosine schedule whose total changes (`--epochs 120` after a 90-epoch run) continues from the
rate it had reached and decays to 0 over the new total (a finished cosine run has reached 0,
so extending it this way trains at ~0); `--reset-schedule` instead starts the schedule afresh
at `--lr` from the resumed epoch (a warm restart, what extending a finished run wants).

Data sources (finetune.json "data", or --data-source with --data-path / --train-data /
--test-data):
- fair: files in fair-pruner's dataset format (safetensors with `pixels` u8 [N, C, H, W],
  `labels` i64 [N] and metadata), e.g. the splits `prune --finetune-with torchrun` writes;
- cifar10 / cifar100: the extracted binary directory (data_batch_*.bin / test_batch.bin,
  train.bin / test.bin with fine labels);
- idx: a directory with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
  t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz];
- folder: ImageFolder trees (one sub-directory per class) read with torchvision as
  fair-pruner's ImageFolder reads them: PIL's convert('L') or ('RGB') to the model's
  channels; evaluation resize of the shorter side to the recorded `resize` (default
  round(min(H, W)·256/224)) then centre crop to the input size; training the same unless the
  transform records an augmentation, then RandomResizedCrop to the input size (scale
  0.08–1, ratio 3/4–4/3), plus a horizontal flip only when the augmentation's `flip` is set.
The byte sources (fair, cifar, idx) go through fair-pruner's own transform, step for step:
grey → RGB when the model wants 3 channels, scale to [0, 1], centred zero padding (or
bilinear resize when the image is larger) to the input size, per-channel normalisation,
then for training the recorded random crop (zero padding) and flip.
"""
import faulthandler
faulthandler.enable(all_threads=True)
import argparse
import gzip
import importlib.util
import json
import math
import os
import random
import struct
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
RESULT_FORMAT = 1


# ----------------------------------------------------------------------------- utilities


def log(msg):
    if rank() == 0:
        print(f"[finetune] {msg}", file=sys.stderr, flush=True)


def rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def atomic_write(path, write):
    """Calls write(tmp_path), then renames the temporary file onto path."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_module(directory, name):
    """Imports directory/model.py under a unique module name."""
    path = os.path.join(directory, "model.py")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise SystemExit(f"no model.py in {directory}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolve(path, base):
    if path is None:
        return None
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


# ----------------------------------------------------------------------------- data


def read_maybe_gz(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def load_fair(path):
    """A dataset file in fair-pruner's format: (pixels u8 [N, C, H, W], labels i64 [N])."""
    from safetensors.torch import load_file

    t = load_file(path)
    pixels, labels = t["pixels"], t["labels"]
    if pixels.dtype != torch.uint8 or pixels.dim() != 4 or labels.dtype != torch.int64:
        raise SystemExit(f"{path}: expected pixels u8 [N, C, H, W] and labels i64 [N]")
    return pixels, labels


def load_cifar(directory, hundred, train):
    if hundred:
        files, label_bytes = (["train.bin"] if train else ["test.bin"]), 2
    else:
        files = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
        label_bytes = 1
    record = label_bytes + 3072
    pixels, labels = [], []
    for name in files:
        raw = read_maybe_gz(os.path.join(directory, name))
        if len(raw) % record:
            raise SystemExit(f"{name}: {len(raw)} bytes is not a whole number of {record}-byte records")
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, record)
        labels.append(t[:, label_bytes - 1].to(torch.int64))  # CIFAR-100: the fine label
        pixels.append(t[:, label_bytes:].reshape(-1, 3, 32, 32))
    return torch.cat(pixels), torch.cat(labels)


def load_idx(directory, train):
    def find(stem):
        for p in (os.path.join(directory, stem), os.path.join(directory, stem + ".gz")):
            if os.path.exists(p):
                return p
        raise SystemExit(f"no {stem}[.gz] in {directory}")

    prefix = "train" if train else "t10k"
    img = read_maybe_gz(find(f"{prefix}-images-idx3-ubyte"))
    lab = read_maybe_gz(find(f"{prefix}-labels-idx1-ubyte"))
    magic, n, h, w = struct.unpack(">IIII", img[:16])
    if magic != 0x0803 or struct.unpack(">I", lab[:4])[0] != 0x0801:
        raise SystemExit(f"{directory}: not IDX image/label files")
    pixels = torch.frombuffer(bytearray(img[16 : 16 + n * h * w]), dtype=torch.uint8).view(n, 1, h, w)
    labels = torch.frombuffer(bytearray(lab[8 : 8 + n]), dtype=torch.uint8).to(torch.int64)
    return pixels, labels


class Bytes(torch.utils.data.Dataset):
    """Images as u8 [C, H, W]; the transform runs per batch (ByteTransform)."""

    def __init__(self, pixels, labels):
        self.pixels, self.labels = pixels, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.pixels[i], self.labels[i]


class ByteTransform:
    """fair-pruner's Transform (crates/data/src/transform.rs), batch-wise on the device."""

    def __init__(self, spec, input_shape):
        self.c, self.h, self.w = input_shape
        self.mean = torch.tensor(per_channel(spec.get("mean", [0.0]), self.c)).view(1, -1, 1, 1)
        self.std = torch.tensor(per_channel(spec.get("std", [1.0]), self.c)).view(1, -1, 1, 1)
        augment = spec.get("augment") or {}
        self.crop_padding = int(augment.get("crop_padding", 0))
        self.flip = bool(augment.get("flip", False))

    def __call__(self, x, train, generator=None):
        x = x.float() / 255.0
        b, dc, dh, dw = x.shape
        if dc == 1 and self.c == 3:
            x = x.expand(b, 3, dh, dw).contiguous()
        elif dc != self.c:
            raise SystemExit(f"the data has {dc}-channel images but the model expects {self.c}")
        if (dh, dw) != (self.h, self.w):
            if self.h >= dh and self.w >= dw:
                top, left = (self.h - dh) // 2, (self.w - dw) // 2
                x = F.pad(x, (left, self.w - dw - left, top, self.h - dh - top))
            else:
                x = F.interpolate(x, size=(self.h, self.w), mode="bilinear", align_corners=False)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if train and (self.crop_padding or self.flip):
            x = self.augment(x, generator)
        return x

    def augment(self, x, g):
        p = self.crop_padding
        b, _, h, w = x.shape
        padded = F.pad(x, (p, p, p, p)) if p else x
        out = []
        for i in range(b):
            img = padded[i]
            if p:
                dy, dx = (int(v) for v in torch.randint(0, 2 * p + 1, (2,), generator=g))
                img = img[:, dy : dy + h, dx : dx + w]
            if self.flip and torch.rand((), generator=g) < 0.5:
                img = img.flip(2)
            out.append(img)
        return torch.stack(out)


def per_channel(values, c):
    values = [float(v) for v in values]
    return values * c if len(values) == 1 else values


class Convert:
    """PIL's Image.convert(mode) (picklable, for data loader workers)."""

    def __init__(self, mode):
        self.mode = mode

    def __call__(self, im):
        return im.convert(self.mode)


def folder_sets(train_dir, test_dir, spec, input_shape):
    """fair-pruner's ImageFolder (crates/data/src/folder.rs) in torchvision: evaluation resize +
    centre crop; training the same, or with an augmentation RandomResizedCrop (+ flip)."""
    from torchvision import datasets, transforms

    c, h, w = input_shape
    convert = Convert("RGB" if c == 3 else "L")  # 'L': ITU-R 601-2 luma, as fair-pruner
    norm = transforms.Normalize(per_channel(spec.get("mean", [0.0]), c), per_channel(spec.get("std", [1.0]), c))
    resize = spec.get("resize") or round(min(h, w) * 256 / 224)
    eval_t = transforms.Compose([convert, transforms.Resize(resize), transforms.CenterCrop((h, w)), transforms.ToTensor(), norm])
    augment = spec.get("augment")
    if augment is None:
        train_t = eval_t
    else:
        steps = [convert, transforms.RandomResizedCrop((h, w), scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0))]
        if augment.get("flip", False):
            steps.append(transforms.RandomHorizontalFlip())
        train_t = transforms.Compose(steps + [transforms.ToTensor(), norm])
    return datasets.ImageFolder(train_dir, train_t), datasets.ImageFolder(test_dir, eval_t)


def subset(ds, limit, seed):
    """The first `limit` of a seeded permutation (in index order), or all of ds."""
    if not limit or limit >= len(ds):
        return ds
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:limit].sort().values.tolist()
    return torch.utils.data.Subset(ds, idx)


SOURCES = ("fair", "cifar10", "cifar100", "idx", "folder")
FLAGS = {"path": "--data-path", "train": "--train-data", "test": "--test-data"}


def data_config(args, cfg):
    """(source, data, base directory) from the flags over finetune.json, every path a source
    needs present; a missing one ends the run with the flag that gives it."""
    from_flags = bool(args.data_source)
    if from_flags:  # the flags replace the recorded source; relative to the working directory
        data, base = {"source": args.data_source}, os.getcwd()
    else:
        data, base = dict(cfg.get("data") or {}), args.config_dir
    for key, flag in (("path", args.data_path), ("train", args.train_data), ("test", args.test_data)):
        if flag:
            data[key] = os.path.abspath(flag)
    source = data.get("source")
    if not source:
        raise SystemExit(
            "no data source: finetune.json records none; give --data-source fair --train-data FILE --test-data FILE, "
            "--data-source cifar10|cifar100|idx --data-path DIR, or --data-source folder --data-path DIR "
            "(holding train/ and test/) or --train-data DIR --test-data DIR"
        )
    if source not in SOURCES:
        raise SystemExit(f"unknown data source '{source}' (expected {', '.join(SOURCES)})")

    def missing(key, what, alternative=""):
        where = f"--data-source {source}" if from_flags else f"the data source '{source}' of {args.config}"
        raise SystemExit(f"{where} needs {FLAGS[key]} ({what}){alternative}")

    if source == "folder":
        for key, what in (("train", "the training tree"), ("test", "the test tree")):
            if not data.get(key) and not data.get("path"):
                missing(key, what, f", or --data-path DIR holding {key}/")
    elif source == "fair":
        for key, what in (("train", "the training file"), ("test", "the test file")):
            if not data.get(key):
                missing(key, what)
    elif not data.get("path"):
        missing("path", "the directory of the files")
    return source, data, base


def build_data(source, data, base, spec, input_shape):
    """(train set, test set, batch transform or None) of a checked data_config."""
    if source == "folder":
        train_dir = resolve(data.get("train") or os.path.join(data["path"], "train"), base)
        test_dir = resolve(data.get("test") or os.path.join(data["path"], "test"), base)
        tr, te = folder_sets(train_dir, test_dir, spec, input_shape)
        return tr, te, None
    if source == "fair":
        tr = Bytes(*load_fair(resolve(data["train"], base)))
        te = Bytes(*load_fair(resolve(data["test"], base)))
    elif source in ("cifar10", "cifar100"):
        d = resolve(data["path"], base)
        tr = Bytes(*load_cifar(d, source == "cifar100", True))
        te = Bytes(*load_cifar(d, source == "cifar100", False))
    else:  # idx
        d = resolve(data["path"], base)
        tr, te = Bytes(*load_idx(d, True)), Bytes(*load_idx(d, False))
    return tr, te, ByteTransform(spec, input_shape)


# ----------------------------------------------------------------------------- training


def lr_at(schedule, base, epoch, step, steps_per_epoch, segment):
    """The learning rate of `step` in `epoch`. segment: {"epochs": the schedule's total,
    "start": the epoch it (re)started at, "scale": its starting rate / base}; a fresh run's is
    {"epochs": epochs, "start": 0, "scale": 1.0}."""
    kind = schedule.get("kind", "cosine")
    if kind == "constant":
        return base
    start, lr0 = segment["start"], base * segment["scale"]
    if kind == "step":
        return lr0 * schedule["gamma"] ** ((epoch - start) // schedule["every"])
    total = max(1, (segment["epochs"] - start) * steps_per_epoch)
    done = min(total, (epoch - start) * steps_per_epoch + step)
    return 0.5 * lr0 * (1.0 + math.cos(math.pi * done / total))


def resumed_segment(schedule, base, ckpt, epochs, start_epoch, steps_per_epoch, reset):
    """The schedule segment of a resumed run: the checkpoint's while its total stands; a new
    cosine tail from the rate reached when the total changes; a fresh start with `reset`."""
    if reset:
        return {"epochs": epochs, "start": start_epoch, "scale": 1.0}
    old = ckpt.get("schedule") or {"epochs": epochs, "start": 0, "scale": 1.0}
    if schedule.get("kind", "cosine") != "cosine" or old["epochs"] == epochs:
        return dict(old, epochs=epochs)
    reached = lr_at(schedule, base, start_epoch, 0, steps_per_epoch, old)
    if reached < 1e-3 * base:
        log(
            f"the cosine schedule had reached {reached:.3g} (its total was {old['epochs']} epochs): "
            "the added epochs train at about that rate; --reset-schedule restarts it at --lr"
        )
    return {"epochs": epochs, "start": start_epoch, "scale": reached / base if base else 0.0}


def rng_state(gen, cuda):
    """This process's random state: torch's global generator, the augmentation generator,
    CUDA's generator of this device, Python's random."""
    state = {"torch": torch.get_rng_state(), "augment": gen.get_state(), "python": random.getstate()}
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state, gen, cuda):
    torch.set_rng_state(state["torch"])
    gen.set_state(state["augment"])
    random.setstate(state["python"])
    if cuda and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"])


def all_rng_states(gen, cuda):
    """Every process's rng_state, by global rank (a collective: every rank calls it)."""
    mine = rng_state(gen, cuda)
    if world() == 1:
        return [mine]
    states = [None] * world()
    dist.all_gather_object(states, mine)
    return states


def load_checkpoint(path):
    """The checkpoint, read by rank 0 and broadcast to the others (only rank 0 writes it, so
    on several nodes only its node needs the file)."""
    box = [None]
    if rank() == 0:
        try:
            box[0] = torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as e:
            box[0] = {"error": f"cannot read the checkpoint {path}: {e}"}
    if world() > 1:
        dist.broadcast_object_list(box, src=0)
    if "error" in box[0]:
        raise SystemExit(box[0]["error"])
    return box[0]


def evaluate(net, test_set, transform, device, batch, amp, workers):
    """Top-1 and mean loss over test_set; each rank takes every world()-th sample."""
    net.eval()
    shard = torch.utils.data.Subset(test_set, list(range(rank(), len(test_set), world())))
    loader = torch.utils.data.DataLoader(shard, batch_size=batch, shuffle=False, num_workers=workers)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if transform is not None:
                x = transform(x, train=False)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = net(x)
            totals[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
            totals[1] += (logits.argmax(-1) == y).sum()
            totals[2] += len(y)
    if world() > 1:
        dist.all_reduce(totals)
    n = max(1.0, totals[2].item())
    return {"top1": totals[1].item() / n, "loss": totals[0].item() / n, "samples": int(totals[2].item())}


def save_weights(net, reference, path):
    """Writes net's state dict with the keys and dtypes of the reference safetensors file."""
    from safetensors.torch import load_file, save_file

    state = net.state_dict()
    ref = load_file(reference)
    out = {key: state[key].detach().to("cpu", t.dtype).contiguous() for key, t in ref.items()}
    atomic_write(path, lambda tmp: save_file(out, tmp, metadata={"written_by": "fair-pruner finetune.py"}))


OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(name, params, lr, momentum, weight_decay):
    """finetune.json's "optimizer", as fair-train builds it: "sgd" (momentum, L2 weight decay
    added to the gradient) or "adamw" (betas 0.9 and 0.999, eps 1e-8, decoupled weight decay;
    momentum unused)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(HERE, "finetune.json"), help="settings file [%(default)s]")
    p.add_argument("--weights", help="starting weights [model.safetensors next to this script]")
    p.add_argument("--out", help="output directory [finetune/ next to this script]")
    p.add_argument("--resume", nargs="?", const="", default=None, help="continue from a checkpoint [OUT/checkpoint.pt]")
    p.add_argument(
        "--reset-schedule", action="store_true", help="with --resume: restart the learning-rate schedule at --lr from the resumed epoch"
    )
    p.add_argument("--stop-after", type=int, help="end after this epoch (the schedule still spans --epochs; --resume continues)")
    p.add_argument("--data-source", help="fair, cifar10, cifar100, idx or folder (overrides finetune.json)")
    p.add_argument("--data-path", help="directory of a cifar or idx source, or of a folder source's train/ and test/")
    p.add_argument("--train-data", help="training file (fair) or directory (folder)")
    p.add_argument("--test-data", help="test file (fair) or directory (folder)")
    p.add_argument("--epochs", type=int, help="total epochs (a resumed run continues up to this) [finetune.json; the checkpoint's]")
    p.add_argument("--lr", type=float, help="base learning rate")
    p.add_argument("--batch-size", type=int, help="global batch size, split over the processes")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-steps", type=int, default=0, help="at most this many steps per epoch (0: all)")
    p.add_argument("--limit-train", type=int, default=0, help="use only this many training samples (0: all)")
    p.add_argument("--limit-test", type=int, default=0, help="evaluate on only this many test samples (0: all)")
    p.add_argument("--workers", type=int, default=None, help="data loader workers per process [0 for byte data; folders: min(8, CPUs)]")
    p.add_argument("--teacher", help="distil from the model in this directory (model.py + model.safetensors)")
    p.add_argument("--distill-temperature", type=float)
    p.add_argument("--distill-weight", type=float)
    p.add_argument("--no-amp", action="store_true", help="no autocast on CUDA")
    p.add_argument("--sync-bn", action="store_true", help="synchronise BatchNorm statistics across processes")
    p.add_argument("--device", choices=["cpu", "cuda"], help="cpu or cuda [cuda when available]")
    p.add_argument("--threads", type=int, help="CPU threads per process")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    with open(args.config) as f:
        cfg = json.load(f)
    args.config_dir = os.path.dirname(os.path.abspath(args.config))
    train_cfg = dict(cfg.get("train") or {})
    pick = lambda flag, key, default: flag if flag is not None else train_cfg.get(key, default)  # noqa: E731
    epochs = pick(args.epochs, "epochs", 1)
    base_lr = pick(args.lr, "lr", 0.01)
    batch = pick(args.batch_size, "batch_size", 128)
    momentum = pick(args.momentum, "momentum", 0.9)
    weight_decay = pick(args.weight_decay, "weight_decay", 5e-4)
    smoothing = pick(args.label_smoothing, "label_smoothing", 0.0)
    seed = pick(args.seed, "seed", 0)
    schedule = train_cfg.get("schedule") or {"kind": "cosine"}
    optimizer_name = train_cfg.get("optimizer", "sgd")
    if optimizer_name not in OPTIMIZERS:
        raise SystemExit(
            f"{args.config}: unknown optimizer {optimizer_name!r} in \"train\" (known: {', '.join(OPTIMIZERS)})"
        )
    input_shape = cfg["input"]
    if args.reset_schedule and args.resume is None:
        raise SystemExit("--reset-schedule restarts the schedule of a resumed run: give --resume too")
    data_source, data, data_base = data_config(args, cfg)  # before any work

    # Process group from torchrun's environment.
    cuda = torch.cuda.is_available() and args.device != "cpu"
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)  # before NCCL's process group
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if distributed:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = device.type == "cuda" and not args.no_amp
    torch.manual_seed(seed + rank())
    random.seed(seed + rank())

    out = resolve(args.out, os.getcwd()) if args.out else os.path.join(args.config_dir, "finetune")
    if rank() == 0:
        os.makedirs(out, exist_ok=True)
    weights = resolve(args.weights, os.getcwd()) if args.weights else os.path.join(args.config_dir, "model.safetensors")
    student = load_module(args.config_dir, "fair_pruner_student")
    net = student.load(weights, device="cpu").to(device)

    teacher_cfg = dict(cfg.get("teacher") or {})
    if args.teacher:
        teacher_cfg["path"] = resolve(args.teacher, os.getcwd())
    elif teacher_cfg.get("path"):
        teacher_cfg["path"] = resolve(teacher_cfg["path"], args.config_dir)
    teacher = None
    temperature = args.distill_temperature if args.distill_temperature is not None else teacher_cfg.get("temperature", 4.0)
    distill_weight = args.distill_weight if args.distill_weight is not None else teacher_cfg.get("weight", 0.5)
    if teacher_cfg.get("path"):
        tmod = load_module(teacher_cfg["path"], "fair_pruner_teacher")
        teacher = tmod.load(os.path.join(teacher_cfg["path"], "model.safetensors"), device="cpu").to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    train_set, test_set, transform = build_data(data_source, data, data_base, cfg.get("transform") or {}, input_shape)
    train_set = subset(train_set, args.limit_train, seed)
    test_set = subset(test_set, args.limit_test, seed)
    workers = args.workers if args.workers is not None else (0 if transform is not None else min(8, os.cpu_count() or 1))
    per_rank = max(1, batch // world())
    sampler = torch.utils.data.distributed.DistributedSampler(
        train_set, num_replicas=world(), rank=rank(), shuffle=True, seed=seed, drop_last=False
    )
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=per_rank, sampler=sampler, num_workers=workers, pin_memory=cuda, drop_last=False
    )
    steps_per_epoch = len(loader) if not args.max_steps else min(len(loader), args.max_steps)

    if args.sync_bn and distributed:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    optimizer = build_optimizer(optimizer_name, net.parameters(), base_lr, momentum, weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    gen = torch.Generator().manual_seed(seed * 1000 + rank())
    history, start_epoch, step, resumed = [], 0, 0, None
    segment = {"epochs": epochs, "start": 0, "scale": 1.0}
    if args.resume is not None:
        ckpt_path = resolve(args.resume, os.getcwd()) if args.resume else os.path.join(out, "checkpoint.pt")
        ckpt = load_checkpoint(ckpt_path)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        if args.epochs is None and ckpt.get("schedule"):
            epochs = ckpt["schedule"]["epochs"]
        segment = resumed_segment(schedule, base_lr, ckpt, epochs, start_epoch, steps_per_epoch, args.reset_schedule)
        states = ckpt.get("rng") or []
        if len(states) == world():
            set_rng_state(states[rank()], gen, cuda)
        else:
            log(f"the checkpoint holds the random state of {len(states)} process(es), not {world()}: it is not restored")
        resumed = {"checkpoint": ckpt_path, "epoch": start_epoch, "step": step}
        log(f"resumed from {ckpt_path}: epoch {start_epoch}, step {step}")
        del ckpt
    model = nn.parallel.DistributedDataParallel(net, device_ids=[local_rank] if cuda else None) if distributed else net
    end_epoch = epochs if args.stop_after is None else max(start_epoch, min(epochs, args.stop_after))

    log(
        f"{world()} process(es), backend {dist.get_backend() if distributed else 'none'}, device {device.type}, "
        f"amp {amp}, optimizer {optimizer_name}; {len(train_set)} train / {len(test_set)} test samples; epochs {start_epoch + 1}..{end_epoch} "
        f"of {epochs}, {steps_per_epoch} steps each, global batch {per_rank * world()}"
    )
    for epoch in range(start_epoch, end_epoch):
        model.train()
        sampler.set_epoch(epoch)
        t0 = time.time()
        first_lr = lr_at(schedule, base_lr, epoch, 0, steps_per_epoch, segment)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
        for i, (x, y) in enumerate(loader):
            if i >= steps_per_epoch:
                break
            for g in optimizer.param_groups:
                g["lr"] = lr_at(schedule, base_lr, epoch, i, steps_per_epoch, segment)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if transform is not None:
                x = transform(x, train=True, generator=gen)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x).float()
                    kd = F.kl_div(
                        F.log_softmax(logits.float() / temperature, -1),
                        F.log_softmax(t_logits / temperature, -1),
                        reduction="batchmean",
                        log_target=True,
                    )
                    loss = (1.0 - distill_weight) * loss + distill_weight * temperature**2 * kd
            if not torch.isfinite(loss):
                raise SystemExit(f"the training loss became {loss.item()} at epoch {epoch + 1}, step {i}: lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            loss_sum[0] += loss.detach().double() * len(y)
            loss_sum[1] += len(y)
        if distributed:
            dist.all_reduce(loss_sum)
        train_loss = loss_sum[0].item() / max(1.0, loss_sum[1].item())
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "lr": first_lr,
                "samples": int(loss_sum[1].item()),
                "seconds": time.time() - t0,
            }
        )
        log(
            f"epoch {epoch + 1}/{epochs}: train loss {train_loss:.4f}, lr {first_lr:.4g}, "
            f"{int(loss_sum[1].item())} samples, {time.time() - t0:.1f} s"
        )
        rng = all_rng_states(gen, cuda)  # every rank: a collective
        if rank() == 0:
            ckpt = {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "history": history,
                "schedule": segment,
                "rng": rng,
            }
            atomic_write(os.path.join(out, "checkpoint.pt"), lambda tmp: torch.save(ckpt, tmp))

    test = evaluate(net, test_set, transform, device, max(1, per_rank * 2), amp, workers)
    log(f"test top-1 {100 * test['top1']:.2f}% (loss {test['loss']:.4f}) on {test['samples']} samples")
    if rank() == 0:
        save_weights(net, weights, os.path.join(out, "finetuned.safetensors"))
        result = {
            "format": RESULT_FORMAT,
            "epochs": len(history) and history[-1]["epoch"],
            "steps": step,
            "world_size": world(),
            "backend": dist.get_backend() if distributed else None,
            "device": device.type,
            "amp": amp,
            "optimizer": optimizer_name,
            "train_loss": [h["train_loss"] for h in history],
            "history": history,
            "test": test,
            "resumed_from": resumed,
            "schedule": segment,
            "distill": {"teacher": teacher_cfg["path"], "temperature": temperature, "weight": distill_weight} if teacher else None,
            "weights": "finetuned.safetensors",
            "seconds": time.time() - started,
        }
        text = json.dumps(result, indent=2) + "\n"

        def write(tmp):
            with open(tmp, "w") as f:
                f.write(text)

        atomic_write(os.path.join(out, "result.json"), write)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Everything is written and the process group destroyed. libtorch's static destructors
        # can still abort at interpreter exit after a gloo group ("terminate called without an
        # active exception", SIGABRT, seen under CPU load), which torchrun reports as a failed
        # run: leave without running them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
