r"""``predcode repro char-transformer``: a character-level transformer language model on
Shakespeare, trained by backprop, fixed prediction, error-based PC and strict PC from the
same initial weights on the same batches, three seeds each.

Model: :func:`predcode.models.gpt` (context 64, 4 pre-norm blocks, 4 heads, width 128;
value nodes after the embedding, every attention and MLP sublayer and every block; one
categorical output node holding every position's logits).  Integer token ids in, integer
next-token ids ``(batch, length)`` as targets: the output energy is the cross-entropy
summed over positions, and losses are reported in nats per character (divided by the
length).  Data: the ``shakespeare`` corpus (``predcode data fetch shakespeare``): random
windows of the training split minus its last ``VALIDATION_CHARS`` characters, which are the
validation text the learning rates are chosen on; the test loss is measured on fixed
windows of the held-out test split.

Rules (``rule`` of :class:`LMConfig`): ``bp`` (:class:`~predcode.rules.Backprop`), ``fp``
(:class:`~predcode.rules.FixedPrediction`, rate ``state_lr``, ``inference_steps``
iterations, 0 = the graph's depth: exact), ``epc`` (:class:`~predcode.rules.ErrorPC`,
``inference_steps`` steps of error SGD at ``state_lr`` from zero errors) and ``il``
(:class:`~predcode.rules.InferenceLearning`, strict PC: ``inference_steps`` steps of state
SGD from the feed-forward pass).  Every rule's gradient is clipped to norm ``clip`` and
applied by Adam at ``lr``.

``python -m predcode.experiments.char_transformer grid`` runs the learning-rate grid
(:data:`GRID`) on the validation text and writes ``lr_grid.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

from ..graph import PCGraph
from ..models import gpt
from . import experiment
from .char_lstm import band_overlap, machine, make_rule  # one rule table for both character models
from .verdict import Expectation

if TYPE_CHECKING:
    from ..data import CharVocab

VALIDATION_CHARS = 200_000
PROMPT = "ROMEO:\n"


@dataclass
class LMConfig:
    """One training run of the character transformer."""

    rule: str = "bp"
    context: int = 64
    width: int = 128
    depth: int = 4
    heads: int = 4
    batch: int = 32
    steps: int = 400
    lr: float = 3e-3  # Adam, every rule
    clip: float = 1.0
    inference_steps: int = 5
    state_lr: float = 1e-3
    state_momentum: float = 0.0
    eval_every: int = 50
    eval_windows: int = 128
    test_windows: int = 512
    sample_chars: int = 300
    temperature: float = 0.8
    seed: int = 0
    device: str = "cpu"


@dataclass
class Corpus:
    """Token ids of the training text, validation and test windows, and the vocabulary."""

    vocab: CharVocab
    train: Tensor
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


def corpus(context: int, eval_windows: int = 128, test_windows: int = 512) -> Corpus:
    """The Shakespeare corpus as token ids: training ids (the training split less its last
    ``VALIDATION_CHARS``), ``eval_windows`` validation windows and ``test_windows`` test
    windows of ``context`` characters (fixed, spread over the text)."""
    from ..data import CharVocab, char_windows, load_text

    train, test = load_text("shakespeare", "train"), load_text("shakespeare", "test")
    vocab = CharVocab.from_text(train, test)
    ids = vocab.encode(train)
    train_ids, val_ids = ids[:-VALIDATION_CHARS], ids[-VALIDATION_CHARS:]

    def spread(windows: tuple[Tensor, Tensor], n: int) -> tuple[Tensor, Tensor]:
        pick = torch.linspace(0, windows[0].shape[0] - 1, min(n, windows[0].shape[0])).long()
        return windows[0][pick], windows[1][pick]

    return Corpus(
        vocab,
        train_ids,
        spread(char_windows(val_ids, context), eval_windows),
        spread(char_windows(vocab.encode(test), context), test_windows),
    )


@torch.no_grad()
def mean_loss(model, windows: tuple[Tensor, Tensor], chunk: int = 128) -> float:
    """Cross-entropy in nats per character of ``model`` on ``windows``."""
    x, y = windows
    total = 0.0
    for k in range(0, x.shape[0], chunk):
        logits = model(x[k : k + chunk])
        total += float(
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[k : k + chunk].reshape(-1), reduction="sum")
        )
    return total / y.numel()


def sample(model, vocab, cfg: LMConfig) -> str:
    """``cfg.sample_chars`` characters after :data:`PROMPT` at ``cfg.temperature``."""
    generator = torch.Generator().manual_seed(1234)
    ids = model.generate(vocab.encode(PROMPT), cfg.sample_chars, temperature=cfg.temperature, generator=generator)
    return vocab.decode(ids)


def train_lm(cfg: LMConfig, data: Corpus | None = None, progress=None) -> dict:
    """Train one model; return its history: every step's training loss (the batch's
    feed-forward loss before the update, nats per character), the validation loss every
    ``eval_every`` steps, the final test loss, milliseconds per training step (evaluation
    excluded) and a sample."""
    data = data or corpus(cfg.context, cfg.eval_windows, cfg.test_windows)
    V, L = len(data.vocab), cfg.context
    torch.manual_seed(cfg.seed)  # the same initial weights for every rule
    model = gpt(V, L, cfg.width, cfg.depth, cfg.heads).to(cfg.device)
    graph = PCGraph(model)
    rule = make_rule(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batches = torch.Generator().manual_seed(cfg.seed + 1)  # the same batches for every rule
    offsets = torch.arange(L + 1)
    history: dict = {"loss": [], "step": [], "val_loss": [], "energy_fall": []}
    train_seconds = 0.0
    for step in range(1, cfg.steps + 1):
        starts = torch.randint(0, data.train.shape[0] - L - 1, (cfg.batch,), generator=batches)
        window = data.train[starts[:, None] + offsets[None, :]].to(cfg.device)
        tic = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        stats = rule.gradients(graph, window[:, :-1], window[:, 1:])
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        train_seconds += time.perf_counter() - tic
        loss = float(stats.loss) / L
        if not math.isfinite(loss):
            raise FloatingPointError(f"{cfg.rule} seed {cfg.seed}: loss {loss} at step {step}")
        history["loss"].append(loss)
        if stats.energy_initial is not None and stats.energy_final is not None:
            history["energy_fall"].append((float(stats.energy_initial) - float(stats.energy_final)) / L)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = mean_loss(model, data.val)
            history["step"].append(step)
            history["val_loss"].append(val)
            if progress:
                recent = history["loss"][-cfg.eval_every :]
                progress(
                    f"{cfg.rule} seed {cfg.seed} step {step}: train {sum(recent) / len(recent):.3f} "
                    f"val {val:.3f} ({train_seconds:.0f} s training)"
                )
    history["test_loss"] = mean_loss(model, data.test)
    history["ms_per_step"] = 1000 * train_seconds / cfg.steps
    history["sample"] = sample(model, data.vocab, cfg)
    if not history["energy_fall"]:
        del history["energy_fall"]
    return history


VARIANTS: dict[str, dict] = {
    "bp": {"rule": "bp"},
    "fp": {"rule": "fp", "state_lr": 1.0, "inference_steps": 0},
    "epc": {"rule": "epc", "state_lr": 1e-3, "inference_steps": 5},
    "il": {"rule": "il", "state_lr": 0.05, "state_momentum": 0.5, "inference_steps": 8},
}
"""The compared rules: backprop; fixed prediction at rate 1 for as many iterations as the
graph is deep (exact); error-based PC in its small-error regime (5 steps of error SGD at
1e-3 from zero errors); strict PC (inference learning), 8 steps of state SGD at 0.05 with
momentum 0.5 from the feed-forward pass."""

NEAR_EQUILIBRIUM: dict[str, dict] = {
    "epc-eq": {"rule": "epc", "state_lr": 0.01, "state_momentum": 0.0, "inference_steps": 20},
}
"""Error-based PC relaxed closer to equilibrium (20 steps of plain error SGD at 0.01: 40
times the relaxation time of ``epc``), run on the first seed beside the others.  A faster
relaxation (12 steps at 0.03 with momentum 0.5) overshot: its energy rose in a third of
the training steps' relaxations."""

