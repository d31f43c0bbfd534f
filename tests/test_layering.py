"""Imports flow one way between the layers (STYLE.md G1); checked on the source with ast.

Layers: the contract (hw params, ISA, numerics, errors, files) imports only itself; the rest
of hw/ (gateware) imports the contract and hw/; models/ imports the contract; compiler/
imports the contract and models/ (never sim/ or gateware); sim/ imports anything below
reports/; reports/ imports everything; only the CLI imports reports/.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("hw", "compiler", "sim", "models", "reports")
CONTRACT = {
    "nmsat.hw.params",
    "nmsat.hw.isa",
    "nmsat.hw.isa_timing",
    "nmsat.hw.isa_asm",
    "nmsat.hw.isa_doc",
    "nmsat.hw.numerics",
    "nmsat.hw.errors",
    "nmsat.hw.files",
    "nmsat.hw",
}
ALLOWED = {
    "contract": {"contract"},
    "gateware": {"contract", "gateware"},
    "models": {"contract", "models"},
    "compiler": {"contract", "models", "compiler"},
    "sim": {"contract", "gateware", "models", "compiler", "sim"},
    "reports": {"contract", "gateware", "models", "compiler", "sim", "reports"},
    "root": {"contract", "gateware", "models", "compiler", "sim", "reports", "root"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["nmsat", *parts])


def _layer(module: str) -> str:
    if module in CONTRACT:
        return "contract"
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("cli", "__init__"):
        return "root"
    return {"hw": "gateware"}.get(parts[1], parts[1])


def _sources() -> list[Path]:
    files = [ROOT / "__init__.py", ROOT / "cli.py"]
    for folder in PACKAGE_DIRS:
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def _imports(path: Path) -> list[tuple[int, str]]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from nmsat.hw import isa` imports the module nmsat.hw.isa
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if candidate in CONTRACT or (ROOT / Path(*candidate.split(".")[1:])).exists():
                    found.append((node.lineno, candidate))
    return found


def test_import_direction() -> None:
    problems = []
    for path in _sources():
        source_layer = _layer(_module_name(path))
        for line, target in _imports(path):
            top = target.split(".")[0]
            if top in PACKAGE_DIRS or top == "cli":
                problems.append(f"{path.relative_to(ROOT)}:{line}: bare import of {target}")
            if top != "nmsat" or target == "nmsat":
                continue
            target_layer = _layer(target)
            if target_layer not in ALLOWED[source_layer]:
                problems.append(
                    f"{path.relative_to(ROOT)}:{line}: {source_layer} must not import "
                    f"{target} ({target_layer})"
                )
    assert not problems, "\n".join(problems)


def test_layer_rules_catch_a_violation(tmp_path: Path) -> None:
    # The checker itself must be able to fail: a contract module importing the compiler.
    assert "compiler" not in ALLOWED[_layer("nmsat.hw.isa")]
    assert _layer("nmsat.reports.accuracy") not in ALLOWED["models"]
    assert _layer("nmsat.hw.stce.pe") == "gateware"
    assert "gateware" not in ALLOWED["compiler"]


def test_contract_import_is_cheap() -> None:
    code = (
        "import sys, nmsat.hw.isa, nmsat.hw.params, nmsat.hw.isa_asm;"
        "bad = [m for m in sys.modules if m.startswith('nmsat.') and m.split('.')[1] in "
        "('compiler', 'sim', 'models', 'reports')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
