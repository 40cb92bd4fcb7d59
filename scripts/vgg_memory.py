"""Peak step memory of VGG-5 (pcx's definition, batch 128, full width), predcode PC on its
default path against backprop, as `predcode bench vgg` measures it (two steps of a fresh
model, every tensor allocated and alive counted). Writes results/bench/memory/vgg5.json.

    .venv/bin/python scripts/vgg_memory.py
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import torch

from predcode.bench.common import VGG_HP, make_step
from predcode.bench.floor import step_peak_memory
from predcode.bench.machine import machine_info
from predcode.models import vgg5

torch.set_num_threads(2)
rows = []
for channels, size in ((1, 28), (3, 32)):
    x = torch.rand(128, channels, size, size) * 2 - 1
    y = torch.randint(0, 10, (128,))
    mib = {}
    for method in ("pc-default", "bp"):
        torch.manual_seed(0)
        model = vgg5(in_channels=channels, num_classes=10, in_size=size, width=1.0)
        step = make_step(method, model, VGG_HP, compile=False)
        mib[method] = step_peak_memory(lambda: step(x, y))  # noqa: B023  (called before the loop moves on) / 2**20
    rows.append(
        {
            "input": f"{size}x{size}x{channels}",
            "pc_mib": mib["pc-default"],
            "bp_mib": mib["bp"],
            "pc_over_bp": mib["pc-default"] / mib["bp"],
        }
    )
    print(rows[-1], flush=True)
out = Path("results/bench/memory/vgg5.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(
    json.dumps(
        {
            "command": "python scripts/vgg_memory.py",
            "rows": rows,
            "date_utc": datetime.now(UTC).isoformat(),
            "machine": machine_info(threads=2),
        },
        indent=2,
        default=str,
    )
)
