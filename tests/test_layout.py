"""The package layout: the library, the app around it (predcode.app), the biologically
plausible variants (predcode.bio), and the old module paths kept for one release.

- every old path still imports, warns once (a DeprecationWarning naming the new path) and
  hands back the new module itself, so names, identities and monkeypatching agree;
- no library module (predcode/ outside app/, experiments/ and bench/) imports predcode.app
  (an AST scan, checked on a planted violation too);
- nothing inside the package or the tests goes through an old path;
- ``python -m predcode --help`` and the ``predcode`` console script still run the CLI.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import pytest

import predcode

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "predcode"

# old path -> new path; each old path is a shim module (predcode/<old>.py) for one release
MOVED = {
    "predcode.train": "predcode.app.train",
    "predcode.config": "predcode.app.config",
    "predcode.cli": "predcode.app.cli",
    "predcode.query_cli": "predcode.app.query_cli",
    "predcode.checkpoint": "predcode.app.checkpoint",
    "predcode.distributed": "predcode.app.distributed",
    "predcode.tracking": "predcode.app.tracking",
    "predcode.provenance": "predcode.app.provenance",
    "predcode.stream": "predcode.bio.stream",
    "predcode.circuit": "predcode.bio.circuit",
    "predcode.mupc": "predcode.models.mupc",
    "predcode.engine": "predcode.learning",
    "predcode.local": "predcode.closed_form",
    "predcode.errors": "predcode.exceptions",
    "predcode.data.errors": "predcode.data.exceptions",
}
SHIM_FILES = {PACKAGE / (old.split(".", 1)[1].replace(".", "/") + ".py") for old in MOVED}
# Outside the library: the app itself, what runs it, and the shims that point into it.
NOT_LIBRARY = ("app", "experiments", "bench")


def _fresh_import(old: str, monkeypatch) -> tuple[object, list[warnings.WarningMessage]]:
    """Import ``old`` as if for the first time (the entry and the package attribute are put
    back after the test) and return the module with the warnings the import raised."""
    parent, _, leaf = old.rpartition(".")
    monkeypatch.delitem(sys.modules, old, raising=False)
    monkeypatch.delattr(sys.modules[parent], leaf, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(f"import {old}", __file__, "exec"), {})  # an import statement in this file
    module = sys.modules[old]
    return module, [w for w in caught if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_warns_once_and_is_the_new_module(old, monkeypatch):
    new = importlib.import_module(MOVED[old])
    module, caught = _fresh_import(old, monkeypatch)
    assert module is new
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert MOVED[old] in str(caught[0].message)
    # the warning points at the importer, not at the shim or the import machinery
    assert Path(caught[0].filename).resolve() == Path(__file__).resolve()
    # imported again: no second warning
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert importlib.import_module(old) is new
    assert not [w for w in again if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_gives_the_same_objects(old, monkeypatch):
    new = importlib.import_module(MOVED[old])
    module, _ = _fresh_import(old, monkeypatch)
    public = getattr(new, "__all__", None) or [n for n in vars(new) if not n.startswith("_")]
    assert public
    for name in public:
        assert getattr(module, name) is getattr(new, name), name
    # `import predcode.X as m` and `from predcode import X` reach the same module
    parent, _, leaf = old.rpartition(".")
    assert getattr(sys.modules[parent], leaf) is new


def test_from_import_and_attribute_access(monkeypatch):
    _fresh_import("predcode.train", monkeypatch)
    namespace: dict = {}
    exec("from predcode.train import TrainConfig, Trainer\nimport predcode.train as t", namespace)
    from predcode.app import config, train

    assert namespace["TrainConfig"] is config.TrainConfig
    assert namespace["Trainer"] is train.Trainer
    assert namespace["t"] is train and namespace["t"].TrainConfig is config.TrainConfig


def test_monkeypatching_the_old_path_patches_the_real_module(monkeypatch):
    from predcode.app import train

    _fresh_import("predcode.train", monkeypatch)
    sentinel = object()
    monkeypatch.setattr("predcode.train.DTYPES", sentinel)
    assert train.DTYPES is sentinel


def _imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Every module ``path`` imports (at any depth in the file), relative imports resolved."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # the package the file sits in
    found: set[str] = set()
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join(base + ((node.module,) if node.module else ()))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def _library_files() -> list[Path]:
    files = []
    for path in sorted(PACKAGE.rglob("*.py")):
        inside = path.relative_to(PACKAGE).parts
        if inside[0] in NOT_LIBRARY or path in SHIM_FILES or path.name == "__main__.py":
            continue
        files.append(path)
    return files


def _imports_app(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "predcode.app" or m.startswith("predcode.app."))


def test_library_does_not_import_the_app():
    files = _library_files()
    assert PACKAGE / "graph.py" in files and PACKAGE / "rules" / "il.py" in files
    assert PACKAGE / "bio" / "stream.py" in files and PACKAGE / "models" / "mupc.py" in files
    offenders = {str(p.relative_to(ROOT)): _imports_app(_imported_modules(p)) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize(
    "source",
    [
        "from ..app import train",
        "from ..app.train import Trainer",
        "import predcode.app.cli",
        "def f():\n    from ..app.config import TrainConfig",
        "from .. import app",
    ],
)
def test_the_scan_finds_an_app_import(source):
    planted = PACKAGE / "models" / "planted.py"  # never written: the source is parsed as if it were there
    assert _imports_app(_imported_modules(planted, source))
    assert not _imports_app(_imported_modules(planted, source.replace("app", "graph")))


def test_nothing_in_the_package_or_tests_uses_an_old_path():
    old_paths = set(MOVED)
    offenders = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py")]):
        if path in SHIM_FILES or path == Path(__file__).resolve():
            continue
        # files others were editing when the modules moved (they import through the shims)
        if path.relative_to(ROOT).as_posix() in {"tests/test_paper_protocol.py"}:
            continue
        for module in _imported_modules(path):
            if any(module == old or module.startswith(old + ".") for old in old_paths):
                offenders.append(f"{path.relative_to(ROOT)}: {module}")
    assert offenders == []


def test_every_module_imports_without_a_deprecated_path():
    """Importing every module of the package (in a fresh interpreter) goes through no shim."""
    code = (
        "import importlib, pkgutil, warnings, predcode\n"
        "pattern = r'predcode\\.[\\w.]+ (moved to|is now)'\n"
        "warnings.filterwarnings('error', message=pattern, category=DeprecationWarning)\n"
        f"shims = {sorted(MOVED)!r}\n"
        "for info in pkgutil.walk_packages(predcode.__path__, 'predcode.'):\n"
        "    if info.name in shims or info.name.endswith('__main__'):\n"
        "        continue\n"
        "    try:\n"
        "        importlib.import_module(info.name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        if (exc.name or '').startswith('predcode'):\n"
        "            raise\n"  # an optional dependency missing is fine; a moved module is not
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_python_m_predcode_help():
    run = subprocess.run(
        [sys.executable, "-W", "error:predcode:DeprecationWarning", "-m", "predcode", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "train" in run.stdout and "query" in run.stdout


def test_console_script_runs_the_cli():
    from predcode.app import cli

    scripts = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "predcode"]
    assert scripts, "the predcode console script is not installed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it may still name the old path
        assert scripts[0].load() is cli.main


def test_public_api_unchanged():
    assert "PCGraph" in predcode.__all__ and "InferenceLearning" in predcode.__all__
    assert not {n for n in predcode.__all__ if n in {"train", "config", "cli", "app", "bio"}}


def test_console_script_prints_no_deprecation_warning():
    """The installed ``predcode`` wrapper may still import ``predcode.cli`` (the package
    metadata names it): the user running the command sees no warning about it."""
    import shutil

    script = shutil.which("predcode", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the predcode console script is not installed next to this Python")
    run = subprocess.run([script, "--version"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("predcode "), run.stderr
    assert "DeprecationWarning" not in run.stderr, run.stderr


def test_the_architecture_names_every_library_module():
    """docs/architecture.md, the map of the code, names every module of the library and the
    app (as `name.py` or `folder/name.py`; inside a folder's row its stem, `il`, will do): a
    module added without a line there fails here."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    unnamed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if (
            rel.parts[0] in ("experiments", "bench")
            or path in SHIM_FILES
            or path.name in ("__init__.py", "__main__.py")
        ):
            continue
        names = {f"`{rel.as_posix()}`", f"`{path.name}`", f"{path.name}`"}
        if len(rel.parts) > 1:
            names.add(f"`{path.stem}`")
        if not any(name in doc for name in names):
            unnamed.append(rel.as_posix())
    assert unnamed == [], f"docs/architecture.md does not name {unnamed}"


