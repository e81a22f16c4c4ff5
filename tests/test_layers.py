"""The package reads top-down (issue 15): no module imports from a layer above it,
and the adapters (widget, CLI, sample data) use the public API only."""

import ast
from pathlib import Path

import napari_ntd

PKG = Path(napari_ntd.__file__).parent

#: Layers from the top: adapters -> public API -> execution -> algorithms -> utilities.
RANK = {"_ui": 4, "_api": 3, "_engine": 2, "_ntk": 1, "_dip": 1, "_util": 0}


def _module(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    return ".".join(("napari_ntd", *rel.parts)).removesuffix(".__init__")


def _imports(path: Path) -> list[str]:
    """Every napari_ntd module a file imports (module level and inside functions)."""
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "napari_ntd":
                continue
            out.append(mod)
            # "from . import _x" imports the submodule _x
            out += [f"{mod}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "napari_ntd"]
    return out


def _layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def _sources():
    return [p for p in PKG.rglob("*.py") if p.name != "__main__.py"]


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for path in _sources():
        src = _layer(_module(path))
        if src is None:  # napari_ntd/__init__.py: the public names, on top
            continue
        for mod in _imports(path):
            dst = _layer(mod)
            if dst is None and mod == "napari_ntd" and src == "_ui":
                continue  # adapters use the public API
            if dst is None or RANK[dst] > RANK[src]:
                upward.append(f"{_module(path)} imports {mod}")
    assert not upward, "\n".join(upward)


def test_adapters_use_public_names_only():
    private = []
    for path in (PKG / "_ui").glob("*.py"):
        for mod in _imports(path):
            if mod != "napari_ntd" and not mod.startswith("napari_ntd._ui"):
                private.append(f"{_module(path)} imports {mod}")
    assert not private, "\n".join(private)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself can fail: an algorithm importing the API is reported."""
    bad = tmp_path / "napari_ntd" / "_ntk"
    bad.mkdir(parents=True)
    (tmp_path / "napari_ntd" / "__init__.py").write_text("")
    (bad / "_bad.py").write_text("def f():\n    from .._api import denoise_ntd\n")
    monkeypatch.setattr(__import__(__name__), "PKG", tmp_path / "napari_ntd")
    mods = _imports(bad / "_bad.py")
    assert mods == ["napari_ntd._api"]
    assert RANK[_layer(mods[0])] > RANK[_layer(_module(bad / "_bad.py"))]