GRID = {"bp": [1e-3, 3e-3, 1e-2], "epc": [1e-3, 3e-3], "il": [1e-3, 3e-3]}
"""Adam learning rates tried on the validation text (``grid``); fixed prediction takes
backprop's (its gradients are backprop's)."""

CHOSEN_LR = {"bp": 3e-3, "fp": 3e-3, "epc": 3e-3, "il": 1e-3, "epc-eq": 3e-3}
"""The rates the grid chose (``lr_grid.json``), used when no grid file is at hand."""


def chosen_lr(name: str, out_dir: Path) -> float:
    """The Adam rate for variant ``name``: the grid's choice from ``out_dir/lr_grid.json``
    where it ran (fixed prediction takes backprop's, ``epc-eq`` ePC's), else
    :data:`CHOSEN_LR`."""
    path = out_dir / "lr_grid.json"
    key = {"fp": "bp", "epc-eq": "epc"}.get(name, name)
    if path.exists():
        chosen = json.loads(path.read_text()).get("chosen", {})
        if key in chosen:
            return float(chosen[key])
    return CHOSEN_LR[name]


def describe(cfg: dict) -> str:
    if cfg["rule"] == "il":
        return f"sPC, T={cfg['inference_steps']}, state SGD {cfg['state_lr']:g}" + (
            f" (momentum {cfg['state_momentum']:g})" if cfg["state_momentum"] else ""
        )
    if cfg["rule"] == "epc":
        return f"ePC, T={cfg['inference_steps']}, error SGD {cfg['state_lr']:g}" + (
            f" (momentum {cfg['state_momentum']:g})" if cfg["state_momentum"] else ""
        )
    if cfg["rule"] == "fp":
        return f"fixed prediction, rate {cfg['state_lr']:g}, {cfg['inference_steps'] or 'depth'} iterations"
    return "backprop"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "bp": "tab:blue",
        "fp": "tab:green",
        "epc": "tab:purple",
        "il": "tab:red",
        "epc-eq": "tab:orange",
        "epc-fast": "tab:brown",
    }
    fig, all_axes = plt.subplots(1, 3, figsize=(17, 4.4))
    axes = all_axes[:2]
    axes[1].sharey(axes[0])
    bp_val = torch.tensor([r["val_loss"] for r in result["runs"]["bp"]])
    for name, runs in result["runs"].items():
        cfg = result["configs"][name]
        label = f"{name}: {describe(cfg)}, Adam {cfg['lr']:g}" + (f" ({len(runs)} seed)" if len(runs) == 1 else "")
        style = "--" if name == "bp" else "-"
        # training loss: means over windows of eval_every steps
        every = cfg["eval_every"]
        curves = torch.tensor([[sum(r["loss"][s - every : s]) / every for s in r["step"]] for r in runs])
        steps = torch.tensor(runs[0]["step"])
        for ax, data in zip(axes, (curves, torch.tensor([r["val_loss"] for r in runs]))):
            ax.plot(steps, data.mean(0), style, color=colours.get(name), label=label, zorder=3 if name == "bp" else 2)
            ax.fill_between(steps, data.min(0).values, data.max(0).values, color=colours.get(name), alpha=0.25)
        if name != "bp":  # the same seeds in the same order as backprop's
            gap = torch.tensor([r["val_loss"] for r in runs]) - bp_val[: len(runs)]
            all_axes[2].plot(steps, gap.mean(0), color=colours.get(name), label=name)
            all_axes[2].fill_between(steps, gap.min(0).values, gap.max(0).values, color=colours.get(name), alpha=0.25)
    all_axes[2].axhspan(-0.05, 0.05, color="grey", alpha=0.15, label="within 0.05 nats")
    all_axes[2].axhline(0.0, color="tab:blue", ls="--", lw=1)
    all_axes[2].set_yscale("symlog", linthresh=0.01)  # gaps of 1e-3 and of 1 nat both visible
    all_axes[2].legend(fontsize=7)
    for ax, title in zip(
        all_axes,
        (
            "training loss (mean over the last window)",
            "validation loss",
            "validation loss minus backprop's, same seed (symlog)",
        ),
    ):
        ax.set_xlabel("training step")
        ax.set_title(title + ", nats / character", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend(fontsize=7)
    c = result["configs"]["bp"]
    fig.suptitle(
        f"character transformer on Shakespeare (context {c['context']}, {c['depth']} blocks, "
        f"{c['heads']} heads, width {c['width']}, batch {c['batch']}): band = min..max over seeds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replot(out_dir: Path) -> None:
    """Redraw ``char_transformer.png`` from ``char_transformer.json``."""
    plot(json.loads((out_dir / "char_transformer.json").read_text()), out_dir / "char_transformer.png")


def summarise(runs: dict[str, list[dict]]) -> dict:
    def mean(v):
        return sum(v) / len(v)

    summary: dict = {
        "final_val_loss": {n: [h["val_loss"][-1] for h in hs] for n, hs in runs.items()},
        "test_loss": {n: [h["test_loss"] for h in hs] for n, hs in runs.items()},
        "ms_per_step": {n: [round(h["ms_per_step"], 1) for h in hs] for n, hs in runs.items()},
    }
    bp_ms = mean(summary["ms_per_step"]["bp"])
    summary["time_ratio_vs_bp"] = {n: round(mean(v) / bp_ms, 2) for n, v in summary["ms_per_step"].items()}
    bp_val = summary["final_val_loss"]["bp"]
    summary["val_gap_vs_bp"] = {n: mean(v) - mean(bp_val[: len(v)]) for n, v in summary["final_val_loss"].items()}
    if "fp" in runs:  # the same seeds in the same order: curve against curve
        diffs = [max(abs(a - b) for a, b in zip(f["loss"], b_["loss"])) for f, b_ in zip(runs["fp"], runs["bp"])]
        val = [max(abs(a - b) for a, b in zip(f["val_loss"], b_["val_loss"])) for f, b_ in zip(runs["fp"], runs["bp"])]
        summary["fp_vs_bp_max_abs_diff"] = {"train_loss_per_step": max(diffs), "val_loss": max(val)}
    for name in runs:
        if name != "bp" and len(runs[name]) == len(runs["bp"]):
            summary[f"val_band_overlap_{name}_vs_bp"] = band_overlap(
                [h["val_loss"] for h in runs[name]], [h["val_loss"] for h in runs["bp"]]
            )
    return summary


def compare(
    out_dir: Path,
    base: LMConfig,
    variants: dict[str, dict],
    seeds: list[int],
    extra: dict[str, dict] | None = None,
    progress=print,
) -> dict:
    """Train every variant on every seed (``extra`` variants on the first seed only) from
    the same initial weights on the same batches; write ``char_transformer.json``,
    ``char_transformer.png`` and ``samples.txt`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = corpus(base.context, base.eval_windows, base.test_windows)
    jobs = [(name, seed, overrides) for name, overrides in variants.items() for seed in seeds]
    jobs += [(name, seeds[0], overrides) for name, overrides in (extra or {}).items()]
    # the rates are read when a job starts (chosen_lr), so backprop and fixed prediction,
    # whose rate the grid settles first, may start while the grid still runs
    order = {"bp": 0, "fp": 1}
    jobs.sort(key=lambda job: order.get(job[0], 2))  # stable: otherwise in the given order
    runs: dict[str, list[dict]] = {}
    configs: dict[str, dict] = {}
    start = time.time()
    for name, seed, overrides in jobs:
        cfg = LMConfig(**{**asdict(base), "lr": chosen_lr(name, out_dir), **overrides, "seed": seed})
        configs[name] = {k: v for k, v in asdict(cfg).items() if k != "seed"}
        history = train_lm(cfg, data, progress)
        history["lr"] = cfg.lr
        runs.setdefault(name, []).append(history)
        partial = {"configs": configs, "seeds": seeds, "runs": runs}
        (out_dir / "char_transformer.partial.json").write_text(json.dumps(partial))
    return finish(out_dir, configs, seeds, runs, time.time() - start, base.device)


def finish(
    out_dir: Path,
    configs: dict[str, dict],
    seeds: list[int],
    runs: dict[str, list[dict]],
    seconds: float,
    device: str = "cpu",
) -> dict:
    """Write ``char_transformer.json``, the figure, ``samples.txt`` and ``result.json`` from
    the runs (``runs[name][k]`` trained on ``seeds[k]``); return the summary."""
    summary = summarise(runs)
    result = {
        "configs": configs,
        "seeds": seeds,
        "runs": runs,
        "summary": summary,
        "prompt": PROMPT,
        "machine": machine(device),
        "threads": torch.get_num_threads(),
        "wall_seconds": round(seconds, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    (out_dir / "char_transformer.json").write_text(json.dumps(result, indent=1))
    (out_dir / "char_transformer.partial.json").unlink(missing_ok=True)
    plot(result, out_dir / "char_transformer.png")
    lines = []
    for name, hs in runs.items():
        for seed, h in zip(seeds, hs):
            lines.append(
                f"=== {name} ({describe(configs[name])}), seed {seed}, test loss "
                f"{h['test_loss']:.3f} nats/char ===\n{h['sample']}\n"
            )
    (out_dir / "samples.txt").write_text("\n".join(lines))
    try:
        write_result(out_dir)
    except Exception as exc:  # the runs are saved above; the report file can be redone
        print(
            f"result.json not written ({type(exc).__name__}: {exc}); rerun "
            "predcode.experiments.char_transformer.write_result(out_dir)"
        )
    return summary


EXPECTED = {
    "fixed prediction = backprop": Expectation(epc=None, margin=1e-4),
    "ePC within 0.05 nats of backprop": Expectation(epc=None, margin=0.05),
    "sPC vs backprop": Expectation(epc=None, margin=0.05),
}
"""Fixed prediction equals backprop (to rounding); ePC within 0.05 nats; sPC not better than
backprop by 0.05 nats."""


def write_result(out_dir: Path, notes: Sequence[str] = ()) -> dict:
    """``result.json`` (the report's form, :func:`.common.result`) from
    ``char_transformer.json`` (and ``timing.json`` where :func:`interleaved_timing` ran):
    the comparisons with backprop and the measured numbers, then ``notes``."""
    from .common import compare as row
    from .common import result, stats, write_json

    res = json.loads((out_dir / "char_transformer.json").read_text())
    s, cfgs, runs = res["summary"], res["configs"], res["runs"]
    val = {n: stats(v) for n, v in s["final_val_loss"].items()}
    steps, batch = cfgs["bp"]["steps"], cfgs["bp"]["batch"]

    def vs_bp(claim: str, rule: str, paper_order: str, source: str, note: str) -> dict:
        """The report row of ``claim``: ``rule``'s final validation loss beside backprop's."""
        return row(
            claim,
            "final validation loss (nats/char)",
            val[rule],
            val["bp"],
            paper=None,
            paper_order=paper_order,
            expected=EXPECTED[claim],
            source=source,
            note=note,
        )

    comparisons = [
        vs_bp(
            "fixed prediction = backprop",
            "fp",
            "tie",
            "millidge2020",
            f"max |fp - bp| over every step's training loss: {s['fp_vs_bp_max_abs_diff']['train_loss_per_step']:.2g}",
        ),
        vs_bp(
            "ePC within 0.05 nats of backprop",
            "epc",
            "tie",
            "goemaere2025",
            f"mean gap {s['val_gap_vs_bp']['epc']:+.4f} nats ({describe(cfgs['epc'])})",
        ),
        vs_bp(
            "sPC vs backprop",
            "il",
            "bp<=pc",
            "goemaere2025",
            f"{describe(cfgs['il'])}; mean gap {s['val_gap_vs_bp']['il']:+.4f} nats",
        ),
    ]
    ms = {n: sum(v) / len(v) for n, v in s["ms_per_step"].items()}
    extra, notes = (
        notes,
        [
            f"{steps} steps of batch {batch} x {cfgs['bp']['context']} characters, Adam at "
            + ", ".join(f"{n} {runs[n][0]['lr']:g}" for n in runs)
            + " (chosen on the validation "
            "text by lr_grid.json), gradient norm clipped to 1",
            "backprop: final validation loss "
            + ", ".join(f"{v:.3f}" for v in s["final_val_loss"]["bp"])
            + " nats/char, test loss "
            + ", ".join(f"{v:.3f}" for v in s["test_loss"]["bp"]),
            "ms per training step (1 thread, shared machine): "
            + ", ".join(f"{n} {ms[n]:.0f} ({s['time_ratio_vs_bp'][n]:.1f}x bp)" for n in ms),
        ],
    )
    if (out_dir / "timing.json").exists():
        t = json.loads((out_dir / "timing.json").read_text())
        notes.append(
            f"ms per step measured round-robin in one process (interleaved_timing, batch "
            f"{t['batch']}, median of {t['rounds']}, load average {t['load_average'][0]:.1f}): "
            + ", ".join(f"{n} {v:.0f} ({t['ratio_vs_bp'][n]:.1f}x bp)" for n, v in t["ms_per_step"].items())
        )
    for name, hs in runs.items():
        falls = [f for h in hs for f in h.get("energy_fall", [])]
        if falls:
            notes.append(
                f"{name}: the relaxation lowered the energy in "
                f"{100 * sum(f > 0 for f in falls) / len(falls):.0f} % of the training steps "
                f"(mean fall {sum(falls) / len(falls):+.4f} nats/char)"
            )
    if "epc-eq" in s["final_val_loss"]:
        notes.append(
            f"ePC relaxed closer to equilibrium ({describe(cfgs['epc-eq'])}, seed "
            f"{res['seeds'][0]} only): final validation loss "
            f"{s['final_val_loss']['epc-eq'][0]:.3f}, gap to backprop's seed "
            f"{s['val_gap_vs_bp']['epc-eq']:+.3f}"
        )
    notes += list(extra)
    payload = result(
        "char-transformer",
        full=steps > 1000,
        seed=res["seeds"][0],
        seconds=res["wall_seconds"],
        hyperparameters={"configs": cfgs, "seeds": res["seeds"]},
        comparisons=comparisons,
        data={"summary": s},
        figures=["char_transformer.png"],
        summary="character transformer LM on Shakespeare (context 64, 4 blocks, 4 heads, "
        "width 128) trained by backprop, fixed prediction, ePC and sPC from the same "
        "weights on the same batches, 3 seeds",
        notes=notes,
    )
    write_json(out_dir / "result.json", payload)
    return payload


def interleaved_timing(out_dir: Path, rounds: int = 10, batch: int = 16, seed: int = 0) -> dict:
    """Milliseconds per training step of every variant, measured round-robin in one
    process (one step of each per round, after one warm-up step), so that the load of a
    shared machine weighs on every rule alike; the median over ``rounds``.  Writes
    ``timing.json``."""
    import statistics

    data = corpus(64)
    variants = {**VARIANTS, **NEAR_EQUILIBRIUM}
    setups = {}
    for name, overrides in variants.items():
        cfg = LMConfig(**{**asdict(LMConfig(batch=batch, seed=seed)), **overrides})
        torch.manual_seed(seed)
        model = gpt(len(data.vocab), cfg.context, cfg.width, cfg.depth, cfg.heads)
        setups[name] = (PCGraph(model), make_rule(cfg), torch.optim.Adam(model.parameters(), lr=1e-3))
    g = torch.Generator().manual_seed(seed)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for k in range(rounds + 1):
        starts = torch.randint(0, data.train.shape[0] - 65, (batch,), generator=g)
        window = data.train[starts[:, None] + torch.arange(65)[None, :]]
        for name, (graph, rule, optimizer) in setups.items():
            tic = time.perf_counter()
            rule.step(graph, window[:, :-1], window[:, 1:], optimizer)
            if k:
                times[name].append(1000 * (time.perf_counter() - tic))
    ms = {n: statistics.median(t) for n, t in times.items()}
    result = {
        "batch": batch,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "load_average": list(__import__("os").getloadavg()),
        "ms_per_step": ms,
        "ratio_vs_bp": {n: v / ms["bp"] for n, v in ms.items()},
    }
    (out_dir / "timing.json").write_text(json.dumps(result, indent=1))
    return result


def lr_grid(out_dir: Path, steps: int = 60, seed: int = 0, batch: int = 16, progress=print) -> dict:
    """Each rule of :data:`GRID` at each rate for ``steps`` steps on one seed; the rate with
    the lowest validation loss at the end is chosen.  Writes ``lr_grid.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = LMConfig(steps=steps, eval_every=steps, seed=seed, batch=batch)
    data = corpus(base.context, base.eval_windows, base.test_windows)
    table: dict = {}
    for name, rates in GRID.items():
        for lr in rates:
            cfg = LMConfig(**{**asdict(base), **VARIANTS[name], "lr": lr})
            h = train_lm(cfg, data, progress)
            table.setdefault(name, {})[f"{lr:g}"] = {"val_loss": h["val_loss"][-1], "ms_per_step": h["ms_per_step"]}
    chosen = {n: min(t, key=lambda k: t[k]["val_loss"]) for n, t in table.items()}
    result = {"steps": steps, "seed": seed, "batch": base.batch, "variants": VARIANTS, "table": table, "chosen": chosen}
    (out_dir / "lr_grid.json").write_text(json.dumps(result, indent=1))
    return result


@experiment(
    "char-transformer",
    "character transformer LM on Shakespeare (context 64, 4 blocks, "
    "width 128): backprop, fixed prediction, ePC and sPC from the same weights and "
    "batches, 3 seeds; loss curves, time per step, samples",
)
def run(out_dir: Path, full: bool, seed: int) -> dict:
    torch.set_num_threads(1)
    base = LMConfig(steps=3000 if full else 200, batch=32 if full else 16, eval_every=100 if full else 20)
    seeds = [seed, seed + 1, seed + 2]
    return compare(out_dir, base, VARIANTS, seeds, NEAR_EQUILIBRIUM)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1:2] == ["timing"]:
        print(json.dumps(interleaved_timing(Path("results/char-transformer")), indent=1))
    if sys.argv[1:2] == ["grid"]:
        steps = int(sys.argv[2]) if len(sys.argv) > 2 else 60
        print(json.dumps(lr_grid(Path("results/char-transformer"), steps)["chosen"]))
