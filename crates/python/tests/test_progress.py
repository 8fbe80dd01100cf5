"""Progress bars: drawn on stderr when it is a terminal (the default), nothing otherwise."""

import os
import pty
import subprocess
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import torch, fair_pruner as fp
    from models import SmallNet, data
    torch.manual_seed(0)
    net, (x, y) = SmallNet(), data(n=60)
    fp.score(net, x[:1], calibration=(x, y), criteria=["u", "r"])
    fp.prune(net, x[:1], calibration=(x, y), target_macs=0.3)
    print("done")
    """
)

# The same runs asking for the bars: still nothing on a stderr that is not a terminal.
FORCED = SCRIPT.replace('criteria=["u", "r"])', 'criteria=["u", "r"], progress=True)').replace(
    "target_macs=0.3)", "target_macs=0.3, progress=True)"
)
assert FORCED.count("progress=True") == 2


def test_nothing_is_printed_when_stderr_is_not_a_terminal(venv):
    for script in (SCRIPT, FORCED):
        out = subprocess.run(
            [str(venv.python), "-c", script], capture_output=True, text=True, cwd=TESTS,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert out.returncode == 0, out.stderr[-4000:]
        assert out.stdout.strip() == "done"
        assert out.stderr == "", out.stderr[-4000:]


def test_bars_are_drawn_when_stderr_is_a_terminal(venv):
    main, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(venv.python), "-c", SCRIPT], stdout=subprocess.PIPE, stderr=secondary, cwd=TESTS,
            env={**os.environ, "PYTHONWARNINGS": "ignore", "TERM": "xterm"},
        )
    finally:
        os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    stdout = proc.stdout.read().decode()
    assert proc.wait() == 0, shown[-4000:]
    assert stdout.strip() == "done"
    text = shown.decode(errors="replace")
    # The scoring's bars (the Rust side's, tqdm-style: message, bar, position/length).
    assert "R-Score" in text and "U-Score" in text, text[-2000:]
