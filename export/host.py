"""The processor an export was verified on.

Quantised kernels are chosen per instruction set: onnxruntime's x86 int8 convolutions take a
different path with VNNI (`vpdpbusd`, exact int32 sums) than with AVX2 alone (`vpmaddubsw`, whose
int16 pair sums can saturate), and LiteRT's XNNPack kernels differ between x86-64 and ARM. The
agreement of an int8 file with the Keras model is therefore a property of the file *and* of the
machine that ran it; the export report names that machine so a figure can be read with its CPU.
"""

import functools
import platform

# Flags that change which int8 / float kernels the interpreters pick.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")


@functools.lru_cache(maxsize=1)
def host_cpu():
    """{"machine", "model", "features"}: the architecture, the CPU's name and its kernel-relevant flags.

    Reads /proc/cpuinfo on Linux; elsewhere `features` is empty and `model` is `platform.processor()`.
    """
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and model in ("", "unknown", platform.machine()):
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "model": model,
        "features": [flag for flag in KERNEL_FLAGS if flag in flags],
    }


def describe(cpu):
    """One line: 'x86_64, Intel(R) Xeon(R) Processor (avx2 fma avx512f ...)'."""
    features = " ".join(cpu.get("features") or []) or "no SIMD flags read"
    return f"{cpu.get('machine')}, {cpu.get('model')} ({features})"
