"""Training configuration: one typed, validated model, filled from defaults, a TOML file,
then flags.

:class:`TrainConfig` is a pydantic model in strict mode: every key has a type, a range or
a set of choices, and a value that does not fit is refused, never coerced (``epochs =
1.9``, ``compare_bp = "false"`` and ``max_batches = -1`` are errors, not 2 epochs, ``True``
and an empty epoch); unknown keys are refused.  The same checks run for a TOML file, the
flags of ``predcode train`` (generated from the fields below, with their descriptions as
help) and the Python API; every failure is one :class:`~predcode.exceptions.OptionError` line
naming the key, the value and what it accepts.

The settings come in five sections (:data:`SECTIONS`): ``model``, ``data``, ``rule``,
``optimizer`` and ``run``.  A TOML file writes each under its table (``[rule]`` then
``steps = 8``); every key keeps one name everywhere (the same key in its TOML table, as a
flag, ``--steps``, and as an attribute, ``cfg.steps``), so the flags and the Python API stay
flat and :meth:`TrainConfig.section` gives one section's values.  Top-level (flat) keys in
a file are still read, for one release, with a :class:`DeprecationWarning`.

The defaults are the pcx MLP benchmark (784-128-128-128-10, GELU with the tanh
approximation, batch 128, T = 8, state SGD lr 0.010535 momentum 0.65, AdamW lr 2.969e-4
weight decay 3.55e-4, warmup-cosine schedule, inputs in [-1, 1]).
"""

from __future__ import annotations

import json
import tomllib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..energy import ENERGIES
from ..exceptions import OptionError
from ..inference import SOLVERS as SOLVER_REGISTRY
from . import registry

# Names read from the registries (predcode.app.registry for rules and models, the library's
# tables for energies and solvers): nothing here lists them again.
RULES = registry.RULES.names()
NUDGES = ("clamp", "positive", "negative", "centred")  # il/epc output: clamp or nudge by beta
SCHEDULES = ("warmup-cosine", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")
MODELS = registry.MODELS.names()
DATASETS = ("mnist", "fashion-mnist", "cifar10", "shakespeare")  # images; text for gpt
ACTIVATIONS = ("tanh", "relu", "gelu", "gelu-tanh", "sigmoid", "identity", "leaky-relu", "hard-tanh")
OUTPUT_ENERGIES = tuple(ENERGIES)
SOLVERS = tuple(SOLVER_REGISTRY)
NORMALIZATIONS = ("[-1,1]", "[0,1]", "none")
DTYPE_NAMES = ("float32", "float64")
BATCH_NORM_MODELS = registry.MODELS.tagged("batch-norm")
NUDGED_RULES = registry.RULES.tagged("nudge")
TEXT_MODELS = registry.MODELS.tagged("text")

# The sections of a config, in order, and their keys (each key in exactly one section).
SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("model", "sizes", "activation", "output_energy", "channels", "width", "batch_norm"),
    "data": ("dataset", "normalize", "batch_size", "validation"),
    "rule": ("rule", "steps", "solver", "state_lr", "state_momentum", "nudge", "nudge_beta", "compile"),
    "optimizer": ("optimizer", "lr", "weight_decay", "schedule", "epochs", "compare_bp", "bp_lr", "bp_weight_decay"),
    "run": ("seed", "device", "dtype", "run_dir", "checkpoint_every", "max_batches", "tensorboard", "angle_every"),
}
SECTION_OF: dict[str, str] = {key: section for section, keys in SECTIONS.items() for key in keys}

# what each choice field is called in messages, and its choices
_CHOICES = {
    "rule": RULES,
    "schedule": SCHEDULES,
    "optimizer": OPTIMIZERS,
    "model": MODELS,
    "dataset": DATASETS,
    "activation": ACTIVATIONS,
    "output_energy": OUTPUT_ENERGIES,
    "solver": SOLVERS,
    "nudge": NUDGES,
    "normalize": NORMALIZATIONS,
    "dtype": DTYPE_NAMES,
}


