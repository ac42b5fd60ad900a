"""`--mixed_precision=auto`: bfloat16 compute where this CPU has bf16 instructions and a short probe
shows the stage's own train step faster with it; float32 otherwise.

On an Intel Xeon with AMX the cifar10 config's step ran 1.8x faster in mixed_bfloat16 at the same
test error (issue 28); an AMD EPYC with AVX512_BF16 gained 1.27x; a CPU without bf16 instructions
emulates it and loses. Variables stay float32 under the mixed policy, so checkpoints are the same
either way; a resumed run keeps its first choice (train_vqvae_lib), and a run shorter than
`MIN_PROBE_STEPS` trains in float32 (the probe, two throwaway models and their compilation, would
cost more than bf16 could save).
"""

from __future__ import annotations

import platform
import time

import keras
import tensorflow as tf

from vqvae_tf.utils import progress

# Timed steps per policy (after two compiling ones) and the speed-up bf16 must show to be chosen.
PROBE_STEPS = 5
MIN_SPEEDUP = 1.1
MIN_PROBE_STEPS = 1000
# /proc/cpuinfo flags of bf16 arithmetic: x86 (AMX, AVX-512) and Arm.
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")


def cpu_bf16_flag(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The first `BF16_FLAGS` flag this CPU reports, or None (or off Linux)."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.split(":")[0].strip().lower() in ("flags", "features"):
            flags.update(line.split(":", 1)[1].split())
    return next((f for f in BF16_FLAGS if f in flags), None)


def _steps_per_second(build_fn, batch, policy: str) -> float:
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_fn()
        step = tf.function(model.train_step)
        for _ in range(2):
            step(batch)
        start = time.perf_counter()
        for _ in range(PROBE_STEPS):
            logs = step(batch)
        float(logs["loss"])
        return PROBE_STEPS / (time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def choose(build_fn, batch) -> tuple[str, str]:
    """(policy, why) for `--mixed_precision=auto`: "mixed_bfloat16" when the CPU has bf16
    instructions and `build_fn()`'s train step on `batch` runs >= MIN_SPEEDUP times faster with it
    (throwaway models, built by `build_fn` under each policy), else "none"."""
    if tf.config.list_physical_devices("GPU"):
        return "none", "auto probes CPUs only; on a GPU pass --mixed_precision=mixed_float16 or mixed_bfloat16"
    flag = cpu_bf16_flag()
    if flag is None:
        return "none", f"this CPU ({platform.machine()}) reports no bf16 instructions (amx_bf16, avx512_bf16, bf16)"
    progress.log(f"mixed_precision=auto: timing {PROBE_STEPS} train steps in float32 and in mixed_bfloat16...")
    f32 = _steps_per_second(build_fn, batch, "float32")
    bf16 = _steps_per_second(build_fn, batch, "mixed_bfloat16")
    speedup = bf16 / f32
    policy = "mixed_bfloat16" if speedup >= MIN_SPEEDUP else "none"
    why = f"bf16 steps ran {speedup:.2f}x float32's in a {PROBE_STEPS}-step probe on a CPU with {flag}"
    return policy, why + ("" if policy != "none" else f" (below {MIN_SPEEDUP}x: float32 kept)")
