"""Model side of `cargo xtask bench latency`: torchvision models written to ONNX.

Usage:
  python latency_models.py export NAME SIZE OUT.onnx

export: builds torchvision's NAME (e.g. resnet50, vgg16_bn, mobilenet_v2) with random weights
        (seed 0; BatchNorm statistics and affine parameters randomised, as a trained network
        has them), exports it in eval mode with torch.onnx.export (TorchScript exporter, opset
        17, input 1x3xSIZExSIZE named `input`) to OUT.onnx (written to a temporary name first,
        then renamed) and prints one JSON line: {"name", "size", "params", "onnx_bytes"}.
        Latency does not depend on the weights' values; fair-pruner reads the ONNX file with
        `prune --graph OUT.onnx`.
"""
import json
import os
import sys
import warnings


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


def export(name, size, path):
    import torch
    import torchvision
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    randomise_batch_norm(model, generator)
    x = torch.randn(1, 3, size, size, generator=generator)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), partial, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
    os.replace(partial, path)
    print(json.dumps({"name": name, "size": size,
                      "params": sum(p.numel() for p in model.parameters()),
                      "onnx_bytes": os.path.getsize(path)}))


def main(argv):
    if len(argv) == 4 and argv[0] == "export":
        export(argv[1], int(argv[2]), argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
