"""fair-pruner for PyTorch: FAIR-Pruner structured pruning of a ``torch.nn.Module``.

    import fair_pruner as fp

    result = fp.prune(model, example_inputs, calibration=(x, y), target_macs=0.5)
    result.model    # the pruned network: a plain, trainable torch.nn.Module
    result.report   # the run's report (report.json's schema) as a dict

    scores = fp.score(model, example_inputs, calibration=(x, y), criteria=["u", "r"])
    scores["u"]["features.0"]  # numpy array, one score per output channel
    counts = fp.ratios(scores, alpha=0.1)  # units to remove per layer

    fp.save(result.model, "pruned.pt")  # source + weights; fp.load("pruned.pt") anywhere

The model reaches the Rust pipeline (the one behind the ``fair-pruner`` command) through
``torch.onnx.export`` in memory; no file is written. The pruned network comes back as an
instance of a generated ``nn.Module`` class (the ``model.py`` that ``fair-pruner prune``
exports) carrying the pruned weights. Errors are :class:`FairPrunerError` with the CLI's
error texts.

By default (``finetune=None``) only the pruning runs: no training data is passed, so the
steps after surgery that need a training split (reader reconstruction, BatchNorm
recalibration) are turned off and fine-tuning is left to the caller's own loop (see
``examples/finetune_ddp.py``). ``finetune=EPOCHS`` with ``train=`` data fine-tunes with the
library's own loop instead, as ``fair-pruner prune --finetune-epochs EPOCHS`` does.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import linecache
import os
import sys
import tempfile
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, Tuple, Union

# First: loads the libtorch shared libraries of the installed torch wheel, which the native
# extension links against (nothing else is downloaded or bundled).
import numpy as np
import torch

from . import _native

__all__ = [
    "FairPrunerError",
    "PruneResult",
    "Scores",
    "prune",
    "score",
    "ratios",
    "save",
    "load",
    "__version__",
]

#: The package's version (the Rust workspace's).
__version__: str = _native.__version__

#: Raised for every error of the pipeline; the text is the ``fair-pruner`` command's.
FairPrunerError = _native.FairPrunerError

#: Calibration data: a pair ``(inputs, labels)`` of tensors, or an iterable of such
#: batches (e.g. a ``torch.utils.data.DataLoader``). Training data (``train=``) takes the
#: same forms.
Calibration = Union[Tuple[torch.Tensor, torch.Tensor], Iterable[Tuple[torch.Tensor, torch.Tensor]]]

#: A memory bound as ``--max-memory`` takes it: bytes, a size such as ``"4GiB"`` or
#: ``"512MiB"``, or ``"none"`` (no bound).
MaxMemory = Union[int, str]

_GENERATED = itertools.count()


@dataclass
class PruneResult:
    """What :func:`prune` returns."""

    #: The pruned network, on the original model's device and in its train/eval mode.
    model: torch.nn.Module
    #: The run's report, as ``fair-pruner prune`` writes it to ``report.json``.
    report: dict[str, Any]
    #: What the ONNX importer simplified or assumed, one sentence each.
    notes: list[str] = field(default_factory=list)


class Scores(dict):
    """Per-criterion, per-layer scores: ``scores[criterion][layer]`` is a numpy array with
    one score per unit (output channel or neuron) of the layer, layers in graph order.

    ``score_file`` holds the full score file (``fair-pruner score``'s JSON format), which
    :func:`ratios` thresholds."""

    #: The score file as JSON text.
    score_file: str

    def __init__(self, score_file: str):
        parsed = json.loads(score_file)
        by_criterion: dict[str, dict[str, np.ndarray]] = {}
        for layer in parsed["layers"]:
            for criterion, values in layer["scores"].items():
                by_criterion.setdefault(criterion, {})[layer["layer"]] = np.asarray(
                    values, dtype=np.float64
                )
        super().__init__(by_criterion)
        self.score_file = score_file

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the scores came from (criteria settings, data digest, timing)."""
        return json.loads(self.score_file)["provenance"]


def _as_tuple(example_inputs: Any) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


@contextlib.contextmanager
def _no_onnxscript_functions():
    """A context in which the TorchScript exporter does not look for ONNX Script functions.

    After building the model's bytes, ``torch.onnx.export`` (TorchScript path, torch 2.11)
    imports the ``onnx`` package, parses the bytes back and adds the function bodies of
    nodes in custom (non-ONNX) domains registered with ONNX Script. ``import onnx`` alone
    costs about a second in a fresh process (its ``ml_dtypes`` extension), more than the
    export itself. fair-pruner imports only the default ONNX domain and refuses any other
    domain's node by name, so the step cannot add anything it reads: within this context
    the bytes are passed through unchanged when no custom opset is given. The exporter's
    own function is restored on leaving; where torch's internals differ (another torch
    version) nothing is changed."""
    try:
        from torch.onnx._internal.torchscript_exporter import onnx_proto_utils as proto_utils

        original = proto_utils._add_onnxscript_fn
    except (ImportError, AttributeError):
        yield
        return

    def passthrough(model_bytes: bytes, custom_opsets: Mapping[str, int]) -> bytes:
        if custom_opsets:
            return original(model_bytes, custom_opsets)
        return model_bytes

    proto_utils._add_onnxscript_fn = passthrough
    try:
        yield
    finally:
        proto_utils._add_onnxscript_fn = original


def _export_onnx(model: torch.nn.Module, example_inputs: Any) -> bytes:
    """``model`` (in eval mode) as ONNX bytes, by the TorchScript exporter at opset 17,
    BatchNorm kept as its own node (so the pruned module keeps its BatchNorm layers),
    without the exporter's ONNX Script step (:func:`_no_onnxscript_functions`)."""
    args = _as_tuple(example_inputs)
    if len(args) != 1:
        raise FairPrunerError(
            f"the model must take one input tensor (an image batch), found {len(args)} example inputs"
        )
    was_training = model.training
    buf = io.BytesIO()
    try:
        model.eval()
        with warnings.catch_warnings(), _no_onnxscript_functions():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                buf,
                dynamo=False,
                opset_version=17,
                do_constant_folding=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
    except Exception as e:  # the exporter raises many types
        raise FairPrunerError(
            f"torch.onnx.export could not export the model: {type(e).__name__}: {e}"
        ) from e
    finally:
        model.train(was_training)
    return buf.getvalue()


def _rng_kept():
    """A context in which torch's global random state is saved and restored: the native
    code shares libtorch with the caller's torch and seeds it (the R-Score's draws), which
    must not reset the caller's random stream."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    return torch.random.fork_rng(devices=devices)


def _calibration(
    calibration: Any, max_samples: int | None, what: str = "calibration"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled data (``what``: ``calibration`` or ``train``) as CPU-contiguous float32
    inputs and int64 labels (the caller's tensors themselves when they already are)."""
    if (
        isinstance(calibration, (tuple, list))
        and len(calibration) == 2
        and isinstance(calibration[0], torch.Tensor)
    ):
        x, y = calibration
    else:
        xs, ys, n = [], [], 0
        for batch in calibration:
            bx, by = batch[0], batch[1]
            xs.append(bx)
            ys.append(torch.as_tensor(by))
            n += bx.shape[0]
            if max_samples is not None and n >= max_samples:
                break
        if not xs:
            raise FairPrunerError(f"the {what} data loader gave no batches")
        x, y = torch.cat(xs), torch.cat(ys)
    y = torch.as_tensor(y)
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    if not x.is_floating_point():
        raise FairPrunerError(f"{what} inputs must be floating point, found {x.dtype}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise FairPrunerError(f"{what} labels must be integer class ids, found {y.dtype}")
    x = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
    y = y.detach().to(device="cpu", dtype=torch.int64).contiguous()
    return x, y


def _goal(alpha: float | None, target_macs: float | None, target_params: float | None) -> tuple[str, float]:
    given = [(k, v) for k, v in (("alpha", alpha), ("macs", target_macs), ("params", target_params)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of alpha=, target_macs=, target_params=")
    return given[0][0], float(given[0][1])


def _max_memory(max_memory: MaxMemory | None) -> str | None:
    """``max_memory`` as the ``--max-memory`` text the native side parses (``None``: the
    CLI's default bound, a share of the available memory)."""
    if max_memory is None:
        return None
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, str)):
        raise TypeError(
            f"max_memory= takes bytes (int) or a size such as '4GiB' or 'none', found {type(max_memory).__name__}"
        )
    return str(max_memory)


def _finetune(finetune: int | None, train: Any, finetune_lr: float | None = None) -> int | None:
    """The fine-tuning epochs, checked against ``train`` (they go together) and
    ``finetune_lr`` (which needs them)."""
    if finetune is None:
        if train is not None:
            raise ValueError("train= is the fine-tuning data: give finetune= (epochs) with it")
        if finetune_lr is not None:
            raise ValueError(
                "finetune_lr= is the fine-tuning's learning rate: give finetune= (epochs) and train= with it"
            )
        return None
    if isinstance(finetune, bool) or not isinstance(finetune, int) or finetune < 1:
        raise ValueError(f"finetune= takes None or a number of epochs (an int >= 1), found {finetune!r}")
    if train is None:
        raise ValueError("finetune= needs train= data: an (x, y) tensor pair or a DataLoader")
    return finetune


def _progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _module_from_source(source: str, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """An instance of the generated ``Model`` class with ``state_dict``. The source is
    compiled in memory as module ``fair_pruner.generated.model_<n>`` (registered in
    ``sys.modules`` and ``linecache``, so ``inspect.getsource`` reads it)."""
    name = f"fair_pruner.generated.model_{next(_GENERATED)}"
    filename = f"<{name}>"
    module = types.ModuleType(name)
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), module.__dict__)
    sys.modules[name] = module
    net = module.Model()
    net.load_state_dict(state_dict)
    net.fair_pruner_source = source
    return net


def _state_dict(tensors: Sequence[tuple[str, list[int], str, bytes]]) -> dict[str, torch.Tensor]:
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {
        n: torch.frombuffer(bytearray(b), dtype=dtypes[d]).reshape(shape)
        if len(b)
        else torch.zeros(shape, dtype=dtypes[d])
        for n, shape, d, b in tensors
    }


def save(module: torch.nn.Module, path: Union[str, "os.PathLike[str]"]) -> None:
    """Saves a module :func:`prune` returned (its generated source and its ``state_dict``)
    to one file that :func:`load` reads, in any process (e.g. every rank of a DDP job).

    Raises:
        FairPrunerError: ``module`` is not a module :func:`prune` made.
    """
    source = getattr(module, "fair_pruner_source", None)
    if source is None:
        raise FairPrunerError("fair_pruner.save takes a module that fair_pruner.prune returned")
    # Written to a temporary file next to `path`, then renamed over it: a reader never sees
    # a half-written file, and a failed save leaves an existing file as it was.
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".fair-pruner-", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"fair_pruner_source": source, "state_dict": module.state_dict()}, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path: Union[str, "os.PathLike[str]"], map_location: Any = "cpu") -> torch.nn.Module:
    """The module :func:`save` wrote, with its weights (in train mode, as a new module is)."""
    saved = torch.load(path, map_location=map_location, weights_only=True)
    return _module_from_source(saved["fair_pruner_source"], saved["state_dict"])


