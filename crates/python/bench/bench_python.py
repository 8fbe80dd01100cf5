"""`cargo xtask bench python`: the Python package's speed, measured in one run on this machine.

    python crates/python/bench/bench_python.py [--repeats 5] [--threads 2] [--classes 10]
        [--per-class 32] [--no-reference] [--wheel-dir DIR]

Run with the reference Python (torch 2.11, maturin, network-pruner 2.16). It builds the
release wheel (`build_wheel.py --release`), installs it into a new venv over that Python's
torch (as the test suite does), and measures:

(a) the same prune job — torchvision `resnet18(num_classes=10)` at 32×32, a fixed
    calibration set, `--target-macs 0.5` — through the `fair-pruner` binary (the ONNX model
    and calibration written to files, as a CLI user has them; the command also needs a data
    source, for which a CIFAR-10 directory of one image per class is written) and through
    `fp.prune` on the
    `nn.Module`, each repeat a fresh process of each, interleaved (alternating which goes
    first). Reported: medians and the ratio Python/CLI (goal ≤ 1.10), for the `fp.prune`
    call and for the whole Python process (interpreter start, `import torch`, building the
    model, the call);
(b) U+R scoring from Python (`fp.score`, including its in-memory ONNX export) against the
    authors' `get_metrics` on the same CIFAR VGG16-BN and data: the reference side is
    `xtask/bench/scoring_reference.py`, the script `cargo xtask bench scoring` runs, whose
    weights and calibration set `fp.score` reads (written first, `--data-only`), `--repeats`
    fresh processes right before the reference and as many right after it. Reported: the
    speed-up of the median call over both halves (goal ≥ 50×).

Writes the Markdown report to stdout and, with the raw figures, to target/bench/python/
(`results.md`, `summary.json`, each written to a temporary file renamed into place). Times
are wall-clock on a machine that may be shared: the figures are what this run measured,
nothing asserts them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CRATE = Path(__file__).resolve().parent.parent
ROOT = CRATE.parent.parent
OUT = ROOT / "target" / "bench" / "python"

#: The prune job's goal and data size.
TARGET_MACS = 0.5
INPUT = 32

#: Builds the prune job's model and data in the venv (written to files for the CLI).
SETUP = """
import sys, torch, torchvision, fair_pruner as fp
from safetensors.torch import save_file
out, classes, per_class = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
net = torchvision.models.resnet18(num_classes=classes).eval()
g = torch.Generator().manual_seed(1)
y = torch.arange(classes).repeat_interleave(per_class)
x = torch.randn(len(y), 3, {size}, {size}, generator=g) + 0.3 * y.view(-1, 1, 1, 1).float() / classes
torch.save(net.state_dict(), out + "/resnet18.pt")
save_file({{"inputs": x.contiguous(), "labels": y.contiguous()}}, out + "/calibration.safetensors")
open(out + "/resnet18.onnx", "wb").write(fp._export_onnx(net, x[:1]))
# `fair-pruner prune` needs a data source (it reports top-1 on the test split before and after):
# a minimal CIFAR-10 binary directory, one image per class in each split (empty batches 2-5).
import os
os.makedirs(out + "/cifar", exist_ok=True)
record = lambda c: bytes([c]) + bytes((c * 25 + i) % 256 for i in range(3072))
tiny = b"".join(record(c) for c in range(classes))
for name in ["data_batch_1.bin", "test_batch.bin"]:
    open(out + "/cifar/" + name, "wb").write(tiny)
for i in range(2, 6):
    open(out + "/cifar/data_batch_%d.bin" % i, "wb").close()
