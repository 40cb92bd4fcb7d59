"""Training configuration: one dataclass, filled from defaults, a TOML file, then flags.

The defaults are the pcx MLP benchmark (784-128-128-128-10, GELU with the tanh
approximation, batch 128, T = 8, state SGD lr 0.010535 momentum 0.65, AdamW lr 2.969e-4
weight decay 3.55e-4, warmup-cosine schedule, inputs in [-1, 1]).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OptionError

RULES = ("il", "epc", "ipc", "fixed-prediction", "zil", "bp")
RULES += ("fa", "dfa", "dtp", "ep")  # other credit-assignment rules
NUDGES = ("clamp", "positive", "negative", "centred")  # il/epc output: clamp or nudge by beta
SCHEDULES = ("warmup-cosine", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass
class TrainConfig:
    # model: "mlp" (uses sizes) or an image model (uses channels; see train.MODELS)
    model: str = "mlp"
    sizes: list[int] = field(default_factory=lambda: [784, 128, 128, 128, 10])
    activation: str = "gelu-tanh"
    output_energy: str = "se"
    channels: list[int] = field(default_factory=list)  # cnn: per block; resnet: per stage
    width: float = 1.0  # vgg5/vgg7: channel multiplier (1 = the pcx definition)
    batch_norm: bool = False  # cnn/vgg5/vgg7/resnet: BatchNorm2d after every convolution
    # data
    dataset: str = "mnist"
    normalize: str = "[-1,1]"
    batch_size: int = 128
    validation: int = 0  # hold out this many training images (seeded) and report val_acc
    # learning rule and inference
    rule: str = "il"
    steps: int = 8
    solver: str = "sgd"
    state_lr: float = 0.010535
    state_momentum: float = 0.65
    nudge: str = "clamp"  # il/epc: clamp the output, or nudge it (positive/negative/centred)
    nudge_beta: float = 0.1  # the nudge's size (> 0) when nudge is not "clamp"
    compile: bool = False  # run each IL step as one torch.compile region (first step compiles)
    # weight optimizer
    optimizer: str = "adamw"
    lr: float = 2.969e-4
    weight_decay: float = 3.550e-4
    schedule: str = "warmup-cosine"
    epochs: int = 10
    # backprop run side by side (--compare-bp)
    compare_bp: bool = False
    bp_lr: float = 2.749e-4
    bp_weight_decay: float = 5.121e-3
    # run
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    run_dir: str = "runs/latest"
    checkpoint_every: int = 0  # batches between checkpoints; 0 = once per epoch
    max_batches: int = 0  # stop each epoch after this many batches (0 = all); for smoke runs
    # tracking (these may change when resuming)
    tensorboard: bool = False  # write TensorBoard scalars to RUN_DIR/tb (pip install 'predcode[tb]')
    angle_every: int = 50  # with --tensorboard: angle to backprop's gradient every N steps (0 = never)

    def validate(self) -> "TrainConfig":
        if self.rule not in RULES:
            raise OptionError(f"unknown rule '{self.rule}'; choose one of {list(RULES)}")
        if self.nudge not in NUDGES:
            raise OptionError(f"unknown nudge '{self.nudge}'; choose one of {list(NUDGES)}")
        if self.nudge != "clamp" and self.rule not in ("il", "epc"):
            raise OptionError(f"nudge '{self.nudge}' applies to the il and epc rules, not "
                              f"'{self.rule}'; use --nudge clamp or --rule il/epc")
        if self.nudge != "clamp" and not self.nudge_beta > 0:
            raise OptionError(f"nudge_beta must be > 0, got {self.nudge_beta}")
        if self.schedule not in SCHEDULES:
            raise OptionError(f"unknown schedule '{self.schedule}'; choose one of {list(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise OptionError(f"unknown optimizer '{self.optimizer}'; choose one of {list(OPTIMIZERS)}")
        if self.dtype not in ("float32", "float64"):
            raise OptionError(f"dtype must be float32 or float64, got '{self.dtype}'")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise OptionError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.angle_every < 0:
            raise OptionError(f"angle_every must be >= 0, got {self.angle_every}")
        if self.steps < 0:
            raise OptionError(f"steps must be >= 0, got {self.steps}")
        if self.batch_norm and self.model not in ("cnn", "vgg5", "vgg7", "resnet"):
            raise OptionError(f"batch_norm applies to the cnn, vgg5, vgg7 and resnet models, not "
                              f"'{self.model}'")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(f"unknown config key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**values).validate()

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise OptionError(f"config file {path} does not exist")
        with open(path, "rb") as f:
            values = tomllib.load(f)
        values.update(overrides or {})
        return cls.from_dict(values)
