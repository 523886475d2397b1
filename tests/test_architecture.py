"""The package's layout as a contract: what each stage may import, no circles, no private reach.

Read from the source with :mod:`ast` (imports inside functions count too), so the rules hold for
every code path, not only for what one test happens to import. The stages and what they may use
are described in viewer_site/reference/architecture.md.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deepeyes_keras"
STAGES = ("record", "run", "derive", "charts", "site")
HEAVY = {"tensorflow", "keras", "tensorflow_probability", "tf_keras"}

# Per stage: the project modules it may import (prefixes) and the third-party packages it must not.
ALLOWED = {
    "run": {"deepeyes_keras.run"},
    "charts": {"deepeyes_keras.charts", "deepeyes_keras.run.layout"},
    "derive": {"deepeyes_keras.derive", "deepeyes_keras.run", "deepeyes_keras.charts"},
    "site": {"deepeyes_keras.site", "deepeyes_keras.run", "deepeyes_keras.names"},
    # The recorder starts the maps worker (a separate process); that module imports nothing else
    # of ours at import time, and the process it starts runs the derived stages.
    "record": {
        "deepeyes_keras.record",
        "deepeyes_keras.run.layout",
        "deepeyes_keras.run.writer",
        "deepeyes_keras.names",
        "deepeyes_keras.derive.worker",
        "deepeyes_keras",  # __version__
    },
}
FORBIDDEN = {
    "run": HEAVY | {"altair", "mkdocs"},
    "charts": HEAVY | {"mkdocs"},
    "derive": HEAVY | {"mkdocs"},
    "site": HEAVY | {"altair"},
    "record": {"altair", "mkdocs"},
}
MAX_LINES = 420  # "about 400": a module past this is probably two


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Absolute names of the modules (or module.attribute) a file imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return found


def project_target(name: str) -> str | None:
    """The project module an imported name refers to (its longest known prefix), or None."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return None


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_every_stage_folder_exists_and_holds_modules():
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").is_file(), stage
        assert any(stage_of(m) == stage for m in MODULES if m.count(".") >= 2), stage


@pytest.mark.parametrize("module", sorted(m for m in MODULES if stage_of(m)))
def test_stage_imports_only_what_it_may(module):
    stage = stage_of(module)
    names = imports(MODULES[module])
    heavy = sorted(n for n in names if n.split(".")[0] in FORBIDDEN[stage])
    assert not heavy, f"{module} ({stage} stage) imports {heavy}"
    targets = {project_target(n) for n in names if n.startswith("deepeyes_keras")} - {None}
    bad = sorted(
        t
        for t in targets
        if not any(t == a or t.startswith(a + ".") for a in ALLOWED[stage])
        and not (t == "deepeyes_keras" and "deepeyes_keras" in ALLOWED[stage])
    )
    assert not bad, f"{module} ({stage} stage) may not import {bad}"


def test_the_rules_catch_a_forbidden_import(tmp_path):
    # The checker itself: a derived-stage file importing TensorFlow and the site is caught.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    import tensorflow as tf\n    from deepeyes_keras.site import pages\n"
    )
    names = imports(bad)
    assert "tensorflow" in names and "deepeyes_keras.site.pages" in names, names
    assert project_target("deepeyes_keras.site.pages") == "deepeyes_keras.site.pages"


def test_no_import_circles_between_modules():
    graph = {
        m: {
            t
            for n in imports(p, top_level_only=True)
            if n.startswith("deepeyes_keras") and (t := project_target(n)) and t != m
        }
        for m, p in MODULES.items()
    }
    # A package's __init__ re-exporting its own modules is not a circle of the data flow.
    for m in graph:
        graph[m] = {
            t for t in graph[m] if not (m.startswith(t + ".") and MODULES[t].name == "__init__.py")
        }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import circles: {cycles}"


def test_no_private_name_is_used_outside_its_module():
    offences = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if node.module.startswith("deepeyes_keras") and alias.name.startswith("_"):
                        if not alias.name.startswith("__"):
                            offences.append(f"{module}: from {node.module} import {alias.name}")
                    if full in MODULES:
                        aliases[alias.asname or alias.name] = full
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                offences.append(f"{module}: {node.value.id}.{node.attr}")
    assert not offences, offences


def test_no_module_is_far_over_400_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


RUN_FILE_PATTERNS = ("manifest.json", "findings.json", "step-", "entries-", ".vl.json")
RUN_DIRS = {"snapshots", "samples", "maps", "views", "findings", "export"}


def path_literals(path: Path) -> list[str]:
    """String literals of a file that spell a run-directory path (docstrings excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            if any(pattern in node.value for pattern in RUN_FILE_PATTERNS):
                found.append(f"{node.lineno}: {node.value!r}")
        # run_dir / "maps": a directory name joined onto a path
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and right.value in RUN_DIRS:
                found.append(f"{node.lineno}: / {right.value!r}")
    return found


def test_only_the_layout_module_spells_run_directory_paths():
    offences = {
        m: hits
        for m, p in MODULES.items()
        if m != "deepeyes_keras.run.layout" and (hits := path_literals(p))
    }
    assert not offences, offences


def test_the_path_check_sees_a_spelled_path(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(run):\n    return run / "maps" / f"step-{1:08d}.npz"\n')
    assert len(path_literals(bad)) == 2


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_reading_runs_and_building_sites_import_neither_tensorflow_nor_altair():
    heavy = "sorted(m for m in ('tensorflow', 'keras', 'altair') if m in sys.modules)"
    code = f"import sys, deepeyes_keras, deepeyes_keras.site.plugin\nprint({heavy})"
    assert run_python(code) == "[]"


def test_the_derived_stages_import_no_tensorflow():
    heavy = "sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)"
    code = (
        "import sys, deepeyes_keras.derive.pipeline, deepeyes_keras.derive.worker\n"
        "import deepeyes_keras.export, deepeyes_keras.cli\n"
        f"print({heavy})"
    )
    assert run_python(code) == "[]"
