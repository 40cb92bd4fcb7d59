"""A recurrent model trained by predictive coding: a character-level LSTM on Shakespeare.

``predcode.models.lstm`` unrolls an LSTM over ``seq_len`` characters with value nodes for
the cell and hidden state of every step (``c``, ``h``, ``c:1``, ``h:1``, ...); the same
weights are shared across time, and each step's next-character prediction has its own
categorical output node.  Error-based PC (``pc.ErrorPC``, 5 error-SGD steps) and backprop
train it from the same initial weights on the same windows; both are scored by the
test loss in nats per character.

    python examples/recurrent.py           # 600 Adam steps
    python examples/recurrent.py --quick   # a tiny run (the test suite's)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import predcode as pc
from predcode import plotting
from predcode.data import CharVocab, char_windows, load_text
from predcode.models import lstm


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--out", type=Path, default=Path("examples/out/recurrent"), help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    seq_len, hidden, steps, every = (8, 32, 20, 10) if args.quick else (16, 64, 600, 100)

    train_text, test_text = load_text("shakespeare", "train"), load_text("shakespeare", "test")
    vocab = CharVocab.from_text(train_text, test_text)
    V = len(vocab)
    if args.quick:  # encoding a million characters takes longer than the tiny run itself
        train_text, test_text = train_text[:50_000], test_text[:20_000]
    train_ids = vocab.encode(train_text)
    test_x, test_y = char_windows(vocab.encode(test_text), seq_len)
    test_x, test_y = test_x[:256], test_y[:256]

    torch.manual_seed(0)
    models = {"bp": lstm(V, hidden, seq_len)}
    models["epc"] = copy.deepcopy(models["bp"])  # the same initial weights
    graphs = {k: pc.PCGraph(m) for k, m in models.items()}
    rules = {"bp": pc.Backprop(), "epc": pc.ErrorPC(pc.SGD(0.001), stop=5)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=2e-3) for k, m in models.items()}
    windows = torch.Generator().manual_seed(1)  # the same windows for both

    def onehot(ids: torch.Tensor) -> torch.Tensor:
        return F.one_hot(ids, V).float()

    def test_loss(model) -> float:
        with torch.no_grad():
            logits = model(onehot(test_x))
            return float(F.cross_entropy(logits.reshape(-1, V), test_y.reshape(-1)))

    at, curves = [], {k: [] for k in models}
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(train_ids) - seq_len - 1, (32,), generator=windows)
        window = train_ids[starts[:, None] + torch.arange(seq_len + 1)]
        x, y = onehot(window[:, :-1]), onehot(window[:, 1:])
        for k in models:
            opts[k].zero_grad()
            rules[k].gradients(graphs[k], x, y)
            torch.nn.utils.clip_grad_norm_(models[k].parameters(), 1.0)
            opts[k].step()
        if step % every == 0 or step == steps:
            at.append(step)
            for k in models:
                curves[k].append(test_loss(models[k]))
            print(f"step {step}: test loss " + ", ".join(f"{k} {curves[k][-1]:.3f}" for k in models), flush=True)

    result = {
        "nodes": len(graphs["epc"].names),
        "seq_len": seq_len,
        "hidden": hidden,
        "vocabulary": V,
        "adam_steps": steps,
        "test_loss_nats_per_char": {k: v[-1] for k, v in curves.items()},
        "uniform_guess_nats": float(torch.log(torch.tensor(float(V)))),
        "seconds": 0.0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plotting.figure(width=5.5, height=3.6)
    for k in models:
        axes[0, 0].plot(at, curves[k], marker=".", color=plotting.COLORS[k], label=plotting.LABELS[k] + " (1 seed)")
    axes[0, 0].set(
        xlabel="Adam step (32 windows)",
        ylabel="test loss (nats per character)",
        title=f"character LSTM on Shakespeare ({seq_len} steps unrolled)",
    )
    axes[0, 0].legend()
    plotting.save(fig, args.out / "test_loss.png")
    result["seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
