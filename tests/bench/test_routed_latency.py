"""bench.routed_latency on the smallest case: the printed tables have their columns and rows."""

import re

import pytest

from bench import routed_latency
from models.spottune.stem_policy import stem_policy_multiply_adds


def test_cases_and_files_are_parsed_and_bad_ones_stop_in_one_line():
    assert routed_latency.parse_cases("resnet20:32,resnet20:32:8,mobilenet_v2:96:stem") == [
        ("resnet20", 32, None),
        ("resnet20", 32, 8),
        ("mobilenet_v2", 96, "stem"),
    ]
    assert routed_latency.parse_files("onnx:int8,tflite:none") == (("tflite", "none"), ("onnx", "int8"))
    for bad in ("resnet20", "resnet20:32:tiny", "resnet20:x"):
        with pytest.raises(SystemExit, match="--cases"):
            routed_latency.parse_cases(bad)
    with pytest.raises(SystemExit, match="--files"):
        routed_latency.parse_files("tflite:float16")


@pytest.mark.slow
def test_a_tiny_run_prints_routed_and_plain_side_by_side_with_and_without_the_speed_up(capsys):
    assert routed_latency.main(["--cases", "resnet20:8:stem", "--runs", "2", "--calibration", "2", "--files", "tflite:none,onnx:none"]) == 0
    out = capsys.readouterr().out
    # The stem-feature policy's multiply-adds on ResNet-20's stem output at 8 px (8 x 8 x 16), as its formula says.
    assert f"stem-feature policy: policy {stem_policy_multiply_adds(8, 8, 16, num_blocks=9) / 1e6:.2f} M multiply-adds" in out
    for row in ("tflite float32", "onnx float32"):
        line = next(line for line in out.splitlines() if line.strip().startswith(row))
        assert len(re.findall(r"\d+\.\d+x", line)) == 5, line  # routed/plain, both/plain, the same two slow, plain slow/fast
    assert re.search(r"routed: \d+ subgraphs, 18 IF in \d+ main-graph ops; XNNPACK made \d+ DELEGATE partition", out)
    assert re.search(r"routed: 18 If, \d+ Conv, \d+ Transpose in \d+ nodes", out)
    header = next(line for line in out.splitlines() if line.strip().startswith("case"))
    assert header.split()[1:] == ["policy/backbone", "MACs", "LiteRT", "f32", "ONNX", "f32", "LiteRT", "f32", "noXNN", "ONNX", "f32", "noopt", "ONNX", "f32", "viaTFL"]
    summary = next(line for line in out.splitlines() if line.strip().startswith("resnet20 8px stem-feature policy"))
    assert len(re.findall(r"\d+\.\d+x", summary)) == 5, summary
    fastest = out.splitlines()[out.splitlines().index(summary) + 5]
    assert fastest.strip().startswith("resnet20 8px stem-feature policy") and len(re.findall(r"\d+\.\d+x", fastest)) == 4, fastest
    assert re.search(r"plain converted from its TFLite file as the routed one is: \d+\.\d+ ms, \d+\.\d+x the plain file; routed / it \d+\.\d+x", out)
