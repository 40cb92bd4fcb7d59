"""pcx side of the comparison: its own virtual environment and standalone scripts.

``ensure_venv()`` creates ``.bench/pcx-venv`` (``python -m venv`` and ``pip install
pcx==0.6.3 jax==0.4.38 jaxlib==0.4.38``) when it is missing and reuses it otherwise;
``run_script("pcx_mlp.py", spec)`` runs ``predcode/bench/pcx_scripts/pcx_mlp.py`` with
that environment's python, on the cores this process is pinned to, with XLA told to use
the same number of threads, and returns the JSON the script prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import xla_flags
from .worker import WorkerError, parse_result

PCX_REQUIREMENTS = ["pcx==0.6.3", "jax==0.4.38", "jaxlib==0.4.38"]
SCRIPTS = Path(__file__).parent / "pcx_scripts"
MARK = "PCX_RESULT "
VERSION_KEYS = ("pcx", "jax", "jaxlib", "optax", "equinox", "xla_flags", "affinity")
"""What ``pcx_mlp.py`` reports about its environment, kept beside the results."""


def venv_dir() -> Path:
    """``$PREDCODE_PCX_VENV``, else ``.bench/pcx-venv`` in the repository (or the current
    folder when predcode is not installed from a checkout)."""
    if os.environ.get("PREDCODE_PCX_VENV"):
        return Path(os.environ["PREDCODE_PCX_VENV"])
    root = Path(__file__).resolve().parents[2]
    base = root if (root / "pyproject.toml").exists() else Path.cwd()
    return base / ".bench" / "pcx-venv"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(say=print) -> Path:
    """The pcx environment's python, creating the environment first if needed."""
    venv = venv_dir()
    python = venv_python(venv)
    if python.exists() and _has_pcx(python):
        return python
    say(f"creating the pcx environment in {venv} (pip install {' '.join(PCX_REQUIREMENTS)}) ...")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PCX_REQUIREMENTS], check=True)
    if not _has_pcx(python):
        raise WorkerError(f"pcx did not import in {venv} after installing it")
    return python


def _has_pcx(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import pcx, jax, optax, equinox"], capture_output=True, text=True)
    return probe.returncode == 0


def run_script(script: str, spec: dict, threads: int, timeout: float | None = None, say=print) -> dict:
    """Run ``pcx_scripts/<script>`` with ``spec`` (JSON on the command line) and return its
    result.  The child inherits this process's CPU affinity; ``taskset`` is used as well
    where it exists, so both libraries run on the same cores."""
    python = ensure_venv(say)
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags(threads)).strip()
    env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS", "cpu")
    env.pop("PYTHONPATH", None)  # predcode's venv must not leak into pcx's
    cmd = [str(python), str(SCRIPTS / script), json.dumps(spec)]
    if hasattr(os, "sched_getaffinity"):
        cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
        if _which("taskset"):
            cmd = ["taskset", "-c", cores, *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise WorkerError(f"pcx {script} ran past {timeout} s") from exc
    return parse_result(proc, MARK, f"pcx {script}")


def _which(name: str) -> str | None:
    from shutil import which

    return which(name)


def run_pcx_mlp(mode: str, spec: dict, threads: int, say=print, **options) -> tuple[dict, dict]:
    """Run ``pcx_mlp.py`` in ``mode`` (``"speed"`` or ``"train"``) on the MLP ``spec["sizes"]``,
    starting from the weights predcode's runs start from (``build_mlp`` with ``spec["seed"]``),
    on the MNIST of ``spec["train_size"]`` and with pcx's PC settings from ``spec["hp"]``;
    ``options`` are the mode's own keys.  Returns the script's output and the versions it
    reported (:data:`VERSION_KEYS`)."""
    from .common import build_mlp, mnist_npy_dir, write_init

    with tempfile.TemporaryDirectory(prefix="predcode-bench-init-") as tmp:
        init = write_init(build_mlp(spec["sizes"], spec["seed"]), Path(tmp) / "init.npz")
        hp = spec["hp"]
        pcx_spec = {
            "mode": mode,
            "data": str(mnist_npy_dir(spec.get("train_size") or None)),
            "sizes": spec["sizes"],
            "T": hp["T"],
            "batch": hp["batch"],
            "seed": spec["seed"],
            "w_lr": hp["w_lr"],
            "w_wd": hp["w_wd"],
            "h_lr": hp["h_lr"],
            "h_momentum": hp["h_momentum"],
            **options,
            "init": str(init),
        }
        out = run_script("pcx_mlp.py", pcx_spec, threads, say=say)
    return out, {k: out.get(k) for k in VERSION_KEYS}
