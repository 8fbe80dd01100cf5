"""Plain-PyTorch side of `cargo xtask bench latency`: exported models timed interleaved in eager
PyTorch, as a user who runs the export's `model.py` would time them.

Usage:
  python pytorch_timing.py BATCH THREADS CxHxW MODEL [MODEL ...]

MODEL is a directory written by fair-pruner (`model.py` and `model.safetensors`; `load()` of
its `model.py` builds it) or `torchvision:NAME` (torchvision's NAME, random weights: latency
does not depend on their values). Every model gets one random input of shape CxHxW (the
models' per-sample input) at batch BATCH, float32, on the CPU, with THREADS intra-op
threads (torch.set_num_threads), under torch.inference_mode().

Schedule (fair-pruner's own, `fair_pipeline::measure`): 3 untimed passes per model, then
rounds in which every model runs once in an order rotating by one each round; at least 7
rounds, then more until 2 seconds have passed, at most 50. The first MODEL is the reference.
Prints one JSON line: {"threads", "batch", "input", "torch", "models": [{"model", "ms":
{"median","q1","q3"}, "speedup": {...} (round by round, reference / model; absent for the
reference), "rounds", "round_ms" (each round's milliseconds, in order)}]}. Quartiles interpolate linearly (numpy.percentile's default).
"""
import importlib.util
import json
import sys
import time


def quantiles(values):
    v = sorted(values)
    def at(p):
        x = p * (len(v) - 1)
        lo = int(x)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (x - lo)
    return {"median": at(0.5), "q1": at(0.25), "q3": at(0.75)}


def load(spec, index):
    import torch
    if spec.startswith("torchvision:"):
        import torchvision
        return torchvision.models.get_model(spec.split(":", 1)[1], weights=None).eval()
    module_spec = importlib.util.spec_from_file_location(f"exported_{index}", f"{spec}/model.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.load(f"{spec}/model.safetensors")


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    import torch
    batch, threads, specs = int(argv[0]), int(argv[1]), argv[3:]
    shape = [int(d) for d in argv[2].split("x")]
    torch.set_num_threads(threads)
    models = [load(s, i) for i, s in enumerate(specs)]
    x = torch.randn([batch] + shape)
    times = [[] for _ in models]
    with torch.inference_mode():
        for m in models:
            for _ in range(3):
                m(x)
        start = time.perf_counter()
        r = 0
        while r < 50 and (r < 7 or time.perf_counter() - start < 2.0):
            for k in range(len(models)):
                i = (k + r) % len(models)
                t = time.perf_counter()
                models[i](x)
                times[i].append((time.perf_counter() - t) * 1e3)
            r += 1
    out = []
    for i, s in enumerate(specs):
        entry = {"model": s, "ms": quantiles(times[i]), "rounds": len(times[i]),
                 "round_ms": times[i]}
        if i > 0:
            entry["speedup"] = quantiles([a / b for a, b in zip(times[0], times[i])])
        out.append(entry)
    print(json.dumps({"threads": threads, "batch": batch, "input": shape,
                      "torch": torch.__version__, "models": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
