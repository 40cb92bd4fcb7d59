"""Where and how a benchmark ran: machine, versions, command, date."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys

from ..app.provenance import cpu_model, git, load_average, memory_gib, package_version, predcode_version


def machine_info(threads: int | None = None, cores: list[int] | None = None, argv: list[str] | None = None) -> dict:
    """A JSON-able record of the machine, the software versions, the command (``predcode``
    followed by ``argv``, default this process's arguments) and the date."""
    import numpy
    import torch

    cuda = torch.cuda.is_available()
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["predcode", *(sys.argv[1:] if argv is None else argv)]),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": memory_gib(),
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "predcode": package_version("predcode") or predcode_version(),
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "cuda": cuda,
    }
    if threads is not None:
        info["threads"] = threads
    if cores is not None:
        info["cores"] = cores
    if cuda:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info
