"""The layers point one way: the import-linter contracts of pyproject.toml are kept, no module
takes part in an import cycle (function-level and TYPE_CHECKING imports count: grimp reads
every import statement), and loading a recipe imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from fournil.stages import STAGES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
# `lint-imports` (import-linter, the dev extra), run by this interpreter wherever scripts live
LINT_IMPORTS = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                "lint_imports_command()"]


def test_every_import_contract_is_kept():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]
    assert len(contracts) >= 2  # the layers, and a light recipe
    # no cache: the graph of the code as it is now, and nothing written into the checkout
    done = subprocess.run([*LINT_IMPORTS, "--no-cache", "--config", "pyproject.toml"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in done.stdout, done.stdout[-3000:]


def test_a_broken_contract_is_reported(tmp_path):
    """The same command on a contract the code breaks (the command layer below the core)."""
    config = tmp_path / "upside-down.toml"
    config.write_text('[tool.importlinter]\nroot_package = "fournil"\n\n'
                      '[[tool.importlinter.contracts]]\nname = "upside down"\n'
                      'type = "layers"\nlayers = ["fournil.core", "fournil.cli"]\n')
    done = subprocess.run([*LINT_IMPORTS, "--no-cache", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 1 and "Contracts: 0 kept, 1 broken." in done.stdout, done.stdout


def _layers() -> list[str]:
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"][0]
    assert contract["type"] == "layers"
    return contract["layers"]


LISTED = {m.strip() for layer in _layers() for m in layer.split("|")}
# the command and the pipeline: the layers down to the list of stages
PIPELINE = [m.strip() for layer in _layers()[:_layers().index("fournil.stages") + 1]
            for m in layer.split("|")]


def leaf_problems(graph: grimp.ImportGraph, package: str) -> list[str]:
    """Why `package` is not a leaf stage: modules outside it that import it (other than
    `fournil.stages`, which imports its config), or its imports of the command or pipeline."""
    inside = {m for m in graph.modules if m == package or m.startswith(package + ".")}
    importers = {i for m in inside for i in graph.find_modules_that_directly_import(m)}
    problems = [f"{i} imports {package}: give {package} its layer in pyproject.toml"
                for i in sorted(importers - inside - {"fournil.stages"})]
    problems += [f"fournil.stages imports {m}: it may import the config only"
                 for m in sorted(inside) if "fournil.stages" in
                 graph.find_modules_that_directly_import(m) and not m.endswith(".config")]
    return problems + [f"{package} imports {top}, above every stage" for top in PIPELINE
                       if graph.chain_exists(importer=package, imported=top, as_packages=True)]


@pytest.mark.parametrize("spec", STAGES, ids=lambda s: s.name)
def test_a_stage_outside_the_layers_contract_is_a_leaf(spec):
    """A stage not (yet) given its place in pyproject.toml's layers is held by this test: no
    module outside its package imports it (bake and the CLI reach it through `STAGES`, by
    name), `fournil.stages` imports its config only, and it imports nothing of the command or
    the pipeline. Whoever needs to import it gives it its layer."""
    package = spec.module.rsplit(".", 1)[0]
    if package not in LISTED:
        assert leaf_problems(grimp.build_graph("fournil", cache_dir=None), package) == []


def test_the_leaf_check_finds_planted_imports():
    graph = grimp.build_graph("fournil", cache_dir=None)
    assert leaf_problems(graph, "fournil.index") != []  # a listed stage that others import
    leaf = "fournil.planted"  # a new stage: its package, config and stage, wired by stages.py
    for module in (leaf, f"{leaf}.config", f"{leaf}.stage"):
        graph.add_module(module)
    graph.add_import(importer="fournil.stages", imported=f"{leaf}.config")
    graph.add_import(importer=f"{leaf}.stage", imported="fournil.core.stage")
    assert leaf_problems(graph, leaf) == []
    graph.add_import(importer="fournil.core.stage", imported=f"{leaf}.stage")
    graph.add_import(importer=f"{leaf}.stage", imported="fournil.bake")
    problems = leaf_problems(graph, leaf)
    assert problems[0] == f"fournil.core.stage imports {leaf}: give {leaf} its layer in " \
        "pyproject.toml"
    # bake, and through it the recipe and the list of stages
    assert f"{leaf} imports fournil.bake, above every stage" in problems[1:]


def import_cycles(graph: grimp.ImportGraph, package: str = "fournil") -> list[set[str]]:
    """The strongly connected components of more than one module among `package`'s modules:
    a module is in one with every module it reaches that also reaches it."""
    modules = {m for m in graph.modules if m == package or m.startswith(package + ".")}
    reaches = {m: graph.find_upstream_modules(m) & modules for m in modules}
    cycles: list[set[str]] = []
    for m in sorted(modules):
        if any(m in c for c in cycles):
            continue
        component = {m} | {n for n in reaches[m] if m in reaches[n]}
        if len(component) > 1:
            cycles.append(component)
    return cycles


def test_no_import_cycle():
    graph = grimp.build_graph("fournil", cache_dir=None)
    assert len(graph.modules) > 100  # the whole package was read
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = grimp.build_graph("fournil", cache_dir=None)
    # the core pointing back at a stage that (through others) imports it: a cycle
    graph.add_import(importer="fournil.core.stage", imported="fournil.curate.stage")
    [cycle] = import_cycles(graph)
    assert {"fournil.core.stage", "fournil.curate.stage"} <= cycle


def test_loading_a_recipe_imports_no_heavy_library():
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import fournil.recipe"],
                          capture_output=True, text=True, check=True)
    # stderr: "import time: self [us] | cumulative | <indent>module", one line per import
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    assert {"fournil.recipe", "fournil.stages", "tomllib" if sys.version_info >= (3, 11)
            else "tomli"} <= imported
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "numpy", "pyarrow")}
    assert heavy == set(), sorted(heavy)[:20]
