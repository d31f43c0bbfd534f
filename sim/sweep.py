"""Design-space sweeps: one simulated training step per point of a parameter grid.

A grid is a YAML mapping of parameter -> list of values (:func:`load_grid`); the sweep is
their cartesian product. A key is any :class:`~nmsat.hw.params.SATParams` field (set on top
of the base configuration exactly like ``nmsat params --set key=value``, with the same
validation), ``nm`` (the N:M pattern of the step) or ``model`` (a zoo name or a YAML layer
file). :func:`plan_sweep` validates EVERY point before anything runs, so a bad grid costs
milliseconds, not a half-finished sweep.

:func:`run_sweep` evaluates the points that have no result yet, on a local process pool
(default) or a Dask cluster (``engine="dask"``: a ``distributed.LocalCluster``, or the
scheduler at an address), and writes into the output folder:

- ``points/<key>.json``: one file per finished point, written atomically as soon as the point
  finishes; ``<key>`` is a stable hash of everything the result depends on (the resolved
  parameters, the model's layers, the batch, the pattern, the compiler options). A rerun,
  after an interruption or with a grown grid, skips every point whose file exists;
- ``results.csv`` (and ``results.parquet`` when pyarrow is importable): one row per point in
  grid order, assembled from the point files and written atomically at the end, so an
  interrupted sweep never leaves a half-written results file.

A point whose model does not fit the configuration (a ShapeError from the compiler, or any
other one-line :class:`~nmsat.hw.errors.NmsatError` of the step) is a row with its message in
the ``error`` column, not a crash. Every row also carries the configuration's resource
ESTIMATE (:mod:`nmsat.sim.resources`) and whether it is Pareto-optimal among the points of its
model when cycles, energy and the binding resource's share of the device are all minimised:
with static power charged per cycle, a faster design is usually also the more frugal one,
so cycles and energy alone leave a front of one point; the resources are the real price of
speed. The Pareto plot is drawn by :mod:`nmsat.reports.pareto`.

Ref: DESIGN.md sections 6 and 7; STYLE.md G18 (atomic outputs, reruns give the same bytes).
Ref: Dask.distributed documentation: ``LocalCluster``, ``Client.map``, ``as_completed``.
Ref: K. Deb, "Multi-Objective Optimization Using Evolutionary Algorithms", Wiley 2001
     (Pareto dominance).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import importlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from tqdm import tqdm

from nmsat.compiler import CompileOptions
from nmsat.hw.errors import ConfigError, NmsatError
from nmsat.hw.files import read_yaml_mapping, write_atomic
from nmsat.hw.params import SATParams, format_nm, load_params
from nmsat.models.nm import parse_nm
from nmsat.models.zoo import Model, get_model, load_model_yaml
from nmsat.sim.energy import gflops_per_watt, load_energy_table
from nmsat.sim.resources import (
    DEFAULT_TABLE,
    RESOURCE_KINDS,
    ResourceTable,
    estimate_resources,
    load_resource_table,
)
from nmsat.sim.step import simulate_step

__all__ = [
    "ENGINES",
    "EXTRA_KEYS",
    "LOCAL_CLUSTER_OPTIONS",
    "RESULT_COLUMNS",
    "Grid",
    "SweepPoint",
    "SweepResult",
    "evaluate_point",
    "grid_keys",
    "load_grid",
    "pareto_mask",
    "plan_sweep",
    "run_sweep",
]

#: Version of the point files' content; a change makes every point new (a new hash).
SCHEMA_VERSION = 1

#: Grid keys that are not SATParams fields.
EXTRA_KEYS = ("model", "nm")

#: Execution engines of :func:`run_sweep`.
ENGINES = ("local", "dask")

#: Options of the ``distributed.LocalCluster`` that ``engine="dask"`` starts without a
#: scheduler address (``n_workers`` comes from ``jobs``). Worker processes, one thread each:
#: the simulator is pure Python and holds the GIL.
LOCAL_CLUSTER_OPTIONS: dict[str, Any] = {
    "processes": True,
    "threads_per_worker": 1,
    "dashboard_address": None,
    "silence_logs": logging.ERROR,
}

#: Result columns of every row, after the swept values and the fixed coordinates.
RESULT_COLUMNS = (
    "cycles",
    "seconds",
    "energy_j",
    "energy_table",
    "gflops_per_w",
    "utilization",
    "throughput_effective_tmacs",
    *RESOURCE_KINDS,
    *(f"{k}_pct" for k in RESOURCE_KINDS),
    "device_pct",
    "resource_estimate",
    "fits_device",
    "pareto",
    "error",
)

_POINTS_DIR = "points"
_CSV_NAME = "results.csv"
_PARQUET_NAME = "results.parquet"


def grid_keys() -> tuple[str, ...]:
    """Return every key a grid may sweep: the SATParams fields, then ``model`` and ``nm``."""
    return (*(f.name for f in dataclasses.fields(SATParams)), *EXTRA_KEYS)


# -- the grid --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Grid:
    """A parsed grid: the swept keys in file order and their values.

    Members
    -------
    path : str
        Where the grid came from (named in error messages).
    values : mapping of str to tuple
        Each key's values, in file order; ``nm`` values are normalised to ``"N:M"`` or
        ``"dense"``.
    """

    path: str
    values: Mapping[str, tuple[Any, ...]]

    @property
    def keys(self) -> tuple[str, ...]:
        """The swept keys, in file order."""
        return tuple(self.values)

    @property
    def size(self) -> int:
        """Number of points (the product of the list lengths)."""
        size = 1
        for values in self.values.values():
            size *= len(values)
        return size

    def points(self) -> list[dict[str, Any]]:
        """Every point as ``{key: value}``, in cartesian-product order (last key fastest)."""
        keys = self.keys
        return [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*self.values.values())
        ]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file (a mapping of key -> non-empty list of values).

    Raises
    ------
    ConfigError
        In one line naming the file and the key: unreadable or malformed file, not a mapping,
        no keys, an unknown key, a value that is not a list, an empty list, a value that is
        not a number, string, list or mapping, a value listed twice, an ``nm`` that is not a
        pattern, a ``model`` that is not a string.
    """
    where = str(path)
    data = read_yaml_mapping(path, "a mapping of parameter -> list of values")
    if not data:
        raise ConfigError(f"{where}: no parameters to sweep")
    allowed = grid_keys()
    values: dict[str, tuple[Any, ...]] = {}
    for key, items in data.items():
        if key not in allowed:
            raise ConfigError(f"{where}: {key}: unknown key; allowed: {', '.join(allowed)}")
        if not isinstance(items, list):
            raise ConfigError(f"{where}: {key}: expected a list of values, got {items!r}")
        if not items:
            raise ConfigError(f"{where}: {key}: empty list; give at least one value")
        seen: set[str] = set()
        parsed = []
        for item in items:
            item = _check_value(where, key, item)
            text_value = _canonical(item)
            if text_value in seen:
                raise ConfigError(f"{where}: {key}: {item!r} is listed twice")
            seen.add(text_value)
            parsed.append(item)
        values[key] = tuple(parsed)
    return Grid(where, MappingProxyType(values))


