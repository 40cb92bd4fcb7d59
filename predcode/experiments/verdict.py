r"""The strict verdict of one claim: a test fixed in code before the run, applied to seeds.

Every row of the report compares a PC rule with backprop on one metric.  Let
:math:`d = s\,(\bar m_{BP} - \bar m_{PC})` be PC's *advantage* (:math:`s = +1` when lower
is better, :math:`-1` otherwise), so :math:`d > 0` means PC is better.  Over the seeds
(``n_PC`` and ``n_BP`` runs with sample variances :math:`v_{PC}, v_{BP}`) Welch's test uses

.. math:: \mathrm{se} = \sqrt{v_{PC}/n_{PC} + v_{BP}/n_{BP}},\qquad
          \nu = \frac{\mathrm{se}^4}{\frac{(v_{PC}/n_{PC})^2}{n_{PC}-1}
                + \frac{(v_{BP}/n_{BP})^2}{n_{BP}-1}},\qquad t = d/\mathrm{se}.

The paper's ordering fixes which test decides, at level :math:`\alpha = 0.05`:

* **PC better** (``"pc<bp"``): *reproduced* when :math:`d > 0` and the two-sided Welch
  p-value is below :math:`\alpha`; *direction only* when :math:`d > 0` but the test fails;
  *not reproduced* when :math:`d \le 0`.  **BP better** (``"pc>bp"``) is its mirror image.
* **tie**: a margin :math:`\delta > 0` in the metric's units, written beside the claim
  before the run, says how large a difference still counts as a tie.  *reproduced* when
  the two one-sided tests (TOST) put :math:`d` inside :math:`(-\delta, \delta)`, i.e. the
  90 % interval of :math:`d` lies inside the margin; *direction only* when
  :math:`|d| < \delta` but the interval does not fit; *not reproduced* otherwise.
* **BP better or tie** (``"bp<=pc"``): PC must not be better by :math:`\delta` or more;
  *reproduced* when the one-sided test of :math:`d < \delta` passes, *direction only* when
  :math:`d < \delta` but it does not, *not reproduced* otherwise.

The report also records the 95 % interval of :math:`d` and whether the paper's own
difference lies inside it.  With fewer than two finite runs a side has no variance, so
no test can pass: the verdict is at best *direction only*.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

from ..exceptions import OptionError

REPRODUCED, DIRECTION_ONLY, NOT_REPRODUCED = "reproduced", "direction only", "not reproduced"
VERDICTS = (REPRODUCED, DIRECTION_ONLY, NOT_REPRODUCED)
ORDERS = ("pc<bp", "tie", "bp<=pc", "pc>bp")
ALPHA = 0.05


@dataclass(frozen=True)
class Expectation:
    """What a claim's row is expected to give, written in code before its run.

    Args:
        spc: the expected verdict for state-based PC at the paper's ``T`` (the papers'
            simulation of PC).
        epc: the expected verdict for PC at its exact equilibrium (error-based PC relaxed to
            convergence: the theory's PC); None when the row has no equilibrium run.
        margin: :math:`\\delta` of a tie or BP-better-or-tie row, in the metric's units.
        history: how the expectation came about, e.g. that it was set after an earlier
            result was seen; the report prints it beside the row.
    """

    spc: str = REPRODUCED
    epc: str | None = REPRODUCED
    margin: float = 0.0
    history: str = ""

    def __post_init__(self) -> None:
        for v in (self.spc, self.epc):
            if v is not None and v not in VERDICTS:
                raise OptionError(f"an expected verdict must be one of {VERDICTS}, got {v!r}")
        if not (self.margin >= 0 and math.isfinite(self.margin)):
            raise OptionError(f"margin must be a finite number >= 0, got {self.margin}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.sf(t, df))


def _t_quantile(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


class Welch(TypedDict):
    """Welch's test of PC against backprop (:func:`welch`): PC's advantage, its standard
    error, the degrees of freedom, the two-sided p-value and the 95 % interval ``[lo, hi]``."""

    advantage: float
    se: float
    df: float
    p: float
    ci95: list[float]


def welch(pc: dict, bp: dict, lower_is_better: bool) -> Welch:
    """PC's advantage ``d``, its standard error, Welch's degrees of freedom, the two-sided
    p-value of ``d != 0`` and the 95 % interval of ``d``, from two ``common.stats`` dicts."""
    sign = 1.0 if lower_is_better else -1.0
    d = sign * (bp["mean"] - pc["mean"])
    n1, n2 = pc.get("n_finite", pc["n"]), bp.get("n_finite", bp["n"])
    if n1 < 2 or n2 < 2 or not math.isfinite(d):
        return {
            "advantage": d,
            "se": float("nan"),
            "df": float("nan"),
            "p": float("nan"),
            "ci95": [float("nan"), float("nan")],
        }
    a, b = pc["std"] ** 2 / n1, bp["std"] ** 2 / n2
    se = math.sqrt(a + b)
    if se == 0.0:  # both sides constant: the difference is exact
        p = 0.0 if d != 0 else 1.0
        return {"advantage": d, "se": 0.0, "df": float("inf"), "p": p, "ci95": [d, d]}
    df = (a + b) ** 2 / ((a * a / (n1 - 1) if a else 0.0) + (b * b / (n2 - 1) if b else 0.0))
    p = 2.0 * _t_sf(abs(d) / se, df)
    half = _t_quantile(0.975, df) * se
    return {"advantage": d, "se": se, "df": df, "p": min(p, 1.0), "ci95": [d - half, d + half]}


def decide(
    pc: dict, bp: dict, order: str, *, lower_is_better: bool, margin: float = 0.0, paper: dict | None = None
) -> dict[str, Any]:
    """The verdict of one PC rule against backprop (see the module docstring), with the
    test's numbers: ``advantage``, ``se``, ``df``, ``p`` (the p-value of the test that
    decides), ``ci95`` and ``paper_in_ci95``."""
    if order not in ORDERS:
        raise OptionError(f"order must be one of {ORDERS}, got {order!r}")
    if order in ("tie", "bp<=pc") and not margin > 0:
        raise OptionError(f"a '{order}' claim needs a margin > 0 fixed before the run")
    w = welch(pc, bp, lower_is_better)
    d, se, df = w["advantage"], w["se"], w["df"]
    testable = math.isfinite(se)
    if order in ("pc<bp", "pc>bp"):
        toward = d if order == "pc<bp" else -d
        p = w["p"]
        right_sign = toward > 0
        passed = testable and right_sign and p < ALPHA
    elif order == "tie":
        if not testable:
            p = float("nan")
        elif se == 0.0:
            p = 0.0 if abs(d) < margin else 1.0
        else:
            p = max(_t_sf((d + margin) / se, df), _t_sf((margin - d) / se, df))
        right_sign = abs(d) < margin
        passed = testable and p < ALPHA
    else:  # bp<=pc: PC is not better by the margin
        if not testable:
            p = float("nan")
        elif se == 0.0:
            p = 0.0 if d < margin else 1.0
        else:
            p = _t_sf((margin - d) / se, df)
        right_sign = d < margin
        passed = testable and p < ALPHA
    verdict = REPRODUCED if passed else DIRECTION_ONLY if right_sign else NOT_REPRODUCED
    in_ci = None
    if paper and paper.get("pc") is not None and paper.get("bp") is not None and testable:
        sign = 1.0 if lower_is_better else -1.0
        paper_d = sign * (paper["bp"] - paper["pc"])
        in_ci = bool(w["ci95"][0] <= paper_d <= w["ci95"][1])
    return {
        "verdict": verdict,
        "advantage": d,
        "se": se,
        "df": df,
        "p": p,
        "ci95": w["ci95"],
        "paper_in_ci95": in_ci,
        "margin": margin,
    }


def holds_for(spc: str | None, epc: str | None) -> str:
    """Whom a claim holds for, from the two verdicts: the theory's PC (the exact equilibrium,
    ePC), the papers' simulation of it (sPC at the paper's T), both or neither."""
    s, e = spc == REPRODUCED, epc == REPRODUCED
    if epc is None:
        return "simulation (no equilibrium run)" if s else "neither (no equilibrium run)"
    return {
        (True, True): "both",
        (False, True): "theory only",
        (True, False): "simulation only",
        (False, False): "neither",
    }[(s, e)]
