# fair-pruner's eager-PyTorch timing helper (embedded in the binary), the `pytorch-cpu`
# runtime's counterpart of ort_timing.py with the same protocol. fair-pruner writes it into a
# private temporary directory and runs `python3 torch_timing.py` there (the directory is the
# working directory, so nothing of the user's current directory is imported).
#
# One long-lived process driven over stdin/stdout, one JSON object per line:
# - on start it prints {"torch": version} (exit status 3, the reason on stderr, when torch
#   or safetensors cannot be imported);
# - {"op": "load", "threads": t, "batch": b, "input": [per-sample shape],
#    "models": [directory names, relative to the working directory]} loads a set of models
#   (each directory holds a `model.py` and `model.safetensors` as fair-pruner exports them;
#   model i of the set is `load()` of models[i]'s `model.py`; modules of the previous set
#   not named again are dropped), sets torch's intra-op threads to t, draws one random
#   input and runs each model once on it; answers {"loaded": n, "first_ms": [milliseconds
#   of each model's first run]};
# - {"op": "run", "model": i, "passes": n} runs model i of the set n times on that input
#   under torch.inference_mode(); answers {"ms": [milliseconds of each pass]};
# - end of input: exits.
# An error answers {"error": text} and, when it concerns a model, "model": its index.
# fair-pruner decides the schedule and summarises the times; the helper only loads and times.
import importlib.util
import json
import sys
import time

try:
    import safetensors  # noqa: F401  (model.py's load() reads the weights with it)
    import torch
except Exception as e:  # ImportError, or a broken installation
    sys.stderr.write("cannot import torch and safetensors: %s: %s\n" % (type(e).__name__, e))
    sys.exit(3)


def answer(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


answer({"torch": torch.__version__})

loaded = {}  # directory name -> module, for the current set
models = []  # the current set's modules, by index
inputs = []  # their inputs
generator = torch.Generator().manual_seed(0)


def build(directory):
    spec = importlib.util.spec_from_file_location("fair_pruner_export_" + directory,
                                                  directory + "/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(directory + "/model.safetensors")


def load(request):
    global loaded, models, inputs
    directories = request["models"]
    loaded = {d: m for d, m in loaded.items() if d in directories}
    models = []
    inputs = []
    torch.set_num_threads(int(request["threads"]))
    for i, d in enumerate(directories):
        if d not in loaded:
            try:
                loaded[d] = build(d)
            except Exception as e:
                return {"error": "%s: %s" % (type(e).__name__, e), "model": i}
        models.append(loaded[d])
    x = torch.randn([int(request["batch"])] + list(request["input"]), generator=generator)
    first = []
    with torch.inference_mode():
        for i, m in enumerate(models):
            t = time.perf_counter()
            try:
                m(x)  # a module that builds but cannot run fails here, not in timing
            except Exception as e:
                return {"error": "%s: %s" % (type(e).__name__, e), "model": i}
            first.append((time.perf_counter() - t) * 1e3)
            inputs.append(x)
    return {"loaded": len(models), "first_ms": first}


def run(request):
    i = int(request["model"])
    if not 0 <= i < len(models):
        return {"error": "no model %d in the loaded set of %d" % (i, len(models))}
    m, x = models[i], inputs[i]
    ms = []
    with torch.inference_mode():
        for _ in range(int(request.get("passes", 1))):
            t = time.perf_counter()
            try:
                m(x)
            except Exception as e:
                return {"error": "%s: %s" % (type(e).__name__, e), "model": i}
            ms.append((time.perf_counter() - t) * 1e3)
    return {"ms": ms}


for line in sys.stdin:
    if not line.strip():
        continue
    try:
        request = json.loads(line)
        op = request.get("op")
        if op == "load":
            result = load(request)
        elif op == "run":
            result = run(request)
        else:
            result = {"error": "unknown request %r" % (op,)}
    except Exception as e:
        result = {"error": "%s: %s" % (type(e).__name__, e)}
    answer(result)