def _check_value(where: str, key: str, item: Any) -> Any:
    if key == "nm":
        if not isinstance(item, str):
            hint = (
                " (quote N:M patterns: YAML reads 2:8 as the number 128)"
                if isinstance(item, int)
                else ""
            )
            raise ConfigError(
                f"{where}: nm: expected a pattern like '2:8' or 'dense', got {item!r}{hint}"
            )
        try:
            return format_nm(*parse_nm(item))
        except NmsatError as exc:
            raise ConfigError(f"{where}: nm: {exc}") from None
    if key == "model":
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{where}: model: expected a zoo name or a YAML file, got {item!r}")
        return item
    try:
        _canonical(item)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: {key}: expected a number, string, list or mapping, got {item!r}"
        ) from None
    return item


# -- planning --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One validated point, ready to evaluate in any process.

    Members
    -------
    key : str
        Stable hash of everything the result depends on (the point file's name).
    values : mapping of str to Any
        The swept values of this point, keyed like the grid.
    params : SATParams
        The resolved configuration.
    model : Model
        The model at the sweep's batch (shipped whole: workers need no file access).
    nm : (int, int)
        The pattern of the step.
    options : CompileOptions
        The dataflow optimisations.
    """

    key: str
    values: Mapping[str, Any]
    params: SATParams
    model: Model
    nm: tuple[int, int]
    options: CompileOptions

    @property
    def nm_text(self) -> str:
        """``"N:M"`` or ``"dense"``."""
        return format_nm(*self.nm)


def _load_model(name: str, batch: int) -> Model:
    if name.endswith((".yaml", ".yml")):
        return load_model_yaml(name, batch)
    return get_model(name, batch)


def _override(key: str, value: Any) -> str:
    # JSON is YAML: load_params reads the value back exactly (numbers, strings, lists, maps).
    return f"{key}={_canonical(value)}"


def _point_key(
    params: SATParams, model: Model, nm: tuple[int, int], options: CompileOptions
) -> str:
    identity = {
        "schema": SCHEMA_VERSION,
        "params": params.to_dict(),
        "model": hashlib.sha256(repr(model).encode("utf-8")).hexdigest(),
        "batch": model.batch,
        "nm": format_nm(*nm),
        "sparsity": "bdwp",
        "mode": "perf",
        "options": dataclasses.asdict(options),
    }
    return hashlib.sha256(_canonical(identity).encode("utf-8")).hexdigest()[:20]


def plan_sweep(
    grid: Grid,
    *,
    config: str | Path,
    overrides: Sequence[str] = (),
    model: str | None = None,
    nm: str | None = None,
    batch: int = 32,
    options: CompileOptions | None = None,
) -> list[SweepPoint]:
    """Validate every point of ``grid`` on ``config`` and return them in grid order.

    Parameters
    ----------
    grid
        The grid (:func:`load_grid`).
    config, overrides
        The base configuration and its ``--set`` overrides; each point's SATParams values
        are applied after them.
    model
        The model when the grid has no ``model`` key.
    nm
        The pattern when the grid has no ``nm`` key (default ``"2:8"``).
    batch
        Samples per training step.
    options
        The dataflow optimisations (default: all on).

    Raises
    ------
    NmsatError
        In one line, before anything runs: an invalid configuration at any point, a pattern
        that a point's configuration does not support, an unknown model or energy table,
        no model at all, or two points that are the same configuration.
    """
    options = options or CompileOptions()
    base = load_params(config, overrides)  # a bad --set fails here, without the grid's name
    where = grid.path
    if "model" in grid.values and model is not None:
        raise ConfigError(f"{where}: model is swept by the grid; drop --model")
    if "nm" in grid.values and nm is not None:
        raise ConfigError(f"{where}: nm is swept by the grid; drop --nm")
    models = grid.values.get("model", (model,) if model is not None else ())
    if not models:
        raise ConfigError(f"{where}: no model: give --model or a 'model' list in the grid")
    loaded: dict[str, Model] = {}
    for name in models:
        try:
            loaded[name] = _load_model(name, batch)
        except NmsatError as exc:
            raise ConfigError(f"{where}: model: {exc}") from None
    default_nm = format_nm(*parse_nm(nm or "2:8"))
    param_keys = [k for k in grid.keys if k not in EXTRA_KEYS]
    # Each value alone first, so the message names the one bad value.
    for key in param_keys:
        for value in grid.values[key]:
            _resolve(config, overrides, {key: value}, where)
    resolved: dict[str, SATParams] = {}
    tables: set[str] = {base.energy_table}
    points: list[SweepPoint] = []
    seen: dict[str, dict[str, Any]] = {}
    for values in grid.points():
        param_values = {k: values[k] for k in param_keys}
        cache_key = _canonical(param_values)
        params = resolved.get(cache_key)
        if params is None:
            params = _resolve(config, overrides, param_values, where)
            resolved[cache_key] = params
            tables.add(params.energy_table)
        pattern = parse_nm(values.get("nm", default_nm))
        n, m = pattern
        if n < m and not params.supports_nm(n, m):
            supported = ", ".join(["dense", *(format_nm(*p) for p in params.nm_patterns)])
            with_values = f" with {_describe(param_values)}" if param_values else ""
            raise ConfigError(
                f"{where}: nm {format_nm(n, m)}: not supported by {params.name}{with_values}; "
                f"supported: {supported}"
            )
        point_model = loaded[str(values.get("model", model))]
        key = _point_key(params, point_model, pattern, options)
        if key in seen:
            raise ConfigError(
                f"{where}: points {_describe(seen[key])} and {_describe(values)} are the same "
                "configuration"
            )
        seen[key] = values
        points.append(SweepPoint(key, dict(values), params, point_model, pattern, options))
    for table in sorted(tables):
        try:
            load_energy_table(table)
        except NmsatError as exc:
            raise ConfigError(f"{where}: energy_table: {exc}") from None
    return points


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_format_value(v)}" for k, v in values.items()) or "the base config"


def _resolve(
    config: str | Path, overrides: Sequence[str], values: Mapping[str, Any], where: str
) -> SATParams:
    sets = [*overrides, *(_override(k, v) for k, v in values.items())]
    try:
        return load_params(config, sets)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# -- evaluating ------------------------------------------------------------------------------


def evaluate_point(point: SweepPoint) -> dict[str, Any]:
    """Simulate one point (perf mode); a top-level function for worker processes.

    Returns
    -------
    dict
        ``{"result": record}`` with the step's JSON record (:meth:`StepSummary.to_json`,
        host operations counted, not listed), or ``{"error": message}`` when the step
        raised an :class:`NmsatError` (a model that does not fit the configuration).
    """
    try:
        summary = simulate_step(point.model, point.nm, point.params, point.options, mode="perf")
    except NmsatError as exc:
        return {"error": str(exc)}
    record = summary.to_json()
    record["host_ops"] = len(record["host_ops"])
    return {"result": record}


def _point_document(point: SweepPoint, outcome: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "key": point.key,
        "values": dict(point.values),
        "config": point.params.name,
        "model": point.model.name,
        "batch": point.model.batch,
        "nm": point.nm_text,
        "params": point.params.to_dict(),
        **outcome,
    }


def _read_point(path: Path, key: str) -> dict[str, Any] | None:
    """A finished point's document, or None when the file is missing or unusable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(doc, dict)
        and doc.get("key") == key
        and doc.get("schema") == SCHEMA_VERSION
        and ("result" in doc or "error" in doc)
    )
    return doc if ok else None


