"""Checks of a claim for the setting in force: passed, failed, or not applicable (with the reason).

A sweep states each claim for whatever model and supervisor it runs on. Where the theory does not
cover the setting (e.g. a bound that needs ``Sigma = I``), or predicts nothing at the chosen sizes,
the check is recorded as not applicable (``passed = None``) with the reason, never as a pass.
Predictions come from closed forms evaluated at the setting (:func:`refined_risk_upper`).
"""

from __future__ import annotations

import numpy as np

from theory import closed_form as cf
from theory.model import Problem

__all__ = ["Z_TOL", "check", "not_applicable", "isotropic", "refined_risk_upper", "status"]

Z_TOL = 4.0  # a Monte Carlo mean may sit this many standard errors on the wrong side of a bound


def check(claim: str, passed, detail: str) -> dict:
    return {"claim": claim, "passed": bool(passed), "detail": detail}


def not_applicable(claim: str, reason: str) -> dict:
    return {"claim": claim, "passed": None, "detail": f"not applicable here: {reason}"}


def status(c: dict) -> str:
    """PASS, FAIL or N/A."""
    return "N/A" if c["passed"] is None else ("PASS" if c["passed"] else "FAIL")


def isotropic(p: Problem) -> bool:
    """Whether ``Sigma = I`` (the segment bound and the bound of eq. T.15 need it)."""
    Sigma = np.asarray(p.Sigma_DxD)
    return bool(np.array_equal(Sigma, np.eye(Sigma.shape[-1])))


def refined_risk_upper(p: Problem, E_pi_K, cov_pi_KxK, n: int) -> float:
    """Predicted expected risk of least squares on ``n`` refined labels, rounded up for the error of
    the approximation: ``R(B^T E pi) + (1 + d/n) tr(B Sigma B^T Cov pi) (d + 2) / (n - d - 1)``.

    The first term is eq. T.15; the second is the leading-order variance of least squares under the
    refined labels' noise ``(w - E w)^T B x`` (``docs/theory.md`` §3), whose relative error is O(d/n),
    covered by the factor ``1 + d/n``. Returns inf for ``n < 2d``, where that error is not small.
    """
    d = p.beta_P.shape[-1]
    if n < 2 * d:
        return float("inf")
    B, Sigma = np.asarray(p.B_KxD), np.asarray(p.Sigma_DxD)
    pop = float(cf.refine_population(p, E_pi_K))
    return pop + (1 + d / n) * float(np.trace(B @ Sigma @ B.T @ np.asarray(cov_pi_KxK))) * (d + 2) / (n - d - 1)
