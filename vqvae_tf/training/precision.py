"""`--mixed_precision=auto`: bfloat16 compute where this CPU has bf16 instructions and a short probe
shows the stage's own train step faster with it; float32 otherwise.

On an Intel Xeon with AMX the cifar10 config's step ran 1.8x faster in mixed_bfloat16 at the same
test error (issue 28); on a 2-core AMD EPYC with AVX512_BF16 the gain is small (the old probe, one
5-step block per policy, said 1.61x on a loaded machine and 1.05x on a quiet one for the same
`make demo`: issue 44), so the probe interleaves the policies and decides on the median (`decide`);
a CPU without bf16 instructions emulates it and loses. Variables stay float32 under the mixed policy, so checkpoints are the same
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

# The probe: ROUNDS rounds, each timing BLOCK_STEPS steps of each policy back to back (the order
# alternating per round: A B, B A, ...), after two compiling steps each. bf16 is chosen when the
# median of the rounds' speed-ups is at least MIN_SPEEDUP and most rounds agree (a slow spell of
# the machine during one block moves one round, not the median); otherwise float32 stays.
# MIN_SPEEDUP is above the noise of this schedule (BENCHMARKS section 2, bench.precision_speed):
# float32 timed against itself gave medians of 0.96-1.07 on a quiet 2-core EPYC (20 probes) and up to
# 1.12 with one core busy (20 probes: 1.1 would have picked bf16 once); real gains are 1.7-2.0x (AMX).
ROUNDS = 5
BLOCK_STEPS = 3
MIN_SPEEDUP = 1.2
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


def _compiled_step(build_fn, batch, policy: str):
    """A throwaway model's compiled train step under `policy` (its layers keep the policy after the
    global one is restored), run twice to compile."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_fn()
        step = tf.function(model.train_step)
        for _ in range(2):
            step(batch)
        return lambda: float(step(batch)["loss"])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _block_seconds(run_step, clock=time.perf_counter) -> float:
    start = clock()
    for _ in range(BLOCK_STEPS):
        run_step()
    return clock() - start


def decide(float32_seconds, bf16_seconds) -> tuple[str, str]:
    """(policy, figures) from the rounds' block times of each policy (seconds, paired by round):
    "mixed_bfloat16" when the median speed-up (float32 time / bf16 time) is >= MIN_SPEEDUP and
    more than half the rounds are >= MIN_SPEEDUP too, else "none"."""
    speedups = sorted(f / b for f, b in zip(float32_seconds, bf16_seconds, strict=True))
    n = len(speedups)
    median = speedups[n // 2] if n % 2 else (speedups[n // 2 - 1] + speedups[n // 2]) / 2
    agreeing = sum(s >= MIN_SPEEDUP for s in speedups)
    chosen = median >= MIN_SPEEDUP and agreeing > n / 2
    figures = f"median {median:.2f}x over {n} interleaved rounds (range {speedups[0]:.2f}-{speedups[-1]:.2f}x)"
    return ("mixed_bfloat16" if chosen else "none"), figures


def probe(build_fn, batch, clock=time.perf_counter) -> tuple[list, list]:
    """Block times (seconds) of float32 and of mixed_bfloat16 train steps, ROUNDS rounds,
    interleaved so that both see the same machine."""
    steps = {policy: _compiled_step(build_fn, batch, policy) for policy in ("float32", "mixed_bfloat16")}
    times = {"float32": [], "mixed_bfloat16": []}
    for r in range(ROUNDS):
        order = ("float32", "mixed_bfloat16") if r % 2 == 0 else ("mixed_bfloat16", "float32")
        for policy in order:
            times[policy].append(_block_seconds(steps[policy], clock))
    return times["float32"], times["mixed_bfloat16"]


def choose(build_fn, batch) -> tuple[str, str]:
    """(policy, why) for `--mixed_precision=auto`: "mixed_bfloat16" when the CPU has bf16
    instructions and `build_fn()`'s train step on `batch` runs faster with it by `decide`'s rule
    (throwaway models, built by `build_fn` under each policy), else "none"."""
    if tf.config.list_physical_devices("GPU"):
        return "none", "auto probes CPUs only; on a GPU pass --mixed_precision=mixed_float16 or mixed_bfloat16"
    flag = cpu_bf16_flag()
    if flag is None:
        return "none", f"this CPU ({platform.machine()}) reports no bf16 instructions (amx_bf16, avx512_bf16, bf16)"
    progress.log(
        f"mixed_precision=auto: timing float32 and mixed_bfloat16 train steps, {ROUNDS} interleaved rounds of "
        f"{BLOCK_STEPS}..."
    )
    policy, figures = decide(*probe(build_fn, batch))
    why = f"bf16 steps ran {figures} on a CPU with {flag}"
    why += f" (at least {MIN_SPEEDUP}x: bf16)" if policy != "none" else f" (not clearly {MIN_SPEEDUP}x: float32 kept)"
    return policy, why