def _and(names: tuple[str, ...]) -> str:
    """``a, b and c``."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


# The type of each choice field: at run time the Literal of its choices (read from the registries
# at import, so pydantic refuses any other value and the flags list them); a static checker cannot
# evaluate a Literal built from a tuple, so it checks these fields as str.
if TYPE_CHECKING:
    ModelName: TypeAlias = str
    ActivationName: TypeAlias = str
    OutputEnergyName: TypeAlias = str
    DatasetName: TypeAlias = str
    NormalizationName: TypeAlias = str
    RuleName: TypeAlias = str
    SolverName: TypeAlias = str
    NudgeName: TypeAlias = str
    OptimizerName: TypeAlias = str
    ScheduleName: TypeAlias = str
    DtypeName: TypeAlias = str
else:
    ModelName = Literal[MODELS]
    ActivationName = Literal[ACTIVATIONS]
    OutputEnergyName = Literal[OUTPUT_ENERGIES]
    DatasetName = Literal[DATASETS]
    NormalizationName = Literal[NORMALIZATIONS]
    RuleName = Literal[RULES]
    SolverName = Literal[SOLVERS]
    NudgeName = Literal[NUDGES]
    OptimizerName = Literal[OPTIMIZERS]
    ScheduleName = Literal[SCHEDULES]
    DtypeName = Literal[DTYPE_NAMES]


class TrainConfig(BaseModel):
    """Every setting of a training run (see the module docstring for the checks)."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # model: "mlp" (uses sizes) or an image model (uses channels; see registry.MODELS)
    model: ModelName = Field("mlp", description="network architecture")
    sizes: list[int] = Field(
        default_factory=lambda: [784, 128, 128, 128, 10],
        min_length=2,
        description="mlp: layer widths, input first, classes last",
    )
    activation: ActivationName = Field("gelu-tanh", description="hidden activation")
    output_energy: OutputEnergyName = Field("se", description="output node's energy: squared error or cross-entropy")
    channels: list[int] = Field(
        default_factory=list,
        description=("cnn: channels per block (default 32 64); resnet: per stage (default 16 32 64)"),
    )
    width: float = Field(1.0, gt=0, description="vgg5/vgg7: channel multiplier (1 = pcx's)")
    batch_norm: bool = Field(False, description=("cnn/vgg5/vgg7/resnet: BatchNorm2d after every convolution"))
    # data
    dataset: DatasetName = Field("mnist", description="image classification dataset")
    normalize: NormalizationName = Field("[-1,1]", description="input pixel range")
    batch_size: int = Field(128, ge=1, description="examples per training batch")
    validation: int = Field(
        0, ge=0, description=("hold out this many training images (seeded) and report val_acc (0 = none)")
    )
    # learning rule and inference
    rule: RuleName = Field("il", description="learning rule")
    steps: int = Field(8, ge=1, description="inference steps per batch (T)")
    solver: SolverName = Field("sgd", description="inference solver")
    state_lr: float = Field(0.010535, gt=0, description="inference rate (state step size)")
    state_momentum: float = Field(
        0.65, ge=0, lt=1, description=("momentum of the sgd inference solver (0 for the others)")
    )
    nudge: NudgeName = Field(
        "clamp",
        description=("il/epc: clamp the output to the target, or nudge it by nudge_beta (positive, negative, centred)"),
    )
    nudge_beta: float = Field(0.1, gt=0, description="the nudge's size when nudge is not clamp")
    compile: bool = Field(
        False, description=("run each inference-learning step as one torch.compile region (first step compiles)")
    )
    # weight optimizer
    optimizer: OptimizerName = Field("adamw", description="weight optimizer")
    lr: float = Field(2.969e-4, gt=0, description="weight learning rate")
    weight_decay: float = Field(3.550e-4, ge=0, description="weight decay")
    schedule: ScheduleName = Field("warmup-cosine", description="learning-rate schedule")
    epochs: int = Field(10, ge=1, description="passes over the training set")
    # backprop run side by side (--compare-bp)
    compare_bp: bool = Field(
        False, description=("train backprop beside the rule, from the same initial weights on the same batches")
    )
    bp_lr: float = Field(2.749e-4, gt=0, description="with --compare-bp: backprop's learning rate")
    bp_weight_decay: float = Field(5.121e-3, ge=0, description=("with --compare-bp: backprop's weight decay"))
    # run
    seed: int = Field(0, ge=0, lt=2**32, description="seed of the initial weights and batch order")
    device: str = Field("cpu", min_length=1, description="torch device: cpu, cuda, cuda:N, mps")
    dtype: DtypeName = Field("float32", description="floating-point precision")
    run_dir: str = Field(
        "runs/latest",
        min_length=1,
        description=(
            "run folder (checkpoint, metrics.jsonl, config.toml); the command line makes a fresh "
            "runs/TIMESTAMP with a runs/latest link when none is given"
        ),
    )
    checkpoint_every: int = Field(0, ge=0, description=("batches between checkpoints (0 = once per epoch)"))
    max_batches: int = Field(0, ge=0, description=("stop each epoch after this many batches (0 = all); for smoke runs"))
    # tracking (these may change when resuming)
    tensorboard: bool = Field(
        False, description=("write TensorBoard scalars to RUN_DIR/tb (pip install 'predcode[tb]')")
    )
    angle_every: int = Field(
        50, ge=0, description=("with --tensorboard: angle to backprop's gradient every N steps (0 = never)")
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        bad = [s for s in self.sizes if s < 1] + [c for c in self.channels if c < 1]
        if bad:
            raise ValueError(f"layer sizes and channels must be >= 1, got {bad}")
        if self.batch_norm and self.model not in BATCH_NORM_MODELS:
            raise ValueError(f"batch_norm applies to the {_and(BATCH_NORM_MODELS)} models, not '{self.model}'")
        if (self.model in TEXT_MODELS) != (self.dataset == "shakespeare"):
            raise ValueError(
                f"model '{self.model}' needs an image dataset and the shakespeare "
                "corpus the gpt model (token ids in, next tokens out): use "
                "--model gpt --dataset shakespeare together"
            )
        if self.nudge != "clamp" and self.rule not in NUDGED_RULES:
            raise ValueError(
                f"nudge '{self.nudge}' applies to the {_and(NUDGED_RULES)} rules, not "
                f"'{self.rule}'; use --nudge clamp or --rule {'/'.join(NUDGED_RULES)}"
            )
        return self

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise OptionError(describe(exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise OptionError(describe(exc)) from None

    def validate(self) -> TrainConfig:  # type: ignore[override]
        """The config itself (every instance is valid; kept for callers that chain it)."""
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every key, flat (``{"rule": "il", "steps": 8, ...}``)."""
        return self.model_dump()

    def section(self, name: str) -> dict[str, Any]:
        """One section's keys and values (``cfg.section("rule")``: rule, steps, solver, ...)."""
        if name not in SECTIONS:
            raise OptionError(f"unknown config section '{name}'; the sections are {list(SECTIONS)}")
        return {key: getattr(self, key) for key in SECTIONS[name]}

    def to_sections(self) -> dict[str, dict[str, Any]]:
        """Every key under its section (the layout of a TOML file)."""
        return {name: self.section(name) for name in SECTIONS}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return cls(**values)

    @classmethod
    def from_sections(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """A config from sectioned values (``{"rule": {"steps": 8}, ...}``, a TOML file's
        layout); top-level keys are read with a :class:`DeprecationWarning`."""
        return cls.from_dict(flatten(values, source))

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The file's keys (sectioned; flat ones with a :class:`DeprecationWarning`), then
        ``overrides`` (flat, e.g. command-line flags) on top."""
        values = read_toml(path)
        values.update(overrides or {})
        return cls.from_dict(values)

    def to_toml(self) -> str:
        """This config as a TOML file, one table per section, that :meth:`from_toml` reads
        back to an equal config."""
        lines = ["# the resolved configuration of this run (predcode train --config FILE)"]
        for name, values in self.to_sections().items():
            lines += ["", f"[{name}]"]
            lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]  # JSON is TOML here
        return "\n".join(lines) + "\n"


def flatten(values: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Sectioned values (``{"rule": {"steps": 8}}``) as flat keys (``{"steps": 8}``).

    A key under the wrong section, an unknown section or a key given twice is an
    :class:`OptionError`; top-level keys (the flat layout of earlier releases) are kept, with
    one :class:`DeprecationWarning` naming their sections.  Unknown keys are left for
    :class:`TrainConfig` to refuse."""
    flat: dict[str, Any] = {}
    loose: list[str] = []

    def put(key: str, value: Any) -> None:
        if key in flat:
            raise OptionError(
                f"config key '{key}' is given twice in {source}; keep the one under [{SECTION_OF.get(key, '?')}]"
            )
        flat[key] = value

    for key, value in values.items():
        if isinstance(value, dict):
            if key not in SECTIONS:
                raise OptionError(f"unknown config section [{key}] in {source}; the sections are {list(SECTIONS)}")
            for inner, item in value.items():
                home = SECTION_OF.get(inner)
                if home is None:
                    raise OptionError(
                        f"unknown config key '{inner}' in [{key}] of {source}; the keys of "
                        f"[{key}] are {list(SECTIONS[key])}"
                    )
                if home != key:
                    raise OptionError(f"config key '{inner}' belongs under [{home}], not [{key}] ({source})")
                put(inner, item)
        else:
            loose.append(key)
            put(key, value)
    known = [key for key in loose if key in SECTION_OF]
    if known:
        where = ", ".join(f"{key} -> [{SECTION_OF[key]}]" for key in known)
        warnings.warn(
            f"{source}: top-level config keys are deprecated (read for one more release); "
            f"put each under its section: {where}",
            DeprecationWarning,
            stacklevel=2,
        )
    return flat


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's keys, flat (sections flattened by :func:`flatten`); a missing or
    malformed file is an :class:`OptionError`."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"config file {path} does not exist; give the path of a TOML file")
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"config file {path} is not valid TOML ({exc}); fix that line") from None
    except UnicodeDecodeError:
        raise OptionError(f"config file {path} is not a UTF-8 text file; give a TOML file") from None
    return flatten(values, str(path))


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


_KINDS = {
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "int_from_float": "a whole number",
    "finite_number": "a finite number",
}


def describe(exc: ValidationError) -> str:
    """One line per problem (the first three) naming the key, its flag, the value given and
    what is accepted."""
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(p) for p in err["loc"]]
        key = loc[0] if loc else ""
        where = f"{key!r} ({_flag(key)})" if key else "config"
        if len(loc) > 1:
            where += f" item {loc[1]}"
        value = err.get("input")
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            parts.append(f"unknown config key {key!r}; known keys are {sorted(TrainConfig.model_fields)}")
        elif kind == "literal_error" and key in _CHOICES:
            label = key.replace("_", " ")
            parts.append(
                f"unknown {label} {value!r}".replace('"', "'")
                + f"; choose one of {list(_CHOICES[key])}"
                + ("; train needs an image dataset" if key == "dataset" else "")
            )
        elif kind in _KINDS:
            parts.append(f"{where} must be {_KINDS[kind]}, got {value!r} ({type(value).__name__})")
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            bound = {
                "greater_than": "> {gt}",
                "greater_than_equal": ">= {ge}",
                "less_than": "< {lt}",
                "less_than_equal": "<= {le}",
            }[kind].format(**ctx)
            parts.append(f"{where} must be {bound}, got {value!r}")
        elif kind in ("too_short", "too_long", "string_too_short"):
            parts.append(f"{where}: {err['msg'].lower()}, got {value!r}")
        elif kind == "value_error":
            parts.append(str(ctx.get("error", err["msg"])))
        else:
            parts.append(f"{where}: {err['msg']}, got {value!r}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def check_device(name: str) -> None:
    """A device this machine has; otherwise an :class:`OptionError` naming the fix."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise OptionError(f"unknown device '{name}'; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(
                f"device '{name}': this machine has no CUDA device (or this torch "
                "build has no CUDA support); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError(
                f"device '{name}': this machine has {torch.cuda.device_count()} "
                f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise OptionError(f"device '{name}': MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise OptionError(f"device '{name}' is not supported; use cpu, cuda, cuda:N or mps")
