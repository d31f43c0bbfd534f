"""The ``nmsat`` command line: a thin dispatcher over the layers.

Each subcommand parses its arguments here and calls one library function of its layer,
imported lazily so that ``nmsat --help`` stays fast. User errors (:class:`NmsatError`) are
printed once, in one line, and give exit code 2; argparse's own errors give 2 as well; Ctrl-C
gives 130 (STYLE.md G16).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nmsat.hw.errors import NmsatError

__all__ = ["main", "run_main"]

_Handler = Callable[[argparse.Namespace], int]


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default="vcu1525",
        help="preset name (tiny, vcu1525) or YAML file (default: vcu1525)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one configuration key (repeatable), validated like the YAML",
    )


def _add_step_options(parser: argparse.ArgumentParser) -> None:
    """Options that describe one training step: configuration, model, pattern, switches."""
    _add_config(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="zoo name or YAML layer file")
    source.add_argument("--onnx", metavar="FILE", help="an exported ONNX model (docs/onnx.md)")
    parser.add_argument("--nm", default="2:8", help="N:M pattern like 2:8, or 'dense'")
    parser.add_argument(
        "--batch",
        type=_positive_int,
        default=None,
        help="samples per step (default 32; with --onnx, the graph's fixed batch if it has one)",
    )
    parser.add_argument(
        "--sparsity",
        choices=("bdwp", "forward"),
        default="bdwp",
        help="bdwp: N:M weights in FF and BP (default); forward: FF only",
    )
    parser.add_argument("--no-interleave", action="store_true", help="interleave mapping off")
    parser.add_argument("--no-pregen", action="store_true", help="pre-generation off")
    parser.add_argument("--no-schedule", action="store_true", help="offline scheduling off")


# -- handlers: each calls one library function -------------------------------------------------


def _cmd_params(args: argparse.Namespace) -> int:
    import yaml

    from nmsat.hw.params import load_params

    params = load_params(args.config, args.overrides)
    sys.stdout.write(yaml.safe_dump(params.to_dict(), sort_keys=False))
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from nmsat.hw.gen import TOP_NAME, generate
    from nmsat.hw.params import load_params

    params = load_params(args.config, args.overrides)
    result = generate(params, args.out)
    print(
        f"{params.name}: {result.verilog_bytes / 2**20:.1f} MiB of Verilog, "
        f"{result.port_count} ports, generated in {result.seconds:.1f} s"
    )
    print("wrote " + ", ".join(str(p) for p in result.paths))
    if not args.lint:
        return 0
    from nmsat.hw.lint import lint

    report = lint(result.paths[0], TOP_NAME, wall=True)
    counts = ", ".join(f"{name} {count}" for name, count in report.counts.items()) or "none"
    print(f"verilator --lint-only -Wall: {len(report.errors)} errors; warnings: {counts}")
    for message in report.unexpected[:20]:
        print(f"  {message.severity} {message.category} {message.file}:{message.line}: "
              f"{message.text}")  # fmt: skip
    print("lint: clean (only accepted warnings)" if report.clean else "lint: FAILED")
    return 0 if report.clean else 1


def _cmd_isa_asm(args: argparse.Namespace) -> int:
    from nmsat.hw.isa_asm import assemble, write_program

    text = _read_text(args.source)
    words = assemble(text)
    write_program(args.out, words)
    print(f"{args.out}: {len(words)} instructions")
    return 0


def _cmd_isa_disasm(args: argparse.Namespace) -> int:
    from nmsat.hw.isa_asm import disassemble, read_program

    sys.stdout.write(disassemble(read_program(args.program)))
    return 0


def _cmd_isa_cycles(args: argparse.Namespace) -> int:
    from nmsat.hw.isa import check_for_params, cycles, decode
    from nmsat.hw.isa_asm import format_instruction, read_program
    from nmsat.hw.params import load_params

    params = load_params(args.config, args.overrides)
    total = 0
    for pc, word in enumerate(read_program(args.program)):
        instr = decode(word)
        try:
            check_for_params(instr, params)
        except NmsatError as exc:
            raise NmsatError(f"pc {pc}: {exc}") from None
        cost = cycles(instr, params)
        total += cost
        print(f"{pc:6d} {cost:10d}  {format_instruction(instr)}")
    print(f"{'sum':>6} {total:10d}  (serial: queues not overlapped)")
    return 0


def _cmd_isa_doc(args: argparse.Namespace) -> int:
    from nmsat.hw.files import write_atomic
    from nmsat.hw.isa_doc import render

    text = render()
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.out, text)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from nmsat.models.nm import parse_nm
    from nmsat.models.train import TrainConfig, train, write_json

    n, m = parse_nm(args.nm)
    cfg = TrainConfig(
        model=args.model,
        dataset=args.dataset,
        n=n,
        m=m,
        sparsity=args.sparsity if n != m else "dense",
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
    )
    result = train(cfg, progress=not args.no_progress)
    if args.json is not None:
        write_json(result, args.json)
    print(
        f"{args.model} {args.nm} ({cfg.sparsity}): test accuracy {result.test_accuracy:.4f}, "
        f"final loss {result.loss_curve[-1]:.4f}, {result.seconds:.1f} s"
    )
    return 0


def _cmd_report_accuracy(args: argparse.Namespace) -> int:
    from nmsat.reports.accuracy import make_accuracy_report

    table = make_accuracy_report(
        Path(args.out),
        seeds=tuple(range(args.seeds)),
        epochs=args.epochs,
        progress=not args.no_progress,
    )
    print(table)
    print(f"written to {args.out}/ (README.md, accuracy.csv, accuracy.png)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from nmsat.hw.isa_asm import read_program
    from nmsat.hw.params import load_params
    from nmsat.sim.model import Machine

    params = load_params(args.config, args.overrides)
    words = read_program(args.program)
    machine = Machine(params, args.mode)
    machine.load_program(words)
    result = machine.run(args.start_pc)
    if result.status != "done":
        raise NmsatError(
            f"{args.program}: error at pc {result.pc} ({result.opcode or '?'}) after "
            f"{result.cycles} cycles: {result.cause}"
        )
    ev = result.events
    print(
        f"{args.program}: done in {result.cycles:,} cycles on {params.name} "
        f"({result.instructions} instructions from pc {args.start_pc}, {args.mode} mode)"
    )
    busy = {
        q: getattr(ev, f"busy_{q}_cycles") for q in ("load", "compute", "prune", "update", "store")
    }
    print("busy cycles: " + ", ".join(f"{q} {v:,}" for q, v in busy.items()))
    print(
        f"MACs executed {ev.macs_executed:,}, DRAM bytes read {ev.dram_read_bytes:,}, "
        f"written {ev.dram_write_bytes:,}"
    )
    return 0


def _cmd_report_speedup(args: argparse.Namespace) -> int:
    from nmsat.reports.speedup import (
        FORWARD_PATTERNS,
        PATTERNS,
        WORKLOADS,
        make_speedup_report,
    )

    models = tuple(args.models.split(",")) if args.models else WORKLOADS
    patterns = tuple(args.patterns.split(",")) if args.patterns else PATTERNS
    forward = tuple(p for p in FORWARD_PATTERNS if p in patterns)
    if args.forward_patterns is not None:
        forward = tuple(p for p in args.forward_patterns.split(",") if p and p != "none")
    table = make_speedup_report(
        Path(args.out),
        config=args.config,
        overrides=args.overrides,
        batch=args.batch,
        models=models,
        patterns=patterns,
        forward_patterns=forward,
        ablation_nm=None if args.no_ablation else ("2:8" if "2:8" in patterns else None),
        jobs=args.jobs,
        progress=not args.no_progress,
    )
    print(table)
    print(f"written to {args.out}/ (README.md, *.csv, summary.json, *.png)")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from nmsat.models.zoo import get_model, load_model_yaml, model_names

    if args.model is None:
        if args.onnx is not None:
            from nmsat.models.zoo import ModelError

            raise ModelError(f"--onnx needs a model; models: {', '.join(model_names())}")
        print("\n".join(model_names()))
        return 0
    batch = args.batch or 1
    if args.model.endswith((".yaml", ".yml")):
        model = load_model_yaml(args.model, batch)
    else:
        model = get_model(args.model, batch)
    if args.onnx is not None:
        from nmsat.compiler.onnx_export import save_onnx

        # A batch given on the command line is fixed in the graph; else the axis is symbolic.
        print(save_onnx(model, args.onnx, args.batch).summary())
        return 0
    print(model.summary())
    return 0


def _load_model(name: str, batch: int) -> Any:
    from nmsat.models.zoo import get_model, load_model_yaml

    if name.endswith((".yaml", ".yml")):
        return load_model_yaml(name, batch)
    return get_model(name, batch)


def _step_model(args: argparse.Namespace) -> Any:
    """The model of the step options: ``--model`` (zoo or YAML) or ``--onnx``."""
    if args.onnx is not None:
        from nmsat.compiler.onnx_import import load_onnx

        return load_onnx(args.onnx, args.batch)
    return _load_model(args.model, args.batch or 32)


def _compile(args: argparse.Namespace, model: Any = None) -> tuple[Any, Any]:
    """Compile the step the common options describe; return (params, program)."""
    from nmsat.compiler import CompileOptions, compile_model
    from nmsat.hw.params import format_nm, load_params
    from nmsat.models.nm import parse_nm

    params = load_params(args.config, args.overrides)
    n, m = parse_nm(args.nm)
    if n < m and not params.supports_nm(n, m):
        allowed = ", ".join(format_nm(*nm) for nm in params.nm_patterns)
        raise NmsatError(f"--nm {args.nm}: {params.name} supports dense, {allowed}")
    if model is None:
        model = _step_model(args)
    options = CompileOptions(
        interleave=not args.no_interleave, pregen=not args.no_pregen, schedule=not args.no_schedule
    )
    return params, compile_model(model, (n, m), params, options, sparsity=args.sparsity)


def _cmd_compile(args: argparse.Namespace) -> int:
    from collections import Counter

    from nmsat.compiler import emit, write_outputs

    params, prog = _compile(args)
    emitted = emit(prog)
    paths = write_outputs(emitted, args.out)
    phases = Counter(op.phase.value for op in prog.ops if op.opcode is not None)
    hosts = sum(1 for op in prog.ops if op.opcode is None)
    print(
        f"{prog.model} batch {prog.batch} {args.nm} on {params.name}: "
        f"{len(emitted.words)} instructions in {len(emitted.manifest['segments'])} segments, "
        f"{hosts} host operations, {emitted.manifest['dram_bytes'] / 2**20:.1f} MiB of tensors"
    )
    print("instructions by pass: " + ", ".join(f"{k} {v}" for k, v in sorted(phases.items())))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from nmsat.hw.files import write_atomic
    from nmsat.sim.step import simulate_step

    model = _step_model(args)
    params, prog = _compile(args, model)
    with tqdm(
        total=None, desc="segments", unit="seg", disable=args.no_progress or None, leave=False
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        summary = simulate_step(
            model,
            prog.nm,
            params,
            prog.options,
            mode=args.mode,
            energy_table=args.energy_table,
            progress=progress,
            program=prog,
        )
    record = summary.to_json()
    print(
        f"{record['model']} batch {record['batch']} {record['nm']} on {record['config']} "
        f"({args.mode} mode; optimisations: {prog.options.describe()})"
    )
    print(
        f"  cycles            {record['cycles']:>16,d}   {record['seconds'] * 1e3:.3f} ms at "
        f"{params.clock_hz / 1e6:g} MHz"
    )
    for name, value in record["passes"].items():
        share = value / max(1, record["cycles"])
        print(f"    {name:<15} {value:>16,d}   {share:6.1%}")
    print(f"  utilization       {record['utilization']:>16.1%}")
    print(
        f"  throughput        {record['throughput_effective_tmacs']:>16.3f}   TMAC/s effective "
        f"(dense-equivalent), {record['throughput_executed_tmacs']:.3f} executed"
    )
    print(
        f"  energy            {record['energy_pj'] / 1e6:>16.3f}   uJ (table "
        f"{record['energy_table']})"
    )
    hosts = record["host_ops"]
    if hosts:
        kinds = sorted({h["kind"] for h in hosts})
        print(f"  host operations   {len(hosts):>16d}   ({', '.join(kinds)}; not in cycles)")
    if args.json is not None:
        write_atomic(args.json, json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from nmsat.reports.pareto import write_pareto_plot
    from nmsat.sim.sweep import load_grid, plan_sweep, run_sweep

    grid = load_grid(args.grid)
    points = plan_sweep(
        grid,
        config=args.config,
        overrides=args.overrides,
        model=args.model,
        nm=args.nm,
        batch=args.batch,
    )
    result = run_sweep(
        points,
        args.out,
        swept=grid.keys,
        engine=args.engine,
        jobs=args.jobs,
        scheduler=args.scheduler,
        progress=not args.no_progress,
    )
    png = write_pareto_plot(result, Path(args.out) / "pareto.png")
    print(
        f"{len(result.rows)} points: {result.evaluated} simulated, {result.reused} reused, "
        f"{result.failed} where the model does not fit (error column)"
    )
    print(result.format_pareto())
    print(f"resources: ESTIMATE from {result.resource_table}, not a synthesis result")
    print("wrote " + ", ".join(str(p) for p in (*result.paths, png)))
    return 0


# -- parser ----------------------------------------------------------------------------------


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise NmsatError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise NmsatError(f"{path}: not a UTF-8 text file") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``nmsat`` (handlers in ``func``)."""
    parser = argparse.ArgumentParser(
        prog="nmsat",
        description="Design environment for SAT-style N:M sparse DNN training accelerators.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("params", help="print a validated hardware configuration as YAML")
    _add_config(p)
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser(
        "build", help="generate the accelerator's Verilog, port map and parameter header"
    )
    _add_config(p)
    p.add_argument("--out", default="build/rtl", help="output folder (default: build/rtl)")
    p.add_argument(
        "--lint",
        action="store_true",
        help="then run Verilator --lint-only (-Wall) on the Verilog; exit 1 on an error or "
        "a warning not accepted in docs/hw.md",
    )
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("isa", help="assemble, disassemble and document programs")
    isa_sub = p.add_subparsers(dest="isa_command", required=True, metavar="ACTION")
    q = isa_sub.add_parser("asm", help="assemble a text program into a .nmsb program file")
    q.add_argument("source", help="assembly text file")
    q.add_argument("--out", required=True, help="program file to write")
    q.set_defaults(func=_cmd_isa_asm)
    q = isa_sub.add_parser("disasm", help="print a program file as assembly text")
    q.add_argument("program", help=".nmsb program file")
    q.set_defaults(func=_cmd_isa_disasm)
    q = isa_sub.add_parser("cycles", help="print each instruction's cycles on a configuration")
    q.add_argument("program", help=".nmsb program file")
    _add_config(q)
    q.set_defaults(func=_cmd_isa_cycles)
    q = isa_sub.add_parser("doc", help="print or write docs/isa.md")
    q.add_argument("--out", default=None, help="file to write (default: standard output)")
    q.set_defaults(func=_cmd_isa_doc)

    p = sub.add_parser("train", help="train a small model with BDWP in numpy")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--dataset", choices=("digits",), default="digits")
    p.add_argument("--nm", default="2:8", help="N:M pattern like 2:8, or 'dense'")
    p.add_argument(
        "--sparsity",
        choices=("bdwp", "forward"),
        default="bdwp",
        help="bdwp: N:M weights in FF and BP (default); forward: FF only (SR-STE)",
    )
    p.add_argument("--epochs", type=_positive_int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=_positive_float, default=0.1)
    p.add_argument("--json", default=None, help="write the result as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "report",
        help="the evaluation report: speedup, forward-only vs BDWP, ablation, energy, roofline "
        "(Markdown, CSV, JSON, PNG); 'report accuracy' for the accuracy one",
    )
    _add_config(p)
    p.add_argument("--out", default="build/reports/speedup", help="output folder")
    p.add_argument("--batch", type=_positive_int, default=32, help="samples per step")
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated zoo models (default: resnet18, resnet50, vgg16, vit_b16, bert_base)",
    )
    p.add_argument(
        "--patterns",
        default=None,
        help="comma-separated N:M patterns (default: dense, 2:4, 4:8, 2:8, 1:8)",
    )
    p.add_argument(
        "--forward-patterns",
        default=None,
        help="patterns also run forward-only (SR-STE: BP dense), among --patterns "
        "(default: 2:8; 'none' for none)",
    )
    p.add_argument("--no-ablation", action="store_true", help="skip the ablation runs")
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="worker processes (default: the usable CPUs)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_report_speedup)
    rep_sub = p.add_subparsers(dest="report", required=False, metavar="REPORT")
    q = rep_sub.add_parser("accuracy", help="what N:M costs in accuracy (BDWP training)")
    q.add_argument("--out", default="build/reports/accuracy", help="output folder")
    q.add_argument("--seeds", type=_positive_int, default=3, help="seeds per setting")
    q.add_argument("--epochs", type=_positive_int, default=30)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_report_accuracy)

    p = sub.add_parser("compile", help="compile a training step to an instruction program")
    _add_step_options(p)
    p.add_argument("--out", required=True, help="output base name: writes .nmsb, .s and .json")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("run", help="run a program file (.nmsb) on the Python model")
    p.add_argument("program", help=".nmsb program file")
    _add_config(p)
    p.add_argument("--mode", choices=("perf", "fast", "exact"), default="perf")
    p.add_argument("--start-pc", type=int, default=0, help="first instruction (default 0)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("simulate", help="simulate a training step: cycles, passes, energy")
    _add_step_options(p)
    p.add_argument(
        "--mode",
        choices=("perf", "fast", "exact"),
        default="perf",
        help="perf: timing and events; fast/exact: also the data (small models)",
    )
    p.add_argument(
        "--energy-table",
        default=None,
        help="energy table name or YAML file (default: the configuration's)",
    )
    p.add_argument("--json", default=None, help="write the result as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser(
        "sweep", help="simulate a grid of configurations: CSV results and a Pareto plot"
    )
    _add_config(p)
    p.add_argument("--grid", required=True, help="YAML grid: parameter -> list of values")
    p.add_argument("--model", default=None, help="zoo name or YAML layer file (unless swept)")
    p.add_argument("--nm", default=None, help="N:M pattern unless swept (default: 2:8)")
    p.add_argument("--batch", type=_positive_int, default=32, help="samples per step")
    p.add_argument(
        "--engine",
        choices=("local", "dask"),
        default="local",
        help="local: a process pool (default); dask: a Dask cluster",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDR",
        help="Dask scheduler address (default with --engine dask: a LocalCluster)",
    )
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="worker processes (default: the usable CPUs)",
    )
    p.add_argument("--out", required=True, help="output folder (reruns resume there)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("zoo", help="list the model zoo, print a model's layers or write it as ONNX")
    p.add_argument("model", nargs="?", default=None, help="zoo name or a YAML layer file")
    p.add_argument(
        "--batch",
        type=_positive_int,
        default=None,
        help="samples per step (default 1); with --onnx, fixes the graph's batch axis "
        "(default: symbolic)",
    )
    p.add_argument(
        "--onnx",
        metavar="FILE",
        default=None,
        help="write the model as an ONNX file with random weights (docs/onnx.md)",
    )
    p.set_defaults(func=_cmd_zoo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nmsat`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help gives 0, bad arguments give 2
        return exc.code if isinstance(exc.code, int) else 2
    handler: _Handler = args.func
    try:
        return handler(args)
    except NmsatError as exc:
        print(f"nmsat: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nmsat: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def run_main() -> None:
    """Entry point of the ``nmsat`` console script."""
    sys.exit(main())
