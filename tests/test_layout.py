"""The package layout shows the chain: stages import only from stages before them.

A small AST walk over ``instag_hf/``: every ``import``/``from ... import`` of an instag_hf
module, at module level or inside a function, must point at the same stage or an earlier
one, and module-level imports must form no cycle.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import instag_hf

PACKAGE = Path(instag_hf.__file__).parent

#: The chain, bottom first. A module belongs to the first entry its dotted name starts with.
STAGES = [
    ("errors", "env", "columns", "extras", "hub_errors", "datasets_internals", "_version"),  # the shared bottom
    ("dataset_io",),
    ("tagging", "local_llm", "local_vllm", "gguf_to_safetensors"),
    ("normalization",),
    ("analysis",),
    ("sampling",),
    ("agreement",),
    ("publishing",),
    ("batching",),  # tagging through batch files: tags rows and records who tagged them, as pipeline does
    ("pipeline",),
    ("refresh",),
    ("cli", ""),  # "" is the package's own __init__, which exports the public API
]


def stage_of(module: str) -> int:
    name = module.removeprefix("instag_hf").removeprefix(".")
    for index, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if name == prefix or (prefix and name.startswith(prefix + ".")):
                return index
    raise AssertionError(f"{module} belongs to no stage: add it to STAGES in {__file__}")


def modules() -> dict[str, Path]:
    found = {"instag_hf": PACKAGE / "__init__.py"}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        if "metric" in parts or "measurements" in parts:
            continue  # evaluate modules, loaded by path, importing only the public package
        found[".".join(("instag_hf", *parts))] = path
    return found


def imports_of(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported instag_hf module, at module level) pairs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "instag_hf" or name.startswith("instag_hf."):
                out.append((name, id(node) in top_level))
    return out


def resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:  # `from pkg import function` names no module
        name = name.rpartition(".")[0]
    return name or None


def test_every_module_imports():
    for module in modules():
        importlib.import_module(module)


def test_no_module_imports_from_a_later_stage():
    known = modules()
    upward = []
    for module, path in known.items():
        for name, _ in imports_of(module, path):
            target = resolve(name, known)
            if target in (None, "instag_hf") and module != "instag_hf":
                upward.append(f"{module} imports the package root (import from the module that defines it)")
            elif target is not None and stage_of(target) > stage_of(module):
                upward.append(f"{module} (stage {stage_of(module)}) imports {target} (stage {stage_of(target)})")
    assert not upward, "\n".join(sorted(set(upward)))


def test_module_level_imports_form_no_cycle():
    known = modules()
    graph = {module: set() for module in known}
    for module, path in known.items():
        for name, top in imports_of(module, path):
            target = resolve(name, known)
            if top and target is not None and target != module:
                graph[module].add(target)
    # A package's __init__ importing its own modules is how a stage exports: not a cycle
    # unless a module also imports its package back at module level.
    visiting, done, cycles = set(), set(), []

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(" -> ".join(trail[trail.index(node) :] + [node]))
            return
        visiting.add(node)
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [node])
        visiting.discard(node)
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_the_layout_is_listed_in_the_readme():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    for folder in folders:
        assert f"`{folder}/`" in section, f"README's layout section does not mention {folder}/"


def test_public_names_stay_where_users_import_them():
    import instag_hf.analysis
    import instag_hf.pipeline

    assert sorted(instag_hf.__all__) == instag_hf.__all__
    for name in instag_hf.__all__:
        assert getattr(instag_hf, name) is not None
    assert Path(instag_hf.analysis.MEASUREMENT_PATH, "instag.py").is_file()
    assert callable(instag_hf.pipeline.run_chain) and callable(instag_hf.pipeline.publish)
    assert [m.name for m in pkgutil.iter_modules(instag_hf.__path__) if m.name.startswith("_")] == ["_version"]
