"""Does LiteRT's XNNPACK delegate run the subgraphs of an IF op? One convolution stack timed in the main
graph and inside the branches of a `tf.cond`, with and without the default delegate, in one run.

    python -m bench.litert_if_delegation [--convs 8] [--channels 64] [--side 32] [--runs 20]

Two float32 TFLite files with the same `--convs` 3x3 convolutions (+ ReLU) on a `[1, side, side,
channels]` input, constant weights: "main graph" (the stack as it is) and "inside IF" (`tf.cond`
choosing between the stack and the stack in reverse order: one branch runs per call). Each is run
with the default resolver (XNNPACK) and with `BUILTIN_WITHOUT_DEFAULT_DELEGATES` (LiteRT's builtin
kernels), one thread, timed in turns (median of `--runs` calls). If the IF branches were delegated,
"inside IF" with XNNPACK would cost what "main graph" with XNNPACK costs; if they are not, it costs
what the builtin kernels cost. This is the routed SpotTune file's case (`bench.routed_latency`):
its blocks live in IF branches.
"""

import argparse
import sys
import time

import numpy as np


def files(convs, channels, side, seed=0):
    """{"main graph": tflite bytes, "inside IF": tflite bytes}."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    weights = [tf.constant(rng.normal(0, 0.05, (3, 3, channels, channels)).astype("float32")) for _ in range(convs)]

    def stack(x, ws):
        for w in ws:
            x = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))
        return x

    spec = tf.TensorSpec([1, side, side, channels], tf.float32)
    plain = tf.function(lambda x: stack(x, weights), input_signature=[spec])
    routed = tf.function(lambda x: tf.cond(tf.reduce_mean(x) > 0, lambda: stack(x, weights), lambda: stack(x, weights[::-1])),
                         input_signature=[spec])

    def convert(function):
        return tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function).convert()

    return {"main graph": convert(plain), "inside IF": convert(routed)}


def measure(convs=8, channels=64, side=32, runs=20):
    """{(file, resolver): median ms}, every interpreter timed in turns."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = np.random.default_rng(1).normal(0, 1, (1, side, side, channels)).astype("float32") + 0.1
    interpreters = {}
    for name, data in files(convs, channels, side).items():
        for label, resolver in (("XNNPACK", OpResolverType.AUTO), ("builtin", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)):
            interpreter = Interpreter(model_content=data, num_threads=1, experimental_op_resolver_type=resolver)
            interpreter.allocate_tensors()
            interpreters[(name, label)] = interpreter

    def call(interpreter):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()

    for interpreter in interpreters.values():
        for _ in range(3):
            call(interpreter)
    times = {key: [] for key in interpreters}
    for _ in range(max(1, int(runs))):
        for key, interpreter in interpreters.items():
            start = time.perf_counter()
            call(interpreter)
            times[key].append(time.perf_counter() - start)
    return {key: float(np.median(values) * 1e3) for key, values in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--convs", type=int, default=8)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args(argv)
    t = measure(args.convs, args.channels, args.side, args.runs)
    print(f"{args.convs} convolutions 3x3, {args.channels} channels, {args.side} x {args.side}, batch 1, one thread, median of {args.runs}:")
    print(f"  {'file':<12}{'XNNPACK ms':>12}{'builtin ms':>12}{'builtin / XNNPACK':>19}")
    for name in ("main graph", "inside IF"):
        fast, slow = t[(name, "XNNPACK")], t[(name, "builtin")]
        print(f"  {name:<12}{fast:>12.3f}{slow:>12.3f}{slow / fast:>18.2f}x")
    inside = t[("inside IF", "XNNPACK")] / t[("main graph", "XNNPACK")]
    print(f"  with XNNPACK, the stack inside IF costs {inside:.2f}x the stack in the main graph "
          f"(builtin inside IF / XNNPACK inside IF: {t[('inside IF', 'builtin')] / t[('inside IF', 'XNNPACK')]:.2f}x; "
          f"near 1 = the IF branches run on the builtin kernels, undelegated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
