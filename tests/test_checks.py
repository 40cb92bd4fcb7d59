"""predcode.checks.require_positive: the one check behind every "must be a finite number > 0"
option (rates, step sizes, precisions, temperatures), and that public entry points use it."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from predcode.app.arguments import positive_float
from predcode.checks import require_positive
from predcode.energy import Gaussian
from predcode.exceptions import OptionError
from predcode.inference import SGD, GradientDescent, Heun
from predcode.rules.ep import EquilibriumPropagation
from predcode.rules.zil import ZIL


@pytest.mark.parametrize("value", [1e-12, 0.1, 3, 1e300, np.float64(0.5), np.float32(2.0)])
def test_a_positive_number_comes_back_unchanged(value):
    back = require_positive(value, "rate")
    assert back is value


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (-1.5, "-1.5"),
        (float("nan"), "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (True, "True"),
        ("0.1", "'0.1'"),
        (None, "None"),
        (1j, "1j"),
    ],
)
def test_anything_else_is_one_line_naming_the_option_and_the_value(value, shown):
    with pytest.raises(OptionError) as err:
        require_positive(value, "the step")
    assert str(err.value) == f"the step must be a finite number > 0, got {shown}"


def test_a_tensor_is_positive_when_every_element_is_finite_and_positive():
    for ok in (torch.tensor(2.0), torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64), torch.tensor([1, 2])):
        assert require_positive(ok, "precision") is ok
    bad = [
        torch.tensor(0.0),
        torch.tensor([1.0, -1.0]),
        torch.tensor([1.0, float("nan")]),
        torch.tensor([[1.0, math.inf], [1.0, 1.0]]),
        torch.zeros(0),
        torch.tensor([True]),
        torch.tensor([1 + 1j]),
    ]
    for value in bad:
        with pytest.raises(OptionError, match=r"^precision must be a finite number > 0, got tensor\(") as err:
            require_positive(value, "precision")
        assert "\n" not in str(err.value)


def test_public_entry_points_give_the_one_line_error():
    cases = [
        (lambda: GradientDescent(0.0), "inference rate must be a finite number > 0, got 0.0"),
        (lambda: SGD(float("nan")), "inference rate must be a finite number > 0, got nan"),
        (lambda: Heun(-1.0), "Heun step dt must be a finite number > 0, got -1.0"),
        (lambda: ZIL(lr=math.inf), "inference rate must be a finite number > 0, got inf"),
        (lambda: EquilibriumPropagation(beta=0.0), "EP's nudge beta must be a finite number > 0, got 0.0"),
        (lambda: Gaussian(precision=-2.0), "Gaussian precision must be a finite number > 0, got -2.0"),
    ]
    for make, message in cases:
        with pytest.raises(OptionError) as err:
            make()
        assert str(err.value) == message


def test_gaussian_takes_a_one_element_tensor_precision_as_before():
    assert torch.equal(Gaussian(precision=torch.tensor(2.0)).log_precision, Gaussian(precision=2.0).log_precision)
    with pytest.raises(OptionError, match="Gaussian precision must be a finite number > 0, got tensor"):
        Gaussian(precision=torch.tensor(0.0))


def test_the_command_line_type_stays_an_argparse_error():
    assert positive_float("0.25") == 0.25
    for text in ("0", "-1", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number > 0, got"):
            positive_float(text)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number > 0, got 'fast'"):
        positive_float("fast")