def test_renamed_names_warn_and_give_the_same_objects():
    """The names renamed with the modules work for one release, each with a
    DeprecationWarning that names its replacement."""
    import torch

    import predcode as pc
    import predcode.batch
    import predcode.inference
    import predcode.learning
    import predcode.rules
    import predcode.rules.base

    def old(get, new_name):
        with pytest.warns(DeprecationWarning, match=new_name) as caught:
            found = get()
        # the warning points at the user's line, not at the library
        assert Path(caught[0].filename).resolve() == Path(__file__).resolve()
        return found

    assert (
        old(lambda: predcode.rules.base.prepare_batch, "predcode.batch.prepare_batch") is predcode.batch.prepare_batch
    )
    assert old(lambda: predcode.rules.base.Batch, "predcode.batch.Batch") is predcode.batch.Batch
    assert old(lambda: predcode.inference.MomentumSGD, "predcode.inference.SGD") is predcode.inference.SGD
    assert (
        old(lambda: predcode.rules.weight_energy_backward, "accumulate_weight_gradients")
        is predcode.learning.accumulate_weight_gradients
    )
    graph = pc.PCGraph(torch.nn.Sequential(torch.nn.Linear(3, 4), pc.Node(), torch.nn.Linear(4, 2), pc.Node()))
    values = graph.feedforward([torch.randn(5, 3)])
    torch.testing.assert_close(
        old(lambda: graph.predict(2, values), "node_prediction"), graph.node_prediction(2, values)
    )
    rule = pc.InferenceLearning(pc.SGD(0.1), 4)
    assert old(lambda: rule.free_slots(graph, graph.outputs), "graph.free_slots") == graph.free_slots(graph.outputs)
    with pytest.raises(AttributeError):
        predcode.rules.base.no_such_name  # noqa: B018
