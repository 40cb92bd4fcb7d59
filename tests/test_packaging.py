"""Packaging: the wheel builds, carries the version, the entry points and every module, and
works when installed into a fresh environment (``python -m predcode``, ``predcode``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import predcode

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("build")


def run(cmd, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "predcode", src / "predcode", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist", src])
    wheels = list((tmp / "dist").glob("predcode-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_version_is_written_once_and_the_changelog_names_it():
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+|\.dev\d+)?", predcode.__version__)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "predcode.__version__"' in pyproject
    assert f"## [{predcode.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_wheel_contents(wheel):
    assert wheel.name == f"predcode-{predcode.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"predcode-{predcode.__version__}.dist-info"
        metadata = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    modules = {
        f"predcode/{p.relative_to(ROOT / 'predcode')}".replace(os.sep, "/")
        for p in (ROOT / "predcode").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules <= names, sorted(modules - names)
    assert f"Version: {predcode.__version__}" in metadata
    for extra in ("tb", "docs", "test"):
        assert f"Provides-Extra: {extra}" in metadata
    assert "predcode = predcode.app.cli:main" in entry_points


def test_wheel_installs_into_a_fresh_environment(wheel, tmp_path):
    """A new venv gets the wheel (no editable checkout in sight); its dependencies come from
    this environment's site-packages through a path file, so no download or copy of torch."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "--quiet", wheel])
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = run(
        [py, "-c", "import predcode; print(predcode.__file__, predcode.__version__)"], cwd=tmp_path, env=env
    ).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == predcode.__version__
    help_text = run([py, "-m", "predcode", "--help"], cwd=tmp_path, env=env).stdout
    assert "train" in help_text and "data" in help_text
    version = run([venv / "bin" / "predcode", "--version"], cwd=tmp_path, env=env).stdout
    assert version.strip() == f"predcode {predcode.__version__}"


@pytest.mark.slow
def test_wheel_installs_with_its_dependencies(wheel, tmp_path):
    """The real thing: a fresh venv with pip resolves the wheel's dependencies itself
    (torch pinned to the local 2.13.0 build), then trains a few batches."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    run([py, "-m", "pip", "install", "--quiet", f"{wheel}[tb]", "torch==2.13.0"])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    code = (
        "import torch, predcode as pc; from torch import nn; torch.manual_seed(0);"
        "m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), pc.Node(), nn.Linear(8, 2), pc.Node());"
        "g = pc.PCGraph(m); opt = torch.optim.SGD(m.parameters(), lr=0.1);"
        "s = pc.InferenceLearning(pc.SGD(lr=0.1), stop=5).step(g, torch.randn(8, 4), torch.randn(8, 2), opt);"
        "print(float(s.loss) > 0)"
    )
    assert run([py, "-c", code], cwd=tmp_path, env=env).stdout.strip() == "True"
    assert (
        run([py, "-m", "predcode", "--version"], cwd=tmp_path, env=env).stdout.strip()
        == f"predcode {predcode.__version__}"
    )
