# fair-pruner's ONNX Runtime timing helper (embedded in the binary). fair-pruner writes it
# into a private temporary directory and runs `python3 ort_timing.py` there (the directory
# is the working directory, so nothing of the user's current directory is imported).
#
# One long-lived process driven over stdin/stdout, one JSON object per line:
# - on start it prints {"onnxruntime": version} (exit status 3, the reason on stderr, when
#   onnxruntime or numpy cannot be imported);
# - {"op": "load", "threads": t, "batch": b, "input": [per-sample shape],
#    "models": [onnx file names, relative to the working directory]} loads a set of models
#   (model i of the set is models[i]; sessions of the previous set not named again are
#   dropped), draws one random input and runs each model once on it; answers
#   {"loaded": n, "first_ms": [milliseconds of each model's first run]} (fair-pruner
#   allows each timed pass of model i max(its pass deadline, 20 x first_ms[i]));
# - {"op": "run", "model": i, "passes": n} runs model i of the set n times on that input;
#   answers {"ms": [milliseconds of each pass]};
# - end of input: exits.
# An error answers {"error": text} and, when it concerns a model, "model": its index.
# fair-pruner decides the schedule (warm-up, the rotating order of rounds, when to stop)
# and summarises the times; the helper only loads and times.
#
# The timed sessions run sequentially with `session.intra_op.allow_spinning` set to "0":
# ONNX Runtime's intra-op threads otherwise spin for a while after each pass, so the
# threads of the other models loaded at the same time (the reference and the set's other
# widths) would keep burning the cores the model being timed needs.
import json
import sys
import time

try:
    import numpy as np
    import onnxruntime as ort
except Exception as e:  # ImportError, or a broken installation
    sys.stderr.write("cannot import onnxruntime and numpy: %s: %s\n" % (type(e).__name__, e))
    sys.exit(3)


def answer(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


answer({"onnxruntime": ort.__version__})

sessions = {}  # file name -> session, for the current set
models = []  # the current set's sessions, by index
feeds = []  # their inputs
rng = np.random.default_rng(0)


def options(threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = int(threads)
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.log_severity_level = 3
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return o


def load(request):
    global sessions, models, feeds
    files = request["models"]
    kept = {f: s for f, s in sessions.items() if f in files}
    sessions = kept
    models = []
    feeds = []
    o = options(request["threads"])
    for i, f in enumerate(files):
        if f not in sessions:
            try:
                sessions[f] = ort.InferenceSession(f, o, providers=["CPUExecutionProvider"])
            except Exception as e:
                return {"error": "%s: %s" % (type(e).__name__, e), "model": i}
        models.append(sessions[f])
    x = rng.standard_normal([int(request["batch"])] + list(request["input"])).astype(np.float32)
    first = []
    for i, m in enumerate(models):
        feed = {m.get_inputs()[0].name: x}
        t = time.perf_counter()
        try:
            m.run(None, feed)  # a graph that loads but cannot run fails here, not in timing
        except Exception as e:
            return {"error": "%s: %s" % (type(e).__name__, e), "model": i}
        first.append((time.perf_counter() - t) * 1e3)
        feeds.append(feed)
    return {"loaded": len(models), "first_ms": first}


def run(request):
    i = int(request["model"])
    if not 0 <= i < len(models):
        return {"error": "no model %d in the loaded set of %d" % (i, len(models))}
    m, feed = models[i], feeds[i]
    ms = []
    for _ in range(int(request.get("passes", 1))):
        t = time.perf_counter()
        try:
            m.run(None, feed)
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
