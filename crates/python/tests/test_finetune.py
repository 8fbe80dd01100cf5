"""fp.prune's finetune=/train= (the library's own fine-tuning) and max_memory= for prune and
score (the CLI's --max-memory rule), run in the fresh venv."""

import subprocess

from test_errors import error_of


def test_finetune_none_returns_right_after_surgery_and_epochs_fine_tune_on_train(venv):
    m = venv.run(
        """
        import json, torch, fair_pruner as fp
        from models import SmallNet, data
        torch.manual_seed(0)
        net, (x, y) = SmallNet(), data(n=120)
        xt, yt = data(n=512, seed=1)
        loss = lambda mod: torch.nn.functional.cross_entropy(mod.eval()(xt), yt).item()
        plain = fp.prune(net, x[:1], calibration=(x, y), target_macs=0.4, finetune=None)
        tuned = fp.prune(net, x[:1], calibration=(x, y), target_macs=0.4,
                         finetune=3, finetune_lr=0.05, train=(xt, yt))
        train_mode = tuned.model.training
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=100)
        again = fp.prune(net, x[:1], calibration=(x, y), target_macs=0.4,
                         finetune=3, finetune_lr=0.05, train=loader)
        same_shapes = {k: list(v.shape) for k, v in plain.model.state_dict().items()} == {
            k: list(v.shape) for k, v in tuned.model.state_dict().items()}
        print(json.dumps({
            "plain_epochs": plain.report["results"][0]["finetune_epochs"],
            "tuned_epochs": tuned.report["results"][0]["finetune_epochs"],
            "plain_steps": plain.report["after_surgery"],
            "tuned_steps": tuned.report["after_surgery"],
            "same_shapes": same_shapes,
            "loss_plain": loss(plain.model), "loss_tuned": loss(tuned.model),
            "loader_diff": max((a - b).abs().max().item() for a, b in zip(
                tuned.model.state_dict().values(), again.model.state_dict().values())),
            "train_mode": train_mode,
        }))
        """
    )
    assert m["plain_epochs"] == 0 and m["tuned_epochs"] == 3, m
    # Without training data the preset's steps after surgery are opted out; with it they run.
    assert set(m["plain_steps"].values()) == {"opted-out"}, m["plain_steps"]
    assert set(m["tuned_steps"].values()) == {"ran"}, m["tuned_steps"]
    assert m["same_shapes"], "fine-tuning must not change which units were kept"
    assert m["loss_tuned"] < m["loss_plain"], m
    # A DataLoader over the same samples in the same order gives the same run.
    assert m["loader_diff"] <= 1e-6, m
    assert m["train_mode"]


def test_finetune_arguments_are_checked(venv):
    e = error_of(venv, "fp.prune(SmallNet(), x[:1], calibration=(x, y), target_macs=0.3, finetune=2)")
    assert e["raised"] == "ValueError" and "train=" in e["text"], e
    e = error_of(venv, "fp.prune(SmallNet(), x[:1], calibration=(x, y), target_macs=0.3, train=(x, y))")
    assert e["raised"] == "ValueError" and "finetune=" in e["text"], e
    e = error_of(venv, "fp.prune(SmallNet(), x[:1], calibration=(x, y), target_macs=0.3, finetune=0, train=(x, y))")
    assert e["raised"] == "ValueError" and "epochs" in e["text"], e
    # A learning rate alone would be ignored: refused, naming both arguments.
    e = error_of(venv, "fp.prune(SmallNet(), x[:1], calibration=(x, y), target_macs=0.3, finetune_lr=0.05)")
    assert e["raised"] == "ValueError" and "finetune_lr=" in e["text"] and "finetune=" in e["text"], e
    # The native side refuses it too (a direct call, past the wrapper's check).
    e = error_of(
        venv,
        """
onnx = fp._export_onnx(SmallNet(), x[:1])
fp._native.prune(onnx, x.data_ptr(), list(x.shape), y.data_ptr(), list(y.shape), "macs", 0.3,
                 finetune_lr=0.05)
""",
    )
    assert e["raised"] == "ValueError" and "finetune_lr" in e["text"] and "finetune" in e["text"], e
    # Training data that does not fit the model: the calibration's message, for `train`.
    e = error_of(
        venv,
        "fp.prune(SmallNet(), x[:1], calibration=(x, y), target_macs=0.3, finetune=1,"
        " train=(torch.randn(8, 3, 16, 16), torch.arange(8) % 2))",
    )
    assert e["raised"] == "FairPrunerError", e
    assert e["text"].startswith("train: ") and "per-sample shape [3, 16, 16]" in e["text"], e
    e = error_of(
        venv,
        "fp.prune(SmallNet(), x[:1], calibration=(x, y), target_macs=0.3, finetune=1, finetune_lr=-1.0, train=(x, y))",
    )
    assert e["raised"] == "FairPrunerError" and e["text"].startswith("--finetune-lr: "), e


def test_max_memory_follows_the_cli(venv, rust_binary, tmp_path):
    onnx, calib = tmp_path / "m.onnx", tmp_path / "calib.safetensors"
    m = venv.run(
        f"""
        import json, torch, fair_pruner as fp
        from safetensors.torch import save_file
        from models import SmallNet, data
        torch.manual_seed(0)
        net, (x, y) = SmallNet(), data(n=60)
        open({str(onnx)!r}, "wb").write(fp._export_onnx(net, x[:1]))
        save_file({{"inputs": x, "labels": y}}, {str(calib)!r})
        def err(f):
            try:
                f()
            except fp.FairPrunerError as e:
                return str(e)
        default = fp.score(net, x[:1], calibration=(x, y), criteria=["u"])
        results = {{}}
        for bound in ("none", "64MiB", 64 << 20):
            s = fp.score(net, x[:1], calibration=(x, y), criteria=["u"], max_memory=bound)
            results[str(bound)] = max(abs(a - b).max() for a, b in zip(s["u"].values(), default["u"].values()))
        print(json.dumps({{
            "diffs": {{k: float(v) for k, v in results.items()}},
            "score_small": err(lambda: fp.score(net, x[:1], calibration=(x, y), max_memory="1KiB")),
            "prune_small": err(lambda: fp.prune(net, x[:1], calibration=(x, y), target_macs=0.3, max_memory=1024)),
            "bad": err(lambda: fp.score(net, x[:1], calibration=(x, y), max_memory="lots")),
            "provenance_u": fp.score(net, x[:1], calibration=(x, y), criteria=["u"], max_memory="none").provenance is not None,
        }}))
        """
    )
    # The bound only splits the work into passes: the scores stay the same.
    assert all(d <= 1e-9 for d in m["diffs"].values()), m["diffs"]
    cli = subprocess.run(
        [str(rust_binary), "score", "--graph", str(onnx), "--calibration", str(calib),
         "--max-memory", "1KiB", "--out", str(tmp_path / "s.json")],
        capture_output=True,
        text=True,
    )
    assert cli.returncode != 0
    cli_text = cli.stderr.strip().splitlines()[-1].removeprefix("error: ")
    assert cli_text.startswith("--max-memory: "), cli_text
    # The same check and text as the CLI, for score and prune alike.
    assert m["score_small"] == cli_text, (m["score_small"], cli_text)
    assert m["prune_small"] == cli_text, (m["prune_small"], cli_text)
    assert m["bad"].startswith("--max-memory: invalid value 'lots'"), m["bad"]