# -- engines ---------------------------------------------------------------------------------

_Done = Callable[[SweepPoint, dict[str, Any]], None]


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _evaluate_keyed(point: SweepPoint) -> tuple[str, dict[str, Any]]:
    return point.key, evaluate_point(point)


def _run_local(todo: Sequence[SweepPoint], workers: int, done: _Done) -> None:
    if workers == 1:
        for point in todo:
            done(point, evaluate_point(point))
        return
    by_key = {point.key: point for point in todo}
    # spawn: a fresh interpreter per worker, safe whatever threads the parent runs. Leaving
    # the block terminates the workers, so Ctrl-C does not wait for the points in flight.
    with multiprocessing.get_context("spawn").Pool(workers, _ignore_sigint) as pool:
        for key, outcome in pool.imap_unordered(_evaluate_keyed, todo, chunksize=1):
            done(by_key[key], outcome)


def _run_dask(todo: Sequence[SweepPoint], workers: int, scheduler: str | None, done: _Done) -> None:
    try:
        distributed = importlib.import_module("distributed")
    except ImportError:
        raise NmsatError(
            "--engine dask needs Dask's distributed scheduler: pip install 'nmsat[dask]'"
        ) from None
    cluster = None
    try:
        if scheduler is None:
            cluster = distributed.LocalCluster(n_workers=workers, **LOCAL_CLUSTER_OPTIONS)
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(scheduler)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        target = scheduler or "a LocalCluster"
        raise NmsatError(f"--scheduler {target}: cannot connect ({exc})") from None
    futures: list[Any] = []
    try:
        futures = client.map(evaluate_point, list(todo), pure=False)
        by_key = {future.key: point for future, point in zip(futures, todo, strict=True)}
        for future in distributed.as_completed(futures):
            done(by_key[future.key], future.result())
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# -- results ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its rows and what was done.

    Members
    -------
    rows : list of dict
        One row per point in grid order, keyed by :attr:`columns`.
    columns : tuple of str
        The point key, the swept keys, the fixed coordinates, then :data:`RESULT_COLUMNS`.
    swept : tuple of str
        The grid's keys.
    evaluated, reused : int
        Points simulated by this run, and points whose files an earlier run left.
    paths : tuple of Path
        The results files written.
    resource_table : str
        Name of the resource estimate's table; ``device`` is its FPGA.
    """

    rows: list[dict[str, Any]]
    columns: tuple[str, ...]
    swept: tuple[str, ...]
    evaluated: int
    reused: int
    paths: tuple[Path, ...]
    resource_table: str
    device: str

    @property
    def failed(self) -> int:
        """Points whose model does not fit their configuration (an ``error`` row)."""
        return sum(1 for row in self.rows if row["error"] is not None)

    def format_pareto(self) -> str:
        """A text table of the Pareto-optimal points of each model, fastest first."""
        lines = []
        for group, rows in _groups(self.rows).items():
            front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["cycles"])
            lines.append(f"Pareto-optimal points (cycles, energy, resources), {group}:")
            varying = _varying(self.swept, rows)
            labels = [_describe({k: row[k] for k in varying}) for row in front]
            width = max((len(label) for label in labels), default=0)
            for row, label in zip(front, labels, strict=True):
                lines.append(
                    f"  {label:<{width}}  {row['cycles']:>13,d} cycles"
                    f" {row['seconds'] * 1e3:9.3f} ms {row['energy_j'] * 1e3:10.3f} mJ"
                    f" {row['gflops_per_w']:7.1f} GFLOPS/W {row['device_pct']:6.1f} % of "
                    f"{self.device}"
                )
            if not front:
                lines.append("  (none: no configuration both runs the model and fits the device)")
        return "\n".join(lines)


def _group_name(row: Mapping[str, Any]) -> str:
    return f"{row['model']} batch {row['batch']}"


def _groups(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(_group_name(row), []).append(row)
    return out


def _varying(keys: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys that take more than one value among ``rows`` (all keys if none varies)."""
    varying = [k for k in keys if len({_canonical(r[k]) for r in rows}) > 1]
    return varying or list(keys)


