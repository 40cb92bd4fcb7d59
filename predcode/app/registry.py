"""What ``predcode train`` can build by name: the learning rules (``--rule``) and the models
(``--model``), each a :class:`~predcode.registry.Registry` of builders that read a
:class:`~predcode.app.config.TrainConfig`.

These two tables are the only place a rule or model name is written: the config's choices
and checks (:mod:`predcode.app.config`), the command line's flags (generated from the
config), :func:`~predcode.app.train.build_rule`, :func:`~predcode.app.train.build_model`
and the docs tables (``docs/hooks``) all read them.  To add a rule, register one builder
here; nothing else lists names.

Tags: a rule tagged ``"nudge"`` takes ``--nudge`` (output nudging around it); a model tagged
``"flat-inputs"`` reads flattened images, ``"image"`` needs an image dataset,
``"batch-norm"`` takes ``--batch-norm``, ``"text"`` reads the shakespeare corpus.

This module must not import :mod:`predcode.app.config` (the config imports the names from
here); builders take the config as their one argument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import models, rules
from ..exceptions import OptionError
from ..inference import StopRule, make_solver
from ..registry import Registry
from ..rules import LearningRule
from ..sampling import Langevin

if TYPE_CHECKING:
    from .config import TrainConfig

RULES: Registry[LearningRule] = Registry("rule")
"""``--rule`` name -> builder ``(cfg) -> LearningRule``."""

MODELS: Registry[nn.Module] = Registry("model")
"""``--model`` name -> builder ``(cfg) -> nn.Module``."""

GPT_CONTEXT = 64
"""Characters per training window of the ``gpt`` model on the ``shakespeare`` corpus."""

IMAGE_SHAPES = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32)}
"""``(channels, height = width)`` of each image dataset, for the image models."""


# -- learning rules --------------------------------------------------------------------------


def _solver(cfg: TrainConfig):
    return make_solver(cfg.solver, cfg.state_lr, cfg.state_momentum)


def _stop(cfg: TrainConfig) -> StopRule:
    return StopRule(max_steps=cfg.steps)


def _nudged(rule: rules.InferenceLearning, cfg: TrainConfig) -> LearningRule:
    """``rule`` as it is (``--nudge clamp``) or wrapped in output nudging."""
    if cfg.nudge == "clamp":
        return rule
    from ..rules.nudging import Nudging

    return Nudging(rule, cfg.nudge_beta, cfg.nudge)


@RULES.register("il", rules.InferenceLearning, "nudge")
def _il(cfg: TrainConfig) -> LearningRule:
    return _nudged(rules.InferenceLearning(_solver(cfg), _stop(cfg), compile=cfg.compile), cfg)


@RULES.register("epc", rules.ErrorPC, "nudge")
def _epc(cfg: TrainConfig) -> LearningRule:
    return _nudged(rules.ErrorPC(_solver(cfg), _stop(cfg), compile=cfg.compile), cfg)


@RULES.register("ipc", rules.IncrementalPC)
def _ipc(cfg: TrainConfig) -> LearningRule:
    return rules.IncrementalPC(_solver(cfg), _stop(cfg))


@RULES.register("fixed-prediction", rules.FixedPrediction)
def _fixed_prediction(cfg: TrainConfig) -> LearningRule:
    return rules.FixedPrediction(lr=cfg.state_lr, steps=cfg.steps or None)


@RULES.register("zil", rules.ZIL)
def _zil(cfg: TrainConfig) -> LearningRule:
    return rules.ZIL(lr=cfg.state_lr)


@RULES.register("bp", rules.Backprop)
def _bp(cfg: TrainConfig) -> LearningRule:
    return rules.Backprop()


# other credit-assignment rules, each with its own defaults


@RULES.register("fa", rules.FeedbackAlignment)
def _fa(cfg: TrainConfig) -> LearningRule:
    return rules.FeedbackAlignment(seed=cfg.seed)


@RULES.register("dfa", rules.DirectFeedbackAlignment)
def _dfa(cfg: TrainConfig) -> LearningRule:
    return rules.DirectFeedbackAlignment(seed=cfg.seed)


@RULES.register("dtp", rules.DifferenceTargetPropagation)
def _dtp(cfg: TrainConfig) -> LearningRule:
    return rules.DifferenceTargetPropagation(seed=cfg.seed)


@RULES.register("ep", rules.EquilibriumPropagation)
def _ep(cfg: TrainConfig) -> LearningRule:
    # the nudged phase relaxes with the configured solver and steps
    return rules.EquilibriumPropagation(solver=_solver(cfg), stop=_stop(cfg))


@RULES.register("mcpc", rules.MonteCarloPC)
def _mcpc(cfg: TrainConfig) -> LearningRule:
    # Monte Carlo PC: a Langevin chain at the state rate, half the steps burn in, half sample
    chain = Langevin(cfg.state_lr, generator=torch.Generator().manual_seed(cfg.seed))
    return rules.MonteCarloPC(chain, burn_in=cfg.steps // 2, samples=max(cfg.steps - cfg.steps // 2, 1))


# -- models ----------------------------------------------------------------------------------


def image_shape(cfg: TrainConfig) -> tuple[int, int]:
    """``(channels, side)`` of ``cfg.dataset``; an :class:`OptionError` for a non-image one."""
    dataset = cfg.dataset.lower().replace("_", "-")
    if dataset not in IMAGE_SHAPES:
        raise OptionError(f"model '{cfg.model}' needs an image dataset, one of {sorted(IMAGE_SHAPES)}")
    return IMAGE_SHAPES[dataset]


def _common(cfg: TrainConfig) -> dict:
    return dict(act=cfg.activation, output_energy=cfg.output_energy)


@MODELS.register("mlp", models.mlp, "flat-inputs")
def _mlp(cfg: TrainConfig) -> nn.Module:
    return models.mlp(cfg.sizes, act=cfg.activation, output_energy=cfg.output_energy)


@MODELS.register("cnn", models.cnn, "image", "batch-norm")
def _cnn(cfg: TrainConfig) -> nn.Module:
    in_channels, size = image_shape(cfg)
    return models.cnn(cfg.channels or (32, 64), in_channels, 10, size, batch_norm=cfg.batch_norm, **_common(cfg))


@MODELS.register("vgg5", models.vgg5, "image", "batch-norm")
def _vgg5(cfg: TrainConfig) -> nn.Module:
    in_channels, size = image_shape(cfg)
    return models.vgg5(in_channels, 10, size, width=cfg.width, batch_norm=cfg.batch_norm, **_common(cfg))


@MODELS.register("vgg7", models.vgg7, "image", "batch-norm")
def _vgg7(cfg: TrainConfig) -> nn.Module:
    in_channels, size = image_shape(cfg)
    return models.vgg7(in_channels, 10, size, width=cfg.width, batch_norm=cfg.batch_norm, **_common(cfg))


@MODELS.register("resnet", models.resnet, "image", "batch-norm")
def _resnet(cfg: TrainConfig) -> nn.Module:
    in_channels, _ = image_shape(cfg)
    return models.resnet(in_channels, 10, cfg.channels or (16, 32, 64), batch_norm=cfg.batch_norm, **_common(cfg))


@MODELS.register("rosenbaum-cnn", models.rosenbaum_cnn, "image")
def _rosenbaum_cnn(cfg: TrainConfig) -> nn.Module:
    if image_shape(cfg) != (1, 28):
        raise OptionError("rosenbaum-cnn reads 28x28 grey images (mnist, fashion-mnist)")
    return models.rosenbaum_cnn(output_energy=cfg.output_energy)


@MODELS.register("gpt", models.gpt, "text")
def _gpt(cfg: TrainConfig) -> nn.Module:
    # the char-transformer reproduction's model (categorical output)
    from ..data import corpus_vocab

    return models.gpt(len(corpus_vocab(cfg.dataset)), context=GPT_CONTEXT)
