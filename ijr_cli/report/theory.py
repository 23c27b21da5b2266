"""The synthetic theory figures of paper 000 (drawn only with `ijr-report --theory`: they show no run's data).

- Fig. 1: the secular function 1 − Σ p_i²/(p_i − λ) of a probability vector, its poles p_i and its roots (the
  eigenvalues of M = diag(p) − ppᵀ, Theorem 1);
- Fig. 2 (left): λ(1) against p(1) for random probability vectors, with Theorem 1's bounds
  ½·Gini(p(1)) ≤ λ(1) ≤ Gini(p(1)), Gini(q) = 2q(1 − q), and λ(1) ≤ p(1).

The run-based Fig. 2 (a run's own examples) is in `ijr_cli.report.paper_figures`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ijr_cli.report.figures import Figure, _plt, _save


def impurity_eigenvalues(p: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of M = diag(p) − ppᵀ for each probability vector in the rows of `p` (float64)."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    m = np.einsum("ni,ij->nij", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :]
    return np.linalg.eigvalsh(m)


def secular(lam: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The secular function f(λ) = 1 − Σ_i p_i²/(p_i − λ), whose roots are M's nonzero eigenvalues (Theorem 1)."""
    return 1 - np.sum(p[None, :] ** 2 / (p[None, :] - lam[:, None]), axis=1)


def theorem1_bounds(ax, q: np.ndarray, labels=("Gini(p(1)) (upper bound)", "½·Gini(p(1)) (lower bound)")) -> None:
    """Theorem 1's curves against the top probability q: Gini(q) = 2q(1 − q), ½·Gini(q) and q (λ(1) ≤ p(1))."""
    gini = 2 * q * (1 - q)
    ax.plot(q, gini, color="C3", label=labels[0])
    ax.plot(q, gini / 2, color="C2", label=labels[1])
    ax.plot(q, q, color="0.4", linestyle=":", label="p(1)")
    ax.set_ylim(0, 0.55)


def paper000_fig1(out_dir: Path, p: Sequence[float] = (0.45, 0.3, 0.15, 0.07, 0.03)) -> Figure:
    plt, sns = _plt()
    p = np.sort(np.asarray(p, dtype=np.float64))[::-1]
    roots = impurity_eigenvalues(p)[0]
    lam = np.linspace(-0.05, p[0] + 0.1, 6000)
    f = secular(lam, p)
    near_pole = np.min(np.abs(lam[:, None] - p[None, :]), axis=1) < 2e-3
    f[near_pole] = np.nan
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(lam, f, color="C0", linewidth=1.3, label="f(λ) = 1 − Σ p_i²/(p_i − λ)")
    for i, pi in enumerate(p):
        ax.axvline(pi, color="0.5", linestyle="--", linewidth=0.8, label="poles p_i" if i == 0 else None)
    ax.axhline(0, color="k", linewidth=0.6)
    ax.plot(roots, np.zeros_like(roots), "o", color="C3", label="roots: eigenvalues of diag(p) − ppᵀ")
    ax.set_ylim(-6, 6)
    ax.set_xlabel("λ")
    ax.set_title(f"Secular function for p = {tuple(round(float(x), 3) for x in p)}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(
        fig,
        out_dir,
        "paper000_fig1_secular",
        "Paper 000 Fig. 1: the secular function",
        "The eigenvalues of M = diag(p) − ppᵀ interlace the sorted p_i (poles): one root in each interval "
        f"(p(i+1), p(i)) and λ(C) = 0. Here λ(1) = {roots[-1]:.4f} ∈ [p(2), p(1)] = [{p[1]}, {p[0]}].",
    )


def paper000_fig2(out_dir: Path, num_classes: int = 10, n: int = 4000, seed: int = 0) -> Figure:
    plt, sns = _plt()
    rng = np.random.default_rng(seed)
    concentrations = rng.choice([0.05, 0.2, 1.0], size=n)
    p = np.stack([rng.dirichlet(np.full(num_classes, a)) for a in concentrations])
    lam1 = impurity_eigenvalues(p)[:, -1]
    p1 = p.max(axis=1)
    q = np.linspace(1 / num_classes, 1, 300)
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    ax.scatter(p1, lam1, s=3, alpha=0.35, color="C0", label=f"λ(1) of random p (C = {num_classes})")
    theorem1_bounds(ax, q, ("Gini(p(1)) = 2p(1)(1 − p(1))", "½·Gini(p(1))"))
    ax.set_xlabel("p(1), the top probability")
    ax.set_ylabel("λ(1), the impurity")
    ax.legend(fontsize=7)
    ax.set_title("Impurity against the top probability (Theorem 1 bounds)", fontsize=10)
    fig.tight_layout()
    return _save(
        fig,
        out_dir,
        "paper000_fig2_impurity_bounds",
        "Paper 000 Fig. 2 (left): impurity and its bounds",
        "Every point lies between ½·Gini(p(1)) and min(Gini(p(1)), p(1)) (Theorem 1); λ(1) → 0 as p(1) → 1.",
    )
