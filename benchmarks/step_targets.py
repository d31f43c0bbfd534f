"""Benchmark of issue 4's targets: N:M step speedup, dense PE utilisation, simulator speed.

Run ``.venv/bin/python benchmarks/step_targets.py`` (about 2 minutes on 2 cores). Every
figure is a ratio against a baseline measured in the same run: speedups against the dense
step on the same hardware, utilisation against the array's peak, simulation time against the
10 s target and simulated cycles against wall-clock seconds.

Ref: PAPER.md (1.75x at 2:8; bound 2.0x); issue 4 (targets).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

from nmsat.compiler import Phase, compile_model, emit
from nmsat.hw.params import load_params
from nmsat.models.zoo import Conv2d, Linear, get_model
from nmsat.sim.model import Machine
from nmsat.sim.runner import attribute
from nmsat.sim.step import simulate_step

CONFIG = "vcu1525"
BATCH = 32
MODELS = ("resnet18", "resnet50", "vgg16", "vit_b16")


def _cycles(job: tuple[str, tuple[int, int]]) -> tuple[str, tuple[int, int], int]:
    name, nm = job
    summary = simulate_step(get_model(name, BATCH), nm, load_params(CONFIG))
    return name, nm, summary.cycles


def _layer_utilisation(name: str) -> list[tuple[str, float, float]]:
    """(layer, dense FF utilisation, forward GMACs) of the GEMM layers of at least 1 GMAC."""
    params = load_params(CONFIG)
    model = get_model(name, BATCH)
    prog = compile_model(model, (1, 1), params)
    emitted = emit(prog)
    device = [op for op in prog.ops if op.opcode is not None]
    labels = [f"{op.layer}|{op.phase.value}" for op in device]
    machine = Machine(params, "perf")
    machine.load_program(list(emitted.words))
    cycles: dict[str, int] = defaultdict(int)
    for seg in emitted.manifest["segments"]:
        if seg["kind"] == "step":
            for key, value in attribute(machine.run(seg["start_pc"]), labels).items():
                cycles[key] += value
    out = []
    for layer in model.weight_layers:
        if not isinstance(layer, Conv2d | Linear):
            continue
        macs = layer.macs_per_sample * BATCH
        ff = cycles.get(f"{layer.name}|{Phase.FF.value}", 0)
        if macs >= 1e9 and ff:
            out.append((layer.name, macs / (ff * params.pe_count), macs / 1e9))
    return out


def main() -> None:
    params = load_params(CONFIG)
    print(f"configuration {CONFIG}: {params.array_rows}x{params.array_cols} PEs, batch {BATCH}")
    jobs = [(m, nm) for m in MODELS for nm in ((1, 1), (2, 8))]
    with ProcessPoolExecutor(2) as pool:
        cycles = {(m, nm): c for m, nm, c in pool.map(_cycles, jobs)}
    print("\n1. 2:8 over dense, training step (target >= 1.75x, aim >= 1.85x, bound 2.00x)")
    speedups = []
    for m in MODELS:
        s = cycles[(m, (1, 1))] / cycles[(m, (2, 8))]
        speedups.append(s)
        print(f"   {m:<10} {s:5.2f}x")
    mean = statistics.fmean(speedups)
    print(
        f"   mean       {mean:5.2f}x  ({mean / 1.75:.2f} of the target, {mean / 2.0:.0%} of the "
        "bound)"
    )
    print("\n2. dense PE utilisation of the FF pass of layers of >= 1 GMAC (target >= 90 %)")
    for m in ("resnet50", "vgg16"):
        rows = _layer_utilisation(m)
        low = [r for r in rows if r[1] < 0.9]
        worst = min(rows, key=lambda r: r[1])
        print(
            f"   {m}: {len(rows)} layers, mean {statistics.fmean(r[1] for r in rows):.1%}, "
            f"lowest {worst[1]:.1%} ({worst[0]}); below 90 %: "
            + (", ".join(f"{r[0]} {r[1]:.1%}" for r in low) or "none")
        )
    print("\n3. nmsat simulate --mode perf, ResNet-50 step, compile included (target < 10 s)")
    start = time.perf_counter()
    summary = simulate_step(get_model("resnet50", BATCH), (2, 8), params)
    seconds = time.perf_counter() - start
    print(
        f"   {seconds:.1f} s ({seconds / 10:.2f} of the target), {summary.cycles:,} simulated "
        f"cycles: {summary.cycles / seconds:,.0f} simulated cycles per second"
    )


if __name__ == "__main__":
    main()
