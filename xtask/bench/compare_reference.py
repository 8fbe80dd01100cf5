"""Reference side of `cargo xtask bench compare`: the authors' package and Torch-Pruning.

Usage:
  python compare_reference.py package MODEL_DIR CALIBRATION OUT_DIR ALPHA [ALPHA ...]
  python compare_reference.py torch-pruning MODEL_DIR OUT_DIR TARGET [TARGET ...]

MODEL_DIR is fair-pruner's export of the unpruned model (model.py, model.safetensors), so
both sides start from the same weights. Each writes, into OUT_DIR, one prune plan per setting
({"remove": {layer: [unit, ...]}}, the format of `fair-pruner apply --plan`) and a JSON
summary; fair-pruner then applies every plan with the same surgery, evaluation and
fine-tuning budget, so the methods differ only in what they choose to remove.

package:        network-pruner 2.16 `get_metrics` on the calibration samples (timed), then at
                every α `get_ratios`, `get_skeleton` and `prune` (public API only): the
                package's own counts, removal sets and residual alignment.
torch-pruning:  Torch-Pruning 1.6.1 MagnitudePruner, L1 importance, the same ratio in every
                layer (global_pruning=False), output layer ignored; the smallest ratio whose
                MACs reduction (Torch-Pruning's own counter) reaches each TARGET. Which units
                it kept is read back from the pruned weights.

Both read the kept units back from the pruned model: every output unit carries its bias and
following BatchNorm unchanged, matched exactly to one unit of the original.
"""
import copy
import importlib.util
import json
import os
import random
import sys
import time

import numpy
import torch
import torch.nn as nn
from safetensors.torch import load_file


