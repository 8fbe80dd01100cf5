"""fair_pruner.prune on a custom module and torchvision's resnet18, run in the fresh venv."""

import math


def assert_pruned(m: dict, target: float):
    assert m["is_module"]
    macs_before, macs_after = m["macs"]
    params_before, params_after = m["params"]
    assert macs_after <= (1 - target) * macs_before, m
    assert params_after < params_before, m
    assert m["shape"] == [5, 10], m
    assert m["trace_diff"] < 1e-5, m
    assert math.isfinite(m["loss"]) and m["moved"] > 0, m
    assert m["keys_kept"], "state_dict names should be the original module's"


def test_custom_module_with_depthwise_conv_and_se_gate(venv):
    m = venv.run(
        """
        import json, torch, fair_pruner as fp
        from models import SmallNet, data, check_pruned, dead_unit_diff, randomise_batchnorm, SMALLNET_UNITS
        torch.manual_seed(0)
        net, (x, y) = SmallNet(), data()
        randomise_batchnorm(net)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        r = fp.prune(net, x[:1], calibration=(x, y), target_macs=0.4)
        train_mode = r.model.training and net.training
        dead = dead_unit_diff(net, r.model, x[:8], SMALLNET_UNITS)
        out = check_pruned(net, r.model, x, y)
        out["dead_unit_diff"] = dead
        out["unchanged"] = all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
        out["train_mode"] = train_mode
        out["achieved"] = r.report["results"][0]["achieved"]["macs"]
        out["steps_off"] = r.report["after_surgery"]
        print(json.dumps(out))
        """
    )
    assert_pruned(m, 0.4)
    assert m["unchanged"], "the user's model must be left unchanged"
    assert m["train_mode"], "the original stays in train mode and the pruned module comes back in it"
    assert m["achieved"] >= 0.4
    # The pruned module computes what the original computes with the removed units dead.
    assert m["dead_unit_diff"] <= 1e-5, m


def test_torchvision_resnet18(venv):
    m = venv.run(
        """
        import json, torch, torchvision, fair_pruner as fp
        from models import data, check_pruned
        torch.manual_seed(0)
        net, (x, y) = torchvision.models.resnet18(num_classes=10), data(n=100)
        r = fp.prune(net, x[:1], calibration=(x, y), target_macs=0.3)
        print(json.dumps(check_pruned(net, r.model, x, y)))
        """
    )
    assert_pruned(m, 0.3)


def test_a_data_loader_gives_what_the_tensors_give(venv):
    m = venv.run(
        """
        import json, torch, fair_pruner as fp
        from torch.utils.data import DataLoader, TensorDataset
        from models import SmallNet, data
        torch.manual_seed(0)
        net, (x, y) = SmallNet(), data()
        a = fp.prune(net, x[:1], calibration=(x, y), alpha=0.2)
        loader = DataLoader(TensorDataset(x, y), batch_size=32)
        b = fp.prune(net, x[:1], calibration=loader, alpha=0.2)
        sa, sb = a.model.state_dict(), b.model.state_dict()
        same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        print(json.dumps({"same": same, "shapes": [list(v.shape) for v in sa.values()]}))
        """
    )
    assert m["same"]


def test_save_and_load_in_another_process(venv, tmp_path):
    path = tmp_path / "pruned.pt"
    a = venv.run(
        f"""
        import json, torch, fair_pruner as fp
        from models import SmallNet, data
        torch.manual_seed(0)
        net, (x, y) = SmallNet(), data(n=60)
        r = fp.prune(net, x[:1], calibration=(x, y), alpha=0.2)
        fp.save(r.model, {str(path)!r})
        with torch.no_grad():
            print(json.dumps({{"out": r.model.eval()(x[:4]).tolist()}}))
        """
    )
    b = venv.run(
        f"""
        import json, torch, fair_pruner as fp
        from models import data
        x, _ = data(n=60)
        net = fp.load({str(path)!r}).eval()
        with torch.no_grad():
            print(json.dumps({{"out": net(x[:4]).tolist(), "modules": len(list(net.modules()))}}))
        """
    )
    diff = max(abs(p - q) for ra, rb in zip(a["out"], b["out"]) for p, q in zip(ra, rb))
    assert diff == 0.0 and b["modules"] > 5
    # Saved through a temporary file renamed into place: nothing else is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned.pt"]
