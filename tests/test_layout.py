"""Tier 1: the package layout the README's map describes, checked on the source (no model).

What may import what is the map in the README's Development section; this test is its enforcement,
so the two change together. It reads every module's imports (top-level and inside functions) with
`ast`, so a lazy import counts the same as an eager one.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

KIA = Path(__file__).resolve().parents[1] / "kia"
MAX_LINES = 400

PLUMBING = {"errors", "artifacts", "stats"}
# package -> the kia packages it may import (plumbing is always allowed, except by errors itself)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "artifacts": {"errors"},
    "stats": set(),
    "facts": set(),
    "engines": set(),
    "toyworld": set(),
    "report": set(),
    "contamination": set(),
    "judge": {"facts", "engines"},
    "cluster": {"engines"},
    "probe": {"facts", "engines", "cluster"},
    "build": {"facts", "engines", "probe", "contamination"},
    "inject": {"facts", "engines", "probe"},
    "audit": {"facts", "engines", "probe", "report", "cluster", "contamination", "judge"},
    "sweep": {"facts", "engines", "probe", "build", "inject", "audit"},
    "demo": {"engines", "probe", "build", "inject", "audit"},
    "commands": {
        "facts",
        "engines",
        "probe",
        "build",
        "inject",
        "audit",
        "report",
        "sweep",
        "demo",
        "toyworld",
        "contamination",
        "cluster",
    },
    "cli": {"commands"},
    "train": {"inject"},  # deprecated re-export of kia.inject, for one release
}
STAGES = {
    "probe": ("ProbeConfig", "probe", "ProbeResult"),
    "build": ("BuildConfig", "build", "BuildResult"),
    "inject": ("InjectConfig", "inject", "InjectResult"),
    "audit": ("AuditConfig", "audit", "AuditResult"),
    "report": ("render_report",),
    "sweep": ("SweepConfig", "sweep", "SweepResult"),
}
# Modules another package may import by path: they bring torch or vLLM, so their package's
# __init__ does not import them (`kia --help` and `import kia.engines` stay instant).
HEAVY = {"kia.engines.hf", "kia.engines.vllm", "kia.engines.scripted"}


def modules() -> list[Path]:
    return sorted(p for p in KIA.rglob("*.py") if "__pycache__" not in p.parts)


def owner(path: Path) -> str:
    """The package (or flat module) a file belongs to: kia/probe/run.py -> probe, kia/cli.py -> cli."""
    rel = path.relative_to(KIA).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def kia_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `kia.*` module this file imports, `from kia.x import y` as kia.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "kia":
                found += [(node.lineno, f"kia.{a.name}") for a in node.names]
            elif node.module.startswith("kia."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("kia.")]
    return found


def test_every_package_is_in_the_map():
    owners = {owner(p) for p in modules()} - {"__init__", "__main__"}
    assert owners == set(ALLOWED), "a package was added or removed: update ALLOWED and the README's map"


def test_packages_import_only_what_the_map_allows():
    bad = []
    for path in modules():
        me = owner(path)
        if me in ("__init__", "__main__"):
            continue
        for line, module in kia_imports(path):
            target = module.split(".")[1]
            if target == me:
                continue
            allowed = ALLOWED[me] | (PLUMBING - {me} if me != "errors" else set())
            if target not in allowed:
                bad.append(f"{path.relative_to(KIA.parent)}:{line} imports {module} ({me} may not import {target})")
    assert not bad, "\n".join(bad)


def test_other_packages_are_used_through_their_init():
    bad = []
    for path in modules():
        me = owner(path)
        for line, module in kia_imports(path):
            parts = module.split(".")
            if len(parts) > 2 and parts[1] != me and module not in HEAVY:
                bad.append(f"{path.relative_to(KIA.parent)}:{line} imports {module}: use kia.{parts[1]}")
    assert not bad, "\n".join(bad)


def test_the_package_graph_has_no_cycle():
    graph = {p: {t for t in deps if t in ALLOWED} for p, deps in ALLOWED.items()}
    for p in graph:
        graph[p] |= PLUMBING - {p} if p not in PLUMBING else graph[p]

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"cycle: {' -> '.join((*path, node))}"
        for nxt in graph[node]:
            visit(nxt, (*path, node))

    for p in graph:
        visit(p, ())


def test_no_module_is_over_the_size_limit():
    long = [
        f"{p.relative_to(KIA.parent)}: {n}" for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, f"modules over {MAX_LINES} lines (split them by what they do): {long}"


def test_package_inits_only_re_export():
    """A package's __init__ is its interface: imports, __all__, a docstring; the code lives in modules.
    (commands/ is the CLI's plumbing, whose __init__ registers the commands.)"""
    for init in KIA.glob("*/__init__.py"):
        if init.parent.name == "commands":
            continue
        tree = ast.parse(init.read_text(encoding="utf-8"))
        code = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)]
        assert not code, f"{init.relative_to(KIA.parent)} defines {[n.name for n in code]}"


@pytest.mark.parametrize("package", sorted(p.name for p in KIA.iterdir() if (p / "__init__.py").exists()))
def test_every_exported_name_exists(package):
    mod = importlib.import_module(f"kia.{package}")
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"kia.{package}.__all__ names {name}, which it lacks"
    for name in STAGES.get(package, ()):
        assert name in mod.__all__, f"stage package kia.{package} must export {name}"


def test_the_old_inject_path_still_works_with_a_warning():
    import sys

    sys.modules.pop("kia.train", None)
    with pytest.warns(DeprecationWarning, match="kia.inject"):
        from kia.train import InjectConfig, inject
    from kia.inject import InjectConfig as new_config
    from kia.inject import inject as new_inject

    assert InjectConfig is new_config and inject is new_inject


def test_the_top_level_api_resolves():
    import kia

    for name in kia.__all__:
        assert getattr(kia, name) is not None


def test_every_kia_import_names_something_that_exists():
    """`from kia.x import y` inside a function is only checked when it runs; check them all here,
    so a moved name cannot hide in a rarely taken branch (in the tests and benchmarks too)."""
    missing = []
    others = [p for d in ("tests", "bench") for p in sorted((KIA.parent / d).rglob("*.py"))]
    for path in modules() + others:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("kia")):
                continue
            try:
                mod = importlib.import_module(node.module)
            except ModuleNotFoundError as exc:  # an optional third-party package (vllm) that is not installed
                if exc.name and exc.name.startswith("kia"):
                    missing.append(f"{path.relative_to(KIA.parent)}:{node.lineno}: no module {node.module}")
                continue
            for alias in node.names:
                if not hasattr(mod, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ModuleNotFoundError:
                        missing.append(
                            f"{path.relative_to(KIA.parent)}:{node.lineno}: {node.module} has no {alias.name}"
                        )
    assert not missing, "\n".join(missing)