def pareto_mask(points: Sequence[Sequence[float] | None]) -> list[bool]:
    """Which points are Pareto-optimal when every coordinate is minimised.

    A point is optimal when no other point is at most as large in every coordinate and
    smaller in one. ``None`` entries (failed points) are never optimal and dominate nothing;
    equal points are all optimal.
    """
    index = [i for i, p in enumerate(points) if p is not None]
    mask = [False] * len(points)
    if not index:
        return mask
    coords = np.array([points[i] for i in index], dtype=np.float64)
    for row, i in enumerate(index):
        p = coords[row]
        dominated = np.any(np.all(coords <= p, axis=1) & np.any(coords < p, axis=1))
        mask[i] = not bool(dominated)
    return mask


def _objectives(row: Mapping[str, Any]) -> tuple[float, float, float]:
    """What a sweep minimises: cycles, energy and the binding resource's share of the device."""
    return float(row["cycles"]), float(row["energy_j"]), float(row["device_pct"])


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e6:
        return f"{value:g}"
    return _canonical(value) if isinstance(value, list | dict) else str(value)


def _row(point: SweepPoint, doc: Mapping[str, Any], table: ResourceTable) -> dict[str, Any]:
    row: dict[str, Any] = {"point": point.key}
    for key, value in point.values.items():
        row[key] = value if isinstance(value, int | float | str) else _canonical(value)
    if "model" not in row:
        row["model"] = point.model.name
    if "nm" not in row:
        row["nm"] = point.nm_text
    row["batch"] = point.model.batch
    row["config"] = point.params.name
    rec = doc.get("result")
    res = estimate_resources(point.params, table)
    pct = res.percent()
    total = res.total
    row.update(dict.fromkeys(RESULT_COLUMNS))
    # The configuration's table (the step priced with it); also what a swept energy_table
    # column shows, so the two never disagree.
    row["energy_table"] = point.params.energy_table
    if rec is not None:
        energy_j = float(rec["energy_pj"]) * 1e-12
        row.update(
            cycles=int(rec["cycles"]),
            seconds=float(rec["seconds"]),
            energy_j=energy_j,
            gflops_per_w=gflops_per_watt(rec["macs_dense_equivalent"], rec["energy_pj"]),
            utilization=float(rec["utilization"]),
            throughput_effective_tmacs=float(rec["throughput_effective_tmacs"]),
        )
    for kind in RESOURCE_KINDS:
        row[kind] = getattr(total, kind)
        row[f"{kind}_pct"] = round(pct[kind], 3)
    row.update(
        resource_estimate=res.table,
        device_pct=round(res.max_percent, 3),
        fits_device=res.fits,
        pareto=False,
        error=doc.get("error"),
    )
    return row


