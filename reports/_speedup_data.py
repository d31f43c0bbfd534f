"""The evaluation report's vocabulary: workloads, patterns, reference figures and its results.

Constants name what the report runs (:data:`WORKLOADS`, :data:`PATTERNS`,
:data:`FORWARD_PATTERNS`, :data:`ABLATIONS`) and the figures it compares with
(:data:`PAPER_SPEEDUP_2_8`, :data:`GPU_2_4`). :class:`Run` is one simulated step and
:class:`Results` indexes the runs for the tables and plots.

Ref: C. Fang et al., "Efficient N:M Sparse DNN Training Using Algorithm, Architecture, and
     Dataflow Co-Design", IEEE TCAD 2023 (1.75x average training speedup at 2:8 on a VCU1525);
     PAPER.md (the bounds 3M / (2N + M) for BDWP and 3M / (N + 2M) for forward-only N:M, and
     the GPU 2:4 measurements); A. Zhou et al., "Learning N:M fine-grained structured sparse
     neural networks from scratch", ICLR 2021 (SR-STE: N:M in the forward pass only).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Sequence
from typing import Any

from nmsat.compiler import CompileOptions
from nmsat.models.nm import parse_nm
from nmsat.sim.energy import gflops_per_watt
from nmsat.sim.runner import PASS_NAMES

from ._step_profile import LayerCost

__all__ = [
    "ABLATIONS",
    "FORWARD_PATTERNS",
    "GPU_2_4",
    "PAPER_SPEEDUP_2_8",
    "PASS_GROUPS",
    "PATTERNS",
    "SPARSITY_LABELS",
    "WORKLOADS",
    "GpuRow",
    "Results",
    "Run",
    "compute_bound",
]

#: Models of the report (docs/zoo.md).
WORKLOADS = ("resnet18", "resnet50", "vgg16", "vit_b16", "bert_base")
#: Patterns of the report; ``dense`` is the baseline on the same hardware.
PATTERNS = ("dense", "2:4", "4:8", "2:8", "1:8")
#: Patterns also run with forward-only N:M (SR-STE style: FF sparse, BP dense).
FORWARD_PATTERNS = ("2:8",)
#: The paper's average training speedup at 2:8 over dense on the same hardware.
PAPER_SPEEDUP_2_8 = 1.75
#: The ablation's variants: each optimisation off in turn, then all off.
ABLATIONS: dict[str, CompileOptions] = {
    "all on": CompileOptions(),
    "no interleave": CompileOptions(interleave=False),
    "no pre-generation": CompileOptions(pregen=False),
    "no scheduling": CompileOptions(schedule=False),
    "all off": CompileOptions(interleave=False, pregen=False, schedule=False),
}
#: How the report names the two training modes.
SPARSITY_LABELS = {"bdwp": "BDWP (FF+BP)", "forward": "forward only (FF)"}
#: Step cycles grouped into the report's pass columns (label, runner pass names).
PASS_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("FF", ("ff",)),
    ("BP", ("bp",)),
    ("WU", ("wu",)),
    ("update + other", ("update", "prune", "vector", "idle")),
)
assert {p for _, names in PASS_GROUPS for p in names} == set(PASS_NAMES)


@dataclasses.dataclass(frozen=True)
class GpuRow:
    """One GPU 2:4 measurement of PAPER.md and the layers of a zoo model closest to it.

    Members
    -------
    gpu_layer : str
        The GEMM PAPER.md timed.
    ff, bp, step : float
        Its 2:4 speedups over dense (step: FF and BP sparse, WU dense).
    model : str
        The zoo model holding comparable layers ("" when none).
    pattern : str
        A regular expression matching those layers' names (full match).
    sat_layer : str
        How the report names them, with the differences from the GPU's layer.
    """

    gpu_layer: str
    ff: float
    bp: float
    step: float
    model: str
    pattern: str
    sat_layer: str

    def matches(self, layer: str) -> bool:
        """Return whether ``layer`` is one of the comparable layers."""
        return bool(self.pattern) and re.fullmatch(self.pattern, layer) is not None


#: PAPER.md's GPU 2:4 figures (H100, fp16, cuSPARSELt through PyTorch 2.11, kernel time of
#: one training step's three GEMMs per layer), with the zoo layers the report sets beside them.
GPU_2_4: tuple[GpuRow, ...] = (
    GpuRow(
        "ResNet-50 conv3 3x3, batch 64",
        0.75,
        1.00,
        0.90,
        "resnet50",
        r"layer2\.\d+\.conv2",
        "resnet50 layer2.*.conv2 (the conv3_x 3x3 convs), batch 32",
    ),
    GpuRow(
        "ResNet-50 conv5 3x3, batch 64",
        0.63,
        0.97,
        0.83,
        "resnet50",
        r"layer4\.\d+\.conv2",
        "resnet50 layer4.*.conv2 (the conv5_x 3x3 convs), batch 32",
    ),
    GpuRow(
        "ResNet-18 CIFAR layer3, batch 128",
        0.48,
        0.95,
        0.76,
        "resnet18",
        r"layer3\.\d+\.conv\d",
        "resnet18 layer3 3x3 convs (ImageNet sizes, 14x14), batch 32",
    ),
    GpuRow(
        "ViT-B fc1, batch 64",
        1.19,
        0.79,
        0.97,
        "vit_b16",
        r"blocks\.\d+\.mlp\.fc1",
        "vit_b16 blocks.*.mlp.fc1, batch 32",
    ),
    GpuRow(
        "BERT-large fc1, 32x512 tokens",
        1.18,
        1.22,
        1.13,
        "bert_base",
        r"encoder\.\d+\.mlp\.fc1",
        "bert_base encoder.*.mlp.fc1 (768 -> 3072, 32x128 tokens)",
    ),
    GpuRow("8192^3", 1.46, 1.54, 1.28, "", "", ""),
)


def compute_bound(nm: str, sparsity: str = "bdwp") -> float:
    """Ideal step speedup with equal FF, BP and WU work (1.0 for dense).

    BDWP (FF and BP sparse): ``3M / (2N + M)``; forward-only: ``3M / (N + 2M)``.
    """
    n, m = parse_nm(nm)
    if sparsity == "forward":
        return 3 * m / (n + 2 * m)
    return 3 * m / (2 * n + m)


@dataclasses.dataclass(frozen=True)
class Run:
    """One simulated step of the report: its coordinates, its JSON record, its layer passes.

    Members
    -------
    model, nm : str
    sparsity : str
        ``"bdwp"`` or ``"forward"`` (``"bdwp"`` for dense).
    variant : str
        A key of :data:`ABLATIONS`.
    record : dict
        :meth:`nmsat.sim.step.StepSummary.to_json` without the raw events.
    layers : tuple of LayerCost
        The GEMM passes of every layer (empty unless the report keeps them).
    """

    model: str
    nm: str
    sparsity: str
    variant: str
    record: dict[str, Any]
    layers: tuple[LayerCost, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, str]:
        """``(model, nm, sparsity, variant)``."""
        return (self.model, self.nm, self.sparsity, self.variant)

    @property
    def cycles(self) -> int:
        """Cycles of the step."""
        return int(self.record["cycles"])

    def passes(self) -> dict[str, int]:
        """Cycles by pass (runner names)."""
        return {k: int(v) for k, v in self.record["passes"].items()}

    def group_cycles(self, names: Sequence[str]) -> int:
        """Cycles of the passes ``names``, summed."""
        passes = self.passes()
        return sum(passes[k] for k in names)

    @property
    def energy_pj(self) -> float:
        """Energy of the step in pJ."""
        return float(self.record["energy_pj"])

    def gflops_per_w(self, effective: bool = True) -> float:
        """Dense-equivalent (``effective``) or executed FLOPs (2 per MAC) per joule, in GFLOPS/W."""
        macs = self.record["macs_dense_equivalent" if effective else "macs_executed"]
        return gflops_per_watt(macs, self.energy_pj)


@dataclasses.dataclass(frozen=True)
class Results:
    """All runs of one report, indexed by ``(model, nm, sparsity, variant)``.

    Members
    -------
    runs : tuple of Run
        In the report's canonical order.
    models, patterns : tuple of str
        ``patterns`` starts with ``"dense"``.
    forward_patterns : tuple of str
        Patterns run forward-only too.
    ablation_nm : str or None
        Pattern of the ablation runs.
    """

    runs: tuple[Run, ...]
    models: tuple[str, ...]
    patterns: tuple[str, ...]
    forward_patterns: tuple[str, ...]
    ablation_nm: str | None
    _index: dict[tuple[str, str, str, str], Run] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {r.key: r for r in self.runs})

    @property
    def sparse(self) -> tuple[str, ...]:
        """The N:M patterns (dense excluded)."""
        return tuple(p for p in self.patterns if p != "dense")

    def get(self, model: str, nm: str, sparsity: str = "bdwp", variant: str = "all on") -> Run:
        """The run at these coordinates."""
        return self._index[(model, nm, "bdwp" if nm == "dense" else sparsity, variant)]

    def dense(self, model: str) -> Run:
        """The dense run of ``model``."""
        return self.get(model, "dense")

    def speedup(
        self, model: str, nm: str, sparsity: str = "bdwp", variant: str = "all on"
    ) -> float:
        """Dense step cycles over the step cycles of this run."""
        return self.dense(model).cycles / self.get(model, nm, sparsity, variant).cycles

    def pass_speedup(
        self, model: str, nm: str, names: Sequence[str], sparsity: str = "bdwp"
    ) -> float:
        """Dense cycles of the passes ``names`` over this run's (NaN when it spends none)."""
        run = self.get(model, nm, sparsity).group_cycles(names)
        return self.dense(model).group_cycles(names) / run if run else float("nan")

    def mean_speedup(self, nm: str, sparsity: str = "bdwp") -> float:
        """Arithmetic mean of the models' step speedups."""
        return statistics.fmean(self.speedup(m, nm, sparsity) for m in self.models)

    def energy_ratio(self, model: str, nm: str, sparsity: str = "bdwp") -> float:
        """Energy of this run's step over the dense step's."""
        return self.get(model, nm, sparsity).energy_pj / self.dense(model).energy_pj

    def layer_speedup(
        self, model: str, nm: str, row: GpuRow, passes: Sequence[str]
    ) -> float | None:
        """Dense over N:M cycles of ``passes`` summed over the layers ``row`` matches."""
        try:
            dense, sparse = self.dense(model), self.get(model, nm)
        except KeyError:
            return None
        d = sum(c.cycles for c in dense.layers if row.matches(c.layer) and c.phase in passes)
        s = sum(c.cycles for c in sparse.layers if row.matches(c.layer) and c.phase in passes)
        return d / s if d and s else None
