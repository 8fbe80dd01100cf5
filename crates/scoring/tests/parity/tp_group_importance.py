"""Torch-Pruning's group magnitude importance for fair-scoring's `group-l1`/`group-l2` test.

Usage: python tp_group_importance.py DIR

Loads DIR/model.py with DIR/model.safetensors (a fair-pruner export), builds Torch-Pruning's
dependency graph, and for every layer named in DIR/layers.json (a list) computes
GroupMagnitudeImportance(p, group_reduction="mean", normalizer=None) over the pruning group
of its output channels (features), for p = 1 and p = 2. Writes DIR/reference.json:
{"1": {layer: [score per unit]}, "2": {...}}.
"""
import importlib.util
import json
import sys

import torch
import torch_pruning as tp


def main(directory):
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("model", f"{directory}/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.load(f"{directory}/model.safetensors")
    net.eval()
    with open(f"{directory}/layers.json") as f:
        layers = json.load(f)
    with open(f"{directory}/input_shape.json") as f:
        shape = json.load(f)
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, *shape))
    out = {}
    for p in (1, 2):
        imp = tp.importance.GroupMagnitudeImportance(p=p, group_reduction="mean", normalizer=None)
        scores = {}
        for name in layers:
            layer = net.get_submodule(name)
            if isinstance(layer, torch.nn.Conv2d):
                fn, units = tp.prune_conv_out_channels, layer.out_channels
            else:
                fn, units = tp.prune_linear_out_channels, layer.out_features
            group = dg.get_pruning_group(layer, fn, idxs=list(range(units)))
            scores[name] = [float(v) for v in imp(group).double()]
        out[str(p)] = scores
    with open(f"{directory}/reference.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1])