def load_model(model_dir):
    spec = importlib.util.spec_from_file_location("exported_model", os.path.join(model_dir, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(os.path.join(model_dir, "model.safetensors"))


def prunable(model):
    """(name, module) of conv/linear layers in registration order, without the output layer."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return layers[:-1]


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


class CalibrationSet(torch.utils.data.TensorDataset):
    """A TensorDataset with the attributes the package reads to find the classes."""

    def __init__(self, x, y):
        super().__init__(x, y)
        self.targets = y.tolist()
        self.classes = [str(c) for c in sorted(set(self.targets))]


def package(model_dir, calibration, out, alphas):
    from Network_Pruner import FAIR_Pruner as fp

    # The package samples with torch, NumPy and Python's random: seed all three.
    torch.manual_seed(0)
    random.seed(0)
    numpy.random.seed(0)
    model = load_model(model_dir)
    # The package's R-Score passes run in training mode and would move the BatchNorm running
    # statistics; momentum 0 keeps them, so its pruned models and fair-pruner's applying of
    # its plans start from identical weights.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.0
    data = load_file(calibration)
    x, y = data["inputs"], data["labels"].long()
    loader = torch.utils.data.DataLoader(CalibrationSet(x, y), batch_size=64, shuffle=False)
    per_class = int(torch.bincount(y).min())
    start = time.perf_counter()
    results = fp.get_metrics(
        model, loader, device=torch.device("cpu"),
        the_samplesize_for_compute_distance=per_class,
        results_save_path=os.path.join(out, "package-results.pkl"),
    )
    seconds = time.perf_counter() - start
    original = signatures(model)
    example = x[:1]
    summary = {"seconds": seconds, "layers": list(original), "alphas": {}}
    for alpha in alphas:
        counts = fp.get_ratios(model, results, ToD_level=alpha)
        skeleton = fp.get_skeleton(copy.deepcopy(model), counts, example_inputs=example)
        pruned, _ = fp.prune(skeleton, model, results, counts, example_inputs=example,
                             pruned_model_save_path=os.path.join(out, "package-pruned.pht"),
                             device=torch.device("cpu"))
        key = f"{alpha:.4f}"
        write_json(os.path.join(out, f"package-{key}.json"), {"remove": removed_units(original, pruned)})
        summary["alphas"][key] = {
            "counts": counts,
            "params": sum(p.numel() for p in pruned.parameters()),
        }
    write_json(os.path.join(out, "package.json"), summary)


def signatures(model):
    """Per prunable layer: one tuple per output unit of its bias and the following
    BatchNorm's parameters and statistics (values surgery copies unchanged)."""
    modules = list(model.named_modules())
    index = {n: i for i, (n, _) in enumerate(modules)}
    out = {}
    for name, m in prunable(model):
        parts = []
        if m.bias is not None:
            parts.append(m.bias.detach())
        nxt = modules[index[name] + 1][1] if index[name] + 1 < len(modules) else None
        if isinstance(nxt, nn.BatchNorm2d):
            parts += [nxt.weight.detach(), nxt.bias.detach(), nxt.running_mean, nxt.running_var]
        if not parts:
            raise SystemExit(f"layer {name} has no bias and no BatchNorm: cannot read back its kept units")
        stacked = torch.stack(parts, dim=1)
        out[name] = [tuple(row.tolist()) for row in stacked]
    return out


def removed_units(original, pruned_model):
    """The units each layer of `pruned_model` lost, found by matching every kept unit's
    signature to exactly one unit of the original (signatures of the unpruned model)."""
    after = signatures(pruned_model)
    remove = {}
    for name, sigs in original.items():
        position = {}
        for i, s in enumerate(sigs):
            position.setdefault(s, []).append(i)
        kept = []
        for s in after[name]:
            found = position.get(s, [])
            if len(found) != 1:
                raise SystemExit(f"{name}: cannot match a kept unit to exactly one original unit")
            kept.append(found[0])
        removed = sorted(set(range(len(sigs))) - set(kept))
        if removed:
            remove[name] = removed
    return remove


def torch_pruning(model_dir, out, targets):
    import torch_pruning as tp

    base = load_model(model_dir)
    example = torch.randn(1, *base_input_shape(model_dir))
    macs0, params0 = tp.utils.count_ops_and_params(base, example)
    original = signatures(base)

    def pruned(ratio):
        model = copy.deepcopy(base)
        ignored = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1:]
        pruner = tp.pruner.MagnitudePruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio, ignored_layers=ignored, global_pruning=False)
        pruner.step()
        macs, params = tp.utils.count_ops_and_params(model, example)
        return model, macs, params

    summary = {"macs": macs0, "params": params0, "targets": {}}
    for target in targets:
        lo, hi = 0.0, 0.95
        best = None
        for _ in range(14):
            mid = (lo + hi) / 2
            model, macs, params = pruned(mid)
            if 1 - macs / macs0 >= target:
                best, hi = (mid, model, macs, params), mid
            else:
                lo = mid
        if best is None:
            raise SystemExit(f"Torch-Pruning cannot remove {target:.1%} of the MACs at ratio ≤ 0.95")
        ratio, model, macs, params = best
        remove = removed_units(original, model)
        key = f"{target:.4f}"
        write_json(os.path.join(out, f"torch-pruning-{key}.json"), {"remove": remove})
        summary["targets"][key] = {"ratio": ratio, "macs": macs, "params": params,
                                   "macs_removed": 1 - macs / macs0}
    write_json(os.path.join(out, "torch-pruning.json"), summary)


def base_input_shape(model_dir):
    """[C, H, W] from the export's model.toml (`input` node's shape)."""
    import re
    text = open(os.path.join(model_dir, "model.toml")).read()
    m = re.search(r"shape\s*=\s*\[([0-9,\s]+)\]", text)
    if not m:
        raise SystemExit(f"{model_dir}/model.toml has no input shape")
    return [int(v) for v in m.group(1).split(",") if v.strip()]


def main():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    kind = sys.argv[1]
    if kind == "package":
        package(sys.argv[2], sys.argv[3], sys.argv[4], [float(a) for a in sys.argv[5:]])
    elif kind == "torch-pruning":
        torch_pruning(sys.argv[2], sys.argv[3], [float(t) for t in sys.argv[4:]])
    else:
        raise SystemExit(f"unknown reference {kind}: expected package or torch-pruning")


if __name__ == "__main__":
    main()
