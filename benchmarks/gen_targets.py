"""Benchmark of issue 5's generation target: vcu1525's Verilog in under 2 minutes.

Run ``.venv/bin/python benchmarks/gen_targets.py`` (about 2 minutes on 2 cores; add
``--baseline`` for the unshared baseline of a 16 x 16 array too, 2 to 3 minutes more). It
prints, for each configuration, the wall time of :func:`nmsat.hw.gen.to_verilog` and the size
of the Verilog, as ratios against the 120 s target, and with ``--baseline`` the speedup of
shared modules (``nmsat.hw.shared``) over elaborating every PE, cell and lane in place, both
measured in this run.

Ref: issue 5 ("Generation of the vcu1525 configuration finishes in under 2 minutes").
"""

from __future__ import annotations

import argparse
import time

from nmsat.hw.gen import to_verilog
from nmsat.hw.params import load_params
from nmsat.hw.top import Accelerator

TARGET_S = 120.0


def _time(config: str, *, share: bool, overrides: tuple[str, ...] = ()) -> tuple[float, int]:
    params = load_params(config, list(overrides))
    began = time.perf_counter()
    text = to_verilog(Accelerator(params), "nmsat_top", share=share)
    return time.perf_counter() - began, len(text.encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help="also time unshared 16 x 16")
    args = parser.parse_args()
    print(f"{'configuration':<28} {'seconds':>8} {'MiB':>6} {'/ target':>9}")
    for config in ("tiny", "vcu1525"):
        seconds, size = _time(config, share=True)
        print(f"{config:<28} {seconds:8.1f} {size / 2**20:6.1f} {seconds / TARGET_S:9.2f}")
    if args.baseline:
        mid = ("array_rows=16", "array_cols=16")
        shared, shared_size = _time("vcu1525", share=True, overrides=mid)
        flat, flat_size = _time("vcu1525", share=False, overrides=mid)
        print(f"{'vcu1525 16x16 shared':<28} {shared:8.1f} {shared_size / 2**20:6.1f}")
        print(f"{'vcu1525 16x16 in place':<28} {flat:8.1f} {flat_size / 2**20:6.1f}")
        print(f"shared modules: {flat / shared:.2f}x faster, {flat_size / shared_size:.2f}x less")


if __name__ == "__main__":
    main()
