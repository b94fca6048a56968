"""bench.litert_if_delegation on a tiny stack: both files run with both resolvers, the table is printed."""

import re

from bench import litert_if_delegation


def test_a_tiny_probe_prints_both_files_with_both_resolvers(capsys):
    assert litert_if_delegation.main(["--convs", "2", "--channels", "8", "--side", "8", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("main graph", "inside IF"):
        line = next(line for line in out.splitlines() if line.strip().startswith(name))
        assert len(re.findall(r"\d+\.\d+", line)) == 3, line
    assert re.search(r"the stack inside IF costs \d+\.\d+x the stack in the main graph", out)


def test_the_routed_probe_file_holds_an_if_op_and_the_plain_one_none():
    from ai_edge_litert.interpreter import Interpreter

    written = litert_if_delegation.files(convs=2, channels=8, side=8)
    ops = {name: {op["op_name"] for op in Interpreter(model_content=data)._get_ops_details()} for name, data in written.items()}
    assert "IF" in ops["inside IF"] and "IF" not in ops["main graph"] and "CONV_2D" in ops["main graph"]