""".format(size=INPUT)

#: One Python repeat of the prune job, in a fresh process: prints the call's seconds.
PRUNE = """
import sys, time, torch, torchvision, fair_pruner as fp
from safetensors.torch import load_file
out, classes, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
net = torchvision.models.resnet18(num_classes=classes).eval()
net.load_state_dict(torch.load(out + "/resnet18.pt", weights_only=True))
data = load_file(out + "/calibration.safetensors")
x, y = data["inputs"], data["labels"]
start = time.perf_counter()
r = fp.prune(net, x[:1], calibration=(x, y), target_macs={target}, progress=False)
seconds = time.perf_counter() - start
print(seconds, r.report["results"][0]["achieved"]["macs"])
""".format(target=TARGET_MACS)

#: fp.score on the scoring reference's VGG16-BN, weights and calibration set.
SCORE = """
import json, sys, time, torch, torch.nn as nn, torchvision, fair_pruner as fp
from safetensors.torch import load_file
out, classes, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
net = torchvision.models.vgg16_bn(weights=None, num_classes=classes)
net.avgpool = nn.AdaptiveAvgPool2d(1)
net.classifier = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, classes))
net.load_state_dict(load_file(out + "/weights.safetensors"))
net.eval()
data = load_file(out + "/calibration.safetensors")
x, y = data["inputs"], data["labels"]
start = time.perf_counter()
s = fp.score(net, x[:1], calibration=(x, y), criteria=["u", "r"], progress=False)
seconds = time.perf_counter() - start
crit = s.provenance["criteria"]
print(json.dumps({"seconds": seconds, "u": crit["u"]["seconds"], "r": crit["r"]["seconds"],
                  "layers": len(s["u"])}))
"""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Runs ``cmd``; a failure stops the benchmark with its output."""
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd[:3]))} ... failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    """Wall-clock seconds of ``cmd`` as a fresh process, and its result."""
    start = time.perf_counter()
    out = run(cmd, **kw)
    return time.perf_counter() - start, out


def venv_with_wheel(work: Path, wheel_dir: Path | None) -> Path:
    """A new venv over this interpreter's torch with the release wheel installed."""
    wheels = OUT / "wheel"
    if wheel_dir is None:
        print("building the release wheel ...", file=sys.stderr)
        built = run([sys.executable, str(CRATE / "build_wheel.py"), "--release", "--out", str(wheels)], cwd=ROOT)
        wheel = built.stdout.strip().splitlines()[-1]
    else:
        wheel = str(next(Path(wheel_dir).glob("fair_pruner-*.whl")))
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    site = next((venv / "lib").glob("python3*/site-packages"))
    torch_site = Path(__import__("torch").__file__).parent.parent
    (site / "_cached_torch.pth").write_text(f"{torch_site}\n")
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index", "--quiet", wheel])
    return venv


def prune_bench(venv: Path, work: Path, o: argparse.Namespace) -> dict:
    """(a): interleaved fresh-process repeats of the CLI and of fp.prune on one job."""
    py = venv / "bin" / "python"
    data = work / "prune"
    data.mkdir()
    run([str(py), "-c", SETUP, str(data), str(o.classes), str(o.per_class)])
    # The wheel's own binary, run as the console command runs it (the torch wheel's libtorch)
    # but without the Python launcher in front.
    exe = next((venv / "lib").glob("python3*/site-packages/fair_pruner/bin/fair-pruner"))
    env = dict(os.environ)
    torch_lib = Path(__import__("torch").__file__).parent / "lib"
    env["LD_LIBRARY_PATH"] = f"{torch_lib}:{env.get('LD_LIBRARY_PATH', '')}"
    cli = [
        str(exe), "prune", "--graph", str(data / "resnet18.onnx"),
        "--calibration", str(data / "calibration.safetensors"),
        "--data", "cifar10", "--data-path", str(data / "cifar"),
        "--target-macs", str(TARGET_MACS), "--threads", str(o.threads),
        # No training split: the steps after surgery that need one are off, as in fp.prune.
        "--reconstruct", "0", "--bn-recalibrate", "0", "--no-latency", "--quiet",
    ]
    python = [str(py), "-c", PRUNE, str(data), str(o.classes), str(o.threads)]
    cli_s, py_call_s, py_proc_s, achieved = [], [], [], set()
    for i in range(o.repeats):
        order = ("cli", "py") if i % 2 == 0 else ("py", "cli")
        for side in order:
            if side == "cli":
                dest = data / f"out-{i}"
                seconds, _ = timed([*cli, "--out", str(dest)], env=env)
                cli_s.append(seconds)
                report = json.loads((dest / "report.json").read_text())
                achieved.add(round(report["results"][0]["achieved"]["macs"], 6))
            else:
                seconds, out = timed(python)
                call, macs = out.stdout.split()[-2:]
                py_proc_s.append(seconds)
                py_call_s.append(float(call))
                achieved.add(round(float(macs), 6))
        print(f"  repeat {i + 1}/{o.repeats}: CLI {cli_s[-1]:.2f} s, fp.prune {py_call_s[-1]:.2f} s "
              f"(process {py_proc_s[-1]:.2f} s)", file=sys.stderr)
    return {"cli": cli_s, "py_call": py_call_s, "py_process": py_proc_s, "achieved_macs": sorted(achieved)}