def _columns(swept: Sequence[str]) -> tuple[str, ...]:
    fixed = [k for k in ("model", "nm") if k not in swept]
    results = [c for c in RESULT_COLUMNS if c not in swept]  # a swept energy_table: once
    return ("point", *swept, *fixed, "batch", "config", *results)


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return buffer.getvalue()


def _parquet_bytes(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bytes | None:
    """The rows as Parquet, or None when pyarrow is not importable (it is optional)."""
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        return None
    data: dict[str, list[Any]] = {}
    for column in columns:
        values = [row[column] for row in rows]
        kinds = {type(v) for v in values if v is not None}
        if len(kinds) > 1:  # e.g. 100 and 2.5e8 in one swept column: store the text
            values = [None if v is None else _format_value(v) for v in values]
        data[column] = values
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(data), sink)
    return bytes(sink.getvalue().to_pybytes())


def run_sweep(
    points: Sequence[SweepPoint],
    out_dir: str | Path,
    *,
    swept: Sequence[str] | None = None,
    engine: str = "local",
    jobs: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    resource_table: str | Path | None = None,
) -> SweepResult:
    """Evaluate the points that have no result in ``out_dir`` yet and write the results.

    Parameters
    ----------
    points
        The validated points (:func:`plan_sweep`), in grid order.
    out_dir
        Output folder: ``points/`` (one JSON file per point), ``results.csv`` and, when
        pyarrow is importable, ``results.parquet``.
    swept
        The grid's keys (default: the keys of the first point's values).
    engine
        ``"local"``: a process pool of ``jobs`` workers (``jobs=1``: this process);
        ``"dask"``: a Dask cluster, at ``scheduler`` or a new ``distributed.LocalCluster``
        of ``jobs`` workers.
    jobs
        Workers (default: the usable CPUs, at most one per point to evaluate).
    scheduler
        Address of a running Dask scheduler (``engine="dask"`` only).
    progress
        Show a progress bar on standard error.
    resource_table
        Resource table name or file (default ``xcvu9p_estimate``).

    Raises
    ------
    NmsatError
        For a bad engine, scheduler or missing Dask. Finished points stay on disk when the
        sweep is interrupted; the results files are only (re)written once every point has
        finished.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r}: allowed: {', '.join(ENGINES)}")
    if scheduler is not None and engine != "dask":
        raise ConfigError(f"--scheduler {scheduler}: needs --engine dask")
    table = load_resource_table(resource_table or DEFAULT_TABLE)
    swept = tuple(swept if swept is not None else (points[0].values if points else ()))
    out = Path(out_dir)
    points_dir = out / _POINTS_DIR
    points_dir.mkdir(parents=True, exist_ok=True)
    docs: dict[str, dict[str, Any]] = {}
    for point in points:
        doc = _read_point(points_dir / f"{point.key}.json", point.key)
        if doc is not None:
            docs[point.key] = doc
    todo = [p for p in points if p.key not in docs]
    reused = len(points) - len(todo)
    workers = max(1, min(jobs or _usable_cpus(), max(1, len(todo))))
    bar = tqdm(
        total=len(points),
        initial=reused,
        desc="sweep",
        unit="point",
        file=sys.stderr,
        disable=not progress,
    )

    def done(point: SweepPoint, outcome: dict[str, Any]) -> None:
        doc = _point_document(point, outcome)
        write_atomic(points_dir / f"{point.key}.json", json.dumps(doc, indent=1) + "\n")
        docs[point.key] = doc
        bar.update(1)

    with bar:
        if todo:
            if engine == "local":
                _run_local(todo, workers, done)
            else:
                _run_dask(todo, workers, scheduler, done)
    rows = [_row(point, docs[point.key], table) for point in points]
    for group in _groups(rows).values():
        # A design beyond the device (by the estimate) is not a candidate: the front is
        # drawn among the points that fit.
        coords = [
            None if r["error"] is not None or not r["fits_device"] else _objectives(r)
            for r in group
        ]
        for row, optimal in zip(group, pareto_mask(coords), strict=True):
            row["pareto"] = optimal
    columns = _columns(swept)
    paths = [out / _CSV_NAME]
    text = _csv_text(rows, columns)
    parquet = _parquet_bytes(rows, columns)  # both ready before either file is replaced
    write_atomic(paths[0], text)
    if parquet is not None:
        paths.append(out / _PARQUET_NAME)
        write_atomic(paths[1], parquet)
    else:
        with contextlib.suppress(FileNotFoundError):
            (out / _PARQUET_NAME).unlink()  # never leave a stale one beside a new CSV
    return SweepResult(
        rows, columns, swept, len(todo), reused, tuple(paths), table.name, table.device.name
    )
