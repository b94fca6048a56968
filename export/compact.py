"""Which network a run ships: compact first, the routed SpotTune model only where it must be.

A run directory holds `model.keras` (the trained network) and, for strategies whose policy does not
depend on the image, `compact.keras`. What is exported (`choose_export_model`, mode "auto") follows
the run's strategy's `export_kind`:

- a plain model: the classifier in `model.keras` (kind "plain").
- "compact" (and any routed model asked for its compact form): one plain backbone, one copy per
  block (kind "compact"): `compact.keras` when present (it holds the exactly-k decisions training
  chose), else `models.spottune.compact.compact_classifier(model.keras)` with the decisions of
  metrics.json["routing"]["decisions"], else the model's deterministic decisions.
- "routed": the routed model with deterministic decisions (kind "routed"): policy network, gate and
  both copies of every block; `export.graph` computes only the chosen copy of each block for a
  single image.

Mode "compact" forces the compact form (e.g. a global-policy run as one plain backbone); mode
"routed" forces the routed model.
"""

import dataclasses
import os

from models.errors import ModelConfigError
from models.strategies import get_strategy
from rundir import layout as rd
from rundir.run import load_keras_model

COMPACT_FILE = "compact.keras"
MODES = ("auto", "compact", "routed")
KINDS = ("plain", "compact", "routed")


@dataclasses.dataclass
class ExportSource:
    """The Keras network to export and where it came from.

    Attributes:
        model: the network, image [0, 255] -> logits (plain classifier or routed SpotTune model).
        kind: "plain", "compact" or "routed".
        origin: one line saying which file it is and how it was derived.
        decisions: the per-block 0/1 decisions of a compact model (1 = fine-tuned copy), else None.
        routed: the run's routed model when it has one (for the delta and latency baselines), else None.
    """

    model: object
    kind: str
    origin: str
    decisions: list | None = None
    routed: object = None


def is_routed(model):
    """Whether `model` is a SpotTune model (RoutedBlock layers named block_01..)."""
    from models.spottune.routed_block import RoutedBlock

    names = {layer.name: layer for layer in model.layers}
    return isinstance(names.get("block_01"), RoutedBlock)


def choose_export_model(run, mode="auto"):
    """The network `run` ships, as an `ExportSource` (see the module docstring).

    Args:
        run: a `rundir.run.Run` from `rundir.run.open_run`.
        mode: "auto", "compact" or "routed".

    Raises:
        ModelConfigError: unknown mode; "compact" asked of a per-image policy; "routed" asked of a plain run.
    """
    from models.spottune.classifier import set_inference_mode
    from models.spottune.compact import compact_classifier, fixed_decisions

    if mode not in MODES:
        raise ModelConfigError(f"unknown --model {mode!r}; choose one of {', '.join(MODES)}")
    model = load_keras_model(run.path(rd.MODEL_FILE))
    if not is_routed(model):
        if mode == "routed":
            raise ModelConfigError(f"{run.directory} ({run.strategy}) has a plain model, not a routed one; drop --model routed")
        return ExportSource(model, "plain", f"{rd.MODEL_FILE} ({run.strategy}, plain classifier)")

    set_inference_mode(model, "deterministic")
    routed_source = ExportSource(
        model, "routed", f"{rd.MODEL_FILE} ({run.strategy}, routed: policy + both copies, deterministic decisions)", routed=model
    )
    if mode == "routed" or (mode == "auto" and get_strategy(run.strategy).export_kind == "routed"):
        return routed_source
    compact_path = run.path(COMPACT_FILE)
    if os.path.isfile(compact_path):
        decisions = _run_decisions(run)
        return ExportSource(load_keras_model(compact_path), "compact", f"{COMPACT_FILE} ({run.strategy}, one copy per block)", decisions, model)
    try:
        deterministic = fixed_decisions(model)
    except ModelConfigError:
        if mode == "compact":
            raise ModelConfigError(
                f"{run.directory} ({run.strategy}) routes per image: it has no compact form; drop --model compact"
            ) from None
        return routed_source
    recorded = _run_decisions(run)  # training's choice (exactly the k most likely blocks when k was asked)
    decisions = recorded if recorded is not None and len(recorded) == len(deterministic) else deterministic
    compact = compact_classifier(model, decisions)
    return ExportSource(compact, "compact", f"{rd.MODEL_FILE} compacted with decisions {decisions} ({run.strategy})", decisions, model)


def _run_decisions(run):
    routing = run.metrics.get("routing") or {}
    if routing.get("decisions") is not None:
        return [int(d) for d in routing["decisions"]]
    return None


def finetuned_blocks(run, source):
    """Indices of the fine-tuned blocks of a compact run: metrics.json routing, else the decisions."""
    routing = run.metrics.get("routing") or {}
    if routing.get("finetuned_blocks") is not None:
        return [int(i) for i in routing["finetuned_blocks"]]
    if source.decisions is not None:
        return [i for i, d in enumerate(source.decisions) if d]
    return None