def score_bench(venv: Path, work: Path, o: argparse.Namespace) -> dict | None:
    """(b): fp.score against the authors' get_metrics on the scoring benchmark's data."""
    py = venv / "bin" / "python"
    data = work / "score"
    data.mkdir()
    if o.no_reference:
        return None
    reference_script = str(ROOT / "xtask" / "bench" / "scoring_reference.py")
    shape = [str(o.threads), str(o.classes), str(o.per_class)]
    # The reference's weights and images first (drawn from its seed, so the same as the
    # reference then uses), so `fp.score` runs on both sides of the reference.
    run([sys.executable, reference_script, str(data), *shape, "--data-only"])

    def ours() -> dict:
        out = run([str(py), "-c", SCORE, str(data), str(o.classes), str(o.threads)])
        return json.loads(out.stdout.strip().splitlines()[-1])

    # `fp.score` is short, the reference takes minutes: --repeats fresh processes of ours
    # right before the reference and as many right after it, so a machine that slows down
    # or speeds up during the reference weighs on both halves; the median of all is reported.
    before = [ours() for _ in range(o.repeats)]
    print("  reference: network-pruner 2.16 get_metrics (this takes minutes) ...", file=sys.stderr)
    run([sys.executable, reference_script, str(data), *shape])
    reference = json.loads((data / "reference.json").read_text())
    load_after_reference = os.getloadavg()[0]
    after = [ours() for _ in range(o.repeats)]
    runs = before + after
    med = lambda key: statistics.median(r[key] for r in runs)
    return {"reference_seconds": reference["seconds"], "reference_layers": reference["layers"],
            "load_after_reference": load_after_reference, "load_after_ours": os.getloadavg()[0],
            "ours_runs": runs, "ours_before": len(before), "ours_seconds": med("seconds"),
            "ours_u": med("u"), "ours_r": med("r"), "ours_layers": runs[0]["layers"]}


