# fair-pruner's ONNX Runtime timing helper (embedded in the binary, run with `python3 FILE JOB`).
#
# JOB is a JSON file: {"threads", "batch", "warmup", "min_rounds", "max_rounds",
# "budget_seconds", "sets": [{"input": [per-sample shape], "models": [onnx paths]}]}.
# Each set's models are timed interleaved on the CPU execution provider, with the same
# schedule as fair-pruner's libtorch timing: warm-up passes for every model, then rounds in
# which every model runs once on the same random input, the order rotating by one each
# round, at least min_rounds and at most max_rounds, stopping after budget_seconds once
# min_rounds are done. Prints {"onnxruntime": version, "sets": [[[ms per round] per model]
# per set]} on stdout; fair-pruner takes the medians, IQRs and round-by-round speed-ups.
# Exit status 3 means onnxruntime or numpy cannot be imported (the reason on stderr).
import json
import sys
import time

try:
    import numpy as np
    import onnxruntime as ort
except Exception as e:  # ImportError, or a broken installation
    sys.stderr.write("cannot import onnxruntime and numpy: %s: %s\n" % (type(e).__name__, e))
    sys.exit(3)

if len(sys.argv) < 2:
    # A probe: the version only.
    print(json.dumps({"onnxruntime": ort.__version__}))
    sys.exit(0)

with open(sys.argv[1]) as f:
    job = json.load(f)

options = ort.SessionOptions()
options.intra_op_num_threads = int(job["threads"])
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.log_severity_level = 3

sessions = {}


def session(path):
    if path not in sessions:
        sessions[path] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return sessions[path]


rng = np.random.default_rng(0)
batch = int(job["batch"])
out = []
for s in job["sets"]:
    models = [session(p) for p in s["models"]]
    x = rng.standard_normal([batch] + list(s["input"])).astype(np.float32)
    feeds = [{m.get_inputs()[0].name: x} for m in models]

    def run(i):
        t = time.perf_counter()
        models[i].run(None, feeds[i])
        return (time.perf_counter() - t) * 1e3

    n = len(models)
    for i in range(n):
        for _ in range(int(job["warmup"])):
            run(i)
    times = [[] for _ in range(n)]
    start = time.perf_counter()
    r = 0
    while r < job["max_rounds"] and (
        r < job["min_rounds"] or time.perf_counter() - start < job["budget_seconds"]
    ):
        for k in range(n):
            i = (k + r) % n
            times[i].append(run(i))
        r += 1
    out.append(times)
    # Sessions of this set other than the first (the reference, shared by every set) go.
    for p in s["models"][1:]:
        if p != s["models"][0]:
            sessions.pop(p, None)

json.dump({"onnxruntime": ort.__version__, "sets": out}, sys.stdout)
sys.stdout.write("\n")