def prune(
    model: torch.nn.Module,
    example_inputs: Union[torch.Tensor, Sequence[torch.Tensor]],
    calibration: Calibration,
    *,
    target_macs: float | None = None,
    alpha: float | None = None,
    target_params: float | None = None,
    criteria: Sequence[str] | None = None,
    max_samples: int | None = None,
    max_memory: MaxMemory | None = None,
    finetune: int | None = None,
    train: Calibration | None = None,
    finetune_lr: float | None = None,
    progress: bool | None = None,
    seed: int = 0,
) -> PruneResult:
    """Prunes ``model`` with FAIR-Pruner (the ``fair-pruner`` preset, as ``fair-pruner prune``).

    Args:
        model: the network (left unchanged). It must take one image batch and be exportable
            by ``torch.onnx.export`` with ops fair-pruner imports (CNNs, MLPs, torchvision).
        example_inputs: one input batch (or a 1-tuple), e.g. ``torch.randn(1, 3, 224, 224)``.
        calibration: labelled samples the data-driven scores (U, R) are computed on: a pair
            ``(x, y)`` of tensors (float inputs, integer class ids), or an iterable of such
            batches (a ``DataLoader``). They need at least two classes. CPU-contiguous
            float32 inputs and int64 labels are read in place, without a copy, while the
            call runs: do not modify them from another thread meanwhile.
        target_macs: remove at least this fraction of the MACs (e.g. 0.5).
        alpha: or the tolerance α in [0, 1] (larger removes more).
        target_params: or remove at least this fraction of the parameters.
        criteria: the criteria to score (default ``u``, ``r``, ``l1``, ``group-l1``).
        max_samples: use at most this many calibration samples.
        max_memory: the scores' memory bound, as ``--max-memory``: bytes, a size such as
            ``"4GiB"``, or ``"none"``. Default (``None``): the CLI's, 80% of the available
            memory. A given bound must hold the model's parameters.
        finetune: ``None`` (default): return right after surgery, the removed units simply
            gone (fine-tune ``result.model`` with your own loop). Or a number of epochs to
            fine-tune with the library's own loop on ``train`` (SGD, cosine schedule, batch
            size 128, as ``fair-pruner prune --finetune-epochs``); then the preset's steps
            after surgery (reader reconstruction, BatchNorm recalibration) run on ``train``
            first, as in the CLI. Fine-tuning runs on the CPU.
        train: the fine-tuning data, in the forms ``calibration`` takes, as the model takes
            it (no normalisation or augmentation is applied). Only with ``finetune``.
        finetune_lr: the fine-tuning's learning rate (default the CLI's, 0.01).
        progress: progress bars on stderr (default: when stderr is a terminal).
        seed: the run's seed (as ``--seed``): calibration draw, scoring and fine-tuning.

    Returns:
        A :class:`PruneResult`: the pruned ``nn.Module`` (on ``model``'s device, in its
        train/eval mode), the report dict and the importer's notes. The pruned module's
        ``state_dict`` names are the ONNX importer's node names: PyTorch's module paths
        (``layer1.0.conv1.weight``) where the export reveals them.

    Raises:
        FairPrunerError: the export, import, scoring, selection or surgery failed (the text
            is the CLI's).
        ValueError: not exactly one goal given; ``finetune`` not a positive int, or given
            without ``train`` (or ``train`` or ``finetune_lr`` without it).
        TypeError: ``max_memory`` neither an int nor a string.
    """
    goal, value = _goal(alpha, target_macs, target_params)
    epochs = _finetune(finetune, train, finetune_lr)
    bound = _max_memory(max_memory)
    onnx = _export_onnx(model, example_inputs)
    x, y = _calibration(calibration, max_samples)
    lent_train = None
    if epochs is not None:
        tx, ty = _calibration(train, None, "train")
        lent_train = (tx.data_ptr(), list(tx.shape), ty.data_ptr(), list(ty.shape))
    with _rng_kept():
        source, tensors, report, notes = _native.prune(
            onnx,
            x.data_ptr(),
            list(x.shape),
            y.data_ptr(),
            list(y.shape),
            goal,
            value,
            list(criteria) if criteria is not None else None,
            _progress(progress),
            seed,
            bound,
            epochs,
            finetune_lr,
            lent_train,
        )
    net = _module_from_source(source, _state_dict(tensors))
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    net = net.to(device).train(model.training)
    return PruneResult(model=net, report=json.loads(report), notes=list(notes))