def markdown(p: dict, s: dict | None, o: argparse.Namespace) -> str:
    """The report."""
    med = {k: statistics.median(p[k]) for k in ("cli", "py_call", "py_process")}
    lines = [
        "# Python package speed (`cargo xtask bench python`)",
        "",
        f"One run, release build, {o.threads} libtorch threads per side; {os.cpu_count()} CPUs "
        f"(load average before the run: {', '.join(f'{v:.1f}' for v in o.load)}).",
        "",
        "## (a) One prune job: CLI vs `fp.prune`",
        "",
        f"torchvision `resnet18(num_classes={o.classes})` at {INPUT}×{INPUT}, {o.classes} × {o.per_class} "
        f"calibration samples, `target_macs={TARGET_MACS}` (achieved: "
        f"{', '.join(f'{100 * a:.2f}%' for a in p['achieved_macs'])} of MACs removed), "
        f"{o.repeats} interleaved repeats, each a fresh process.",
        "",
        "| path | median wall time | all repeats (s) | ratio to the CLI |",
        "| --- | --- | --- | --- |",
        f"| `fair-pruner prune --graph model.onnx --calibration calib.safetensors --data cifar10 ...` (whole process: "
        f"also evaluates on its {o.classes}-image test split and writes its output directory) "
        f"| {med['cli']:.2f} s | {', '.join(f'{v:.2f}' for v in p['cli'])} | 1.00 (baseline) |",
        f"| `fp.prune(model, ...)` (the call: ONNX export in memory, pipeline, module rebuilt) "
        f"| {med['py_call']:.2f} s | {', '.join(f'{v:.2f}' for v in p['py_call'])} | **{med['py_call'] / med['cli']:.2f}** (goal ≤ 1.10) |",
        f"| Python process around it (interpreter, `import torch`, model built, the call) "
        f"| {med['py_process']:.2f} s | {', '.join(f'{v:.2f}' for v in p['py_process'])} | {med['py_process'] / med['cli']:.2f} |",
        "",
    ]
    lines += ["## (b) U+R scoring: `fp.score` vs the authors' package", ""]
    if s is None:
        lines += ["Skipped (`--no-reference`).", ""]
    else:
        k = s["ours_before"]
        runs_text = (", ".join(f"{r['seconds']:.2f}" for r in s["ours_runs"][:k]) + " s before the reference; "
                     + ", ".join(f"{r['seconds']:.2f}" for r in s["ours_runs"][k:]) + " s after it")
        lines += [
            f"CIFAR VGG16-BN ({s['ours_layers']} scored layers), {o.classes} classes × {o.per_class} samples, "
            f"the weights and data of `xtask/bench/scoring_reference.py` (as `cargo xtask bench scoring`).",
            "",
            "| scorer | U+R time | speed-up |",
            "| --- | --- | --- |",
            f"| network-pruner 2.16 `get_metrics` | {s['reference_seconds']:.2f} s | baseline |",
            f"| `fp.score(model, ..., criteria=['u', 'r'])`, the whole call with its ONNX export "
            f"(median of {len(s['ours_runs'])}: {runs_text}) | {s['ours_seconds']:.2f} s "
            f"| **{s['reference_seconds'] / s['ours_seconds']:.1f}×** (goal ≥ 50×) |",
            f"| of which the U and R scores (score file provenance) | {s['ours_u'] + s['ours_r']:.2f} s "
            f"(U {s['ours_u']:.2f} s, R {s['ours_r']:.2f} s) | {s['reference_seconds'] / (s['ours_u'] + s['ours_r']):.1f}× |",
            "",
            f"The reference runs once (it takes minutes), between the two halves of `fp.score`'s "
            f"repeats: on a shared machine the speed can still differ between them (1-minute load "
            f"average after the reference {s['load_after_reference']:.1f}, after `fp.score` "
            f"{s['load_after_ours']:.1f}), so compare the reference's time with an unloaded run of "
            f"`cargo xtask bench scoring` (docs/results.md) before trusting the ratio.",
            "",
        ]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to a temporary file next to ``path``, then renames it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5,
                    help="interleaved repeats of the prune job, and repeats of fp.score in (b)")
    ap.add_argument("--threads", type=int, default=2, help="libtorch CPU threads (every side)")
    ap.add_argument("--classes", type=int, default=10, help="classes of the models and data")
    ap.add_argument("--per-class", type=int, default=32, help="calibration samples per class")
    ap.add_argument("--no-reference", action="store_true", help="skip (b), the authors' package")
    ap.add_argument("--wheel-dir", type=Path,
                    help="use the wheel in DIR instead of building one (e.g. target/bench/python/wheel, the last one built)")
    o = ap.parse_args()
    if o.repeats < 1 or o.threads < 1 or o.classes < 2 or o.per_class < 1:
        ap.error("--repeats, --threads, --per-class must be ≥ 1 and --classes ≥ 2")
    o.load = os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-python-") as tmp:
        work = Path(tmp)
        venv = venv_with_wheel(work, o.wheel_dir)
        print(f"bench python: (a) prune job, {o.repeats} interleaved repeats ...", file=sys.stderr)
        p = prune_bench(venv, work, o)
        print("bench python: (b) scoring against network-pruner 2.16 ...", file=sys.stderr)
        s = score_bench(venv, work, o)
    report = markdown(p, s, o)
    print(report)
    write_atomic(OUT / "results.md", report + "\n")
    summary = {"prune": p, "score": s, "threads": o.threads, "classes": o.classes,
               "per_class": o.per_class, "repeats": o.repeats, "load_average": o.load}
    write_atomic(OUT / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten to {OUT / 'results.md'} and summary.json", file=sys.stderr)


if __name__ == "__main__":
    main()
