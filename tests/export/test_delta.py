"""Global-k: the compact file is one plain backbone, and the task delta rebuilds the same model."""

import keras
import numpy as np
import pytest

from export import delta as export_delta
from export.exporter import ExportOptions, export_run
from models.backbones import build_backbone
from models.errors import ModelConfigError
from tests.export.helpers import global_k_models, keras_logits, uint8_images, write_run


@pytest.fixture(scope="module")
def global_k_run(tmp_path_factory):
    routed, compact, decisions = global_k_models()
    directory = tmp_path_factory.mktemp("global_k") / "run"
    routing = {"decisions": decisions, "finetuned_blocks": [i for i, d in enumerate(decisions) if d]}
    write_run(directory, routed, "global_k", image_size=16, compact=compact, routing=routing, k=3)
    return str(directory), compact


def test_delta_holds_only_what_differs_and_rebuilds_identical_outputs(tmp_path):
    _, compact, decisions = global_k_models()
    meta, arrays = export_delta.make_delta(
        compact, build_backbone("resnet20"), [6, 7, 8], "resnet20", "default", image_size=16
    )
    assert meta["parts"] == ["stem", "block_07", "block_08", "block_09", "classifier"]
    assert set(meta["backbone_fingerprints"]) == {f"block_{i:02d}" for i in range(1, 7)} | {"head"}
    path = str(tmp_path / "task_delta.npz")
    size = export_delta.write_delta(path, meta, arrays)
    assert size < 0.8 * export_delta.weight_bytes(compact)

    rebuilt = export_delta.rebuild(path)
    images = uint8_images(8, 16)
    np.testing.assert_array_equal(keras_logits(rebuilt, images), keras_logits(compact, images))
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in compact.layers]

    # Another backbone than the one the delta was made for is refused, naming the part that differs.
    with pytest.raises(ModelConfigError, match="block_01 differs"):
        export_delta.rebuild(path, backbone=build_backbone("resnet20", weights="none"))
    (tmp_path / "junk.npz").write_bytes(b"not a delta")
    with pytest.raises(ModelConfigError, match="not an adaptune task delta"):
        export_delta.rebuild(str(tmp_path / "junk.npz"))


@pytest.mark.slow
def test_export_of_a_global_k_run_writes_compact_tflite_and_delta(global_k_run, tmp_path, capsys):
    from app.export import main

    directory, compact = global_k_run
    out = tmp_path / "out"
    report = export_run(directory, ExportOptions(formats=("tflite",), out=str(out), max_images=64, delta=True, latency_runs=5))
    assert report["exported"]["kind"] == "compact" and report["exported"]["origin"].startswith("compact.keras")
    [row] = report["files"]
    assert row["status"] == "ok" and row["agreement"] == 1.0 and row["max_abs_diff"] < 1e-4
    assert (out / "model_float32.tflite").is_file() and (out / "export_report.json").is_file()
    delta = report["delta"]
    assert delta["rebuilt_max_abs_diff"] == 0.0 and delta["size_bytes"] < delta["full_weight_bytes"]
    assert delta["finetuned_blocks"] == [6, 7, 8]

    # The CLI path: rebuild the full model from the delta and the pretrained backbone.
    model_file = tmp_path / "rebuilt.keras"
    assert main(["--rebuild-delta", str(out / "task_delta.npz"), "--out", str(model_file)]) == 0
    rebuilt = keras.saving.load_model(model_file, safe_mode=True)
    images = uint8_images(4, 16)
    np.testing.assert_array_equal(keras_logits(rebuilt, images), keras_logits(compact, images))
    assert "rebuilt resnet20 classifier" in capsys.readouterr().out


def test_what_a_routed_run_exports(tmp_path):
    from export.compact import choose_export_model
    from rundir.run import open_run

    routed, compact, decisions = global_k_models()
    routing = {"decisions": decisions, "finetuned_blocks": [6, 7, 8]}
    run = open_run(write_run(tmp_path / "global_k", routed, "global_k", routing=routing, k=3))  # no compact.keras
    source = choose_export_model(run)
    assert source.kind == "compact" and source.decisions == decisions and "compacted" in source.origin
    images = uint8_images(4, 16)
    np.testing.assert_allclose(keras_logits(source.model, images), keras_logits(compact, images), atol=1e-5)
    assert choose_export_model(run, "routed").kind == "routed"
    # spottune_global exports the routed model (policy and both copies) unless told to compact it.
    run = open_run(write_run(tmp_path / "global", routed, "spottune_global", routing=routing))
    assert choose_export_model(run).kind == "routed"
    assert choose_export_model(run, "compact").kind == "compact"