def score(
    model: torch.nn.Module,
    example_inputs: Union[torch.Tensor, Sequence[torch.Tensor]],
    calibration: Calibration,
    *,
    criteria: Sequence[str] | None = None,
    max_samples: int | None = None,
    max_memory: MaxMemory | None = None,
    progress: bool | None = None,
) -> Scores:
    """Scores every prunable layer of ``model`` (as ``fair-pruner score``).

    Args:
        model, example_inputs, calibration, max_samples, max_memory, progress: as for
            :func:`prune` (the memory bound as ``fair-pruner score --max-memory``).
        criteria: the criteria (default ``u``, ``r``, ``l1``, ``group-l1``).

    Returns:
        :class:`Scores`: ``scores[criterion][layer]`` is a numpy array, one score per unit.

    Raises:
        FairPrunerError: as for :func:`prune`.
        TypeError: ``max_memory`` neither an int nor a string.
    """
    bound = _max_memory(max_memory)
    onnx = _export_onnx(model, example_inputs)
    x, y = _calibration(calibration, max_samples)
    with _rng_kept():
        file = _native.score(
            onnx,
            x.data_ptr(),
            list(x.shape),
            y.data_ptr(),
            list(y.shape),
            list(criteria) if criteria is not None else None,
            _progress(progress),
            bound,
        )
    return Scores(file)


def ratios(
    scores: Scores,
    *,
    alpha: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
) -> dict[str, int]:
    """Per-layer counts of units to remove at one goal (as ``fair-pruner ratios``: the
    ``fair-pruner`` preset's ToD, removing by ``u`` and protecting by ``r``), before the
    plan is resolved over coupled layers.

    Args:
        scores: from :func:`score` (with ``u`` and ``r`` among its criteria).
        alpha, target_macs, target_params: exactly one goal, as for :func:`prune`.

    Returns:
        ``{layer: units to remove}``, layers in graph order.
    """
    goal, value = _goal(alpha, target_macs, target_params)
    return {layer: remove for layer, _units, remove in _native.ratios(scores.score_file, goal, value)}
