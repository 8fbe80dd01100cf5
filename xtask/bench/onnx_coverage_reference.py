"""Reference side of `cargo xtask bench onnx-coverage`: torchvision exports and ONNX Runtime.

Usage:
  python onnx_coverage_reference.py list
  python onnx_coverage_reference.py export NAME OUT_DIR [--exporter ts|dynamo] [--size N]
  python onnx_coverage_reference.py check MODEL.onnx IO.safetensors

list:    prints the classification models of torchvision.models as a JSON list, each with its
         family and whether it is a CNN (transformers are listed as such).
export:  builds NAME with random weights (seed 0; BatchNorm statistics and affine parameters
         randomised so that folding them into the convolutions is exercised; in transformers
         LayerNorm affine parameters and every all-zero parameter, such as ViT's head, class
         token and attention biases, randomised so that the output is not zero), exports it with
         torch.onnx.export in eval mode at opset 17 (TorchScript exporter) or 18 (dynamo), runs
         ONNX Runtime on one seeded input and writes OUT_DIR/model.onnx,
         OUT_DIR/io.safetensors (input, output) and OUT_DIR/meta.json (PyTorch's parameter
         count, the PyTorch vs ONNX Runtime difference, seconds, or the error).
check:   runs onnx.checker and ONNX Runtime on MODEL.onnx with IO.safetensors' input and prints
         JSON with the largest difference from IO.safetensors' output (fair-pruner's output),
         relative to that output's scale (its largest magnitude).
"""
import json
import os
import sys
import time
import warnings

import numpy
from safetensors.numpy import load_file, save_file

TRANSFORMERS = ("vit_", "swin_", "maxvit_")


def family(name):
    for prefix in ("wide_resnet", "resnext", "resnet", "regnet_x", "regnet_y", "efficientnet_v2",
                   "efficientnet", "mobilenet_v2", "mobilenet_v3", "mnasnet", "shufflenet_v2",
                   "squeezenet", "densenet", "convnext", "vgg", "vit", "swin", "maxvit"):
        if name.startswith(prefix):
            return prefix
    return name


def list_models():
    import torchvision
    names = torchvision.models.list_models(module=torchvision.models)
    rows = [{"name": n, "family": family(n), "cnn": not n.startswith(TRANSFORMERS)} for n in names]
    print(json.dumps(rows))


def randomise_batch_norm(model, generator):
    import torch
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=generator))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))


def randomise_transformer(model, generator):
    """torchvision's transformers start with zero parameters (ViT's classification head,
    weight and bias, its class token, attention biases) and LayerNorms at the identity: the
    head alone makes every output zero, so nothing would be compared. Give LayerNorms random
    affine parameters and every all-zero parameter small random values."""
    import torch
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=generator))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))
        for p in model.parameters():
            if p.is_floating_point() and not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))


def export(name, out_dir, exporter, size):
    import torch
    import torchvision
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    os.makedirs(out_dir, exist_ok=True)
    meta = {"name": name, "exporter": exporter, "size": size}
    started = time.time()
    try:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
        randomise_batch_norm(model, generator)
        if name.startswith(TRANSFORMERS):
            randomise_transformer(model, generator)
        meta["params"] = sum(p.numel() for p in model.parameters())
        x = torch.randn(1, 3, size, size, generator=generator)
        with torch.no_grad():
            y_torch = model(x).numpy()
        path = os.path.join(out_dir, "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                torch.onnx.export(model, (x,), path, dynamo=True, opset_version=18,
                                  input_names=["input"], output_names=["output"], verbose=False)
            else:
                torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                                  input_names=["input"], output_names=["output"])
        import onnxruntime
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        y_ort = session.run(None, feed)[0]
        scale = float(numpy.abs(y_torch).max()) or 1.0
        meta["torch_vs_ort"] = float(numpy.abs(y_torch - y_ort).max()) / scale
        save_file({"input": x.numpy(), "output": y_ort}, os.path.join(out_dir, "io.safetensors"))
        meta["onnx_bytes"] = os.path.getsize(path)
    except Exception as e:  # reported in the table, never hidden
        meta["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    meta["seconds"] = round(time.time() - started, 2)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f)
    print(json.dumps(meta))


def check(model_path, io_path):
    import onnx
    import onnxruntime
    result = {}
    try:
        onnx.checker.check_model(onnx.load(model_path), full_check=True)
        result["checker"] = True
    except Exception as e:
        result["checker"] = False
        result["error"] = f"onnx.checker: {str(e).splitlines()[0][:300]}"
    try:
        io = load_file(io_path)
        session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        y = session.run(None, {session.get_inputs()[0].name: io["input"]})[0]
        ours = io["output"]
        if y.shape != ours.shape:
            raise ValueError(f"output shape {list(y.shape)} but fair-pruner's is {list(ours.shape)}")
        scale = float(numpy.abs(ours).max()) or 1.0
        result["max_rel_diff"] = float(numpy.abs(y - ours).max()) / scale
    except Exception as e:
        result.setdefault("error", f"onnxruntime: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    print(json.dumps(result))


def main():
    args = sys.argv[1:]
    if args[:1] == ["list"]:
        list_models()
    elif args[:1] == ["export"] and len(args) >= 3:
        exporter, size = "ts", 224
        rest = args[3:]
        while rest:
            flag, value, rest = rest[0], rest[1], rest[2:]
            if flag == "--exporter":
                exporter = value
            elif flag == "--size":
                size = int(value)
            else:
                raise SystemExit(f"unknown flag {flag}")
        export(args[1], args[2], exporter, size)
    elif args[:1] == ["check"] and len(args) == 3:
        check(args[1], args[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
