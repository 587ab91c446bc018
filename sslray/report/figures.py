"""The search report's figures, as PNG files (matplotlib, Agg: no display needed).

Learning curves (score against epoch, coloured by outcome), Optuna's own importance plot, and the
collapse map: every trial placed by its searched values, its marker saying how it ended and its
colour its best score, beside each parameter against the trial's final RankMe.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

# colour and marker per outcome; collapsed and diverged stand out (red X, black triangle)
STYLE = {"finished": ("tab:green", "o"), "asha": ("tab:blue", "s"), "collapsed": ("tab:red", "X"),
         "diverged": ("black", "^"), "failed": ("tab:purple", "v"), "running": ("tab:orange", "D"),
         "interrupted": ("tab:brown", "P"),
         "unknown": ("tab:gray", "*")}
DPI = 110


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _style(outcome: str) -> tuple[str, str]:
    return STYLE.get(outcome, STYLE["unknown"])


def learning_curves(trials, metric: str, rungs: list[int], path: Path, what: str = "ASHA rungs") -> Path:
    """Every trial's score against epoch, one colour per outcome; the scheduler's milestones (``what``:
    ASHA's rungs, PBT's perturbations) as dotted lines."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    seen = set()
    for t in trials:
        if not t.curve:
            continue
        colour, marker = _style(t.outcome)
        x, y = zip(*t.curve)
        ax.plot(x, y, color=colour, marker=marker, markersize=4, alpha=0.8, lw=1.3,
                label=t.outcome if t.outcome not in seen else None)
        seen.add(t.outcome)
    for r in rungs:
        ax.axvline(r, color="gray", ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch of every trial" + (f" (dotted: {what} {', '.join(map(str, rungs))})"
                                                         if rungs else ""), fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if seen:
        ax.legend(title="outcome", fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, path)


def importance_plot(study, evaluator_name: str, title: str, metric: str, path: Path) -> Path:
    """optuna.visualization.matplotlib.plot_param_importances of a study."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
    from optuna.visualization.matplotlib import plot_param_importances

    from sslray.report.importance import quiet

    evaluator = PedAnovaImportanceEvaluator() if evaluator_name == "PED-ANOVA" else FanovaImportanceEvaluator(seed=0)
    with quiet(), plt.rc_context():  # Optuna switches the global style to ggplot: only for this figure
        ax = plot_param_importances(study, evaluator=evaluator, target_name=metric)
        fig = ax.figure
        fig.set_size_inches(7, 0.6 * len(ax.patches) + 1.8)
        ax.set_title(f"{title} ({evaluator_name})", loc="left", fontsize=10)
        return save(fig, path)


class Axis:
    """How one searched parameter is drawn: log, linear or categorical (positions 0..k-1)."""

    def __init__(self, spec: dict[str, Any]):
        self.path, self.dist = spec["path"], spec["dist"]
        self.categories = [str(v) for v in spec.get("values") or []] if self.dist == "choice" else []
        self.low, self.high = spec.get("low"), spec.get("high")

    def positions(self, values: list[Any], seed: int = 0) -> np.ndarray:
        if not self.categories:
            return np.array([float(v) if v is not None else np.nan for v in values])
        jitter = np.random.default_rng(seed).uniform(-0.12, 0.12, len(values))  # separate equal categories
        idx = [self.categories.index(str(v)) if str(v) in self.categories else np.nan for v in values]
        return np.array(idx, dtype=float) + jitter

    def apply(self, ax, which: str) -> None:
        set_label, set_scale, set_ticks, set_lim = ((ax.set_xlabel, ax.set_xscale, ax.set_xticks, ax.set_xlim)
                                                    if which == "x" else
                                                    (ax.set_ylabel, ax.set_yscale, ax.set_yticks, ax.set_ylim))
        set_label(self.path + (" (log)" if self.dist == "loguniform" else ""))
        if self.categories:
            set_ticks(range(len(self.categories)), self.categories)
            set_lim(-0.5, len(self.categories) - 0.5)
        elif self.dist == "loguniform":
            set_scale("log")
            set_lim(self.low / 1.3, self.high * 1.3)
            from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

            axis = ax.xaxis if which == "x" else ax.yaxis
            # a range under a decade gets minor-tick labels that overlap: label the decades, plus
            # the range's ends
            axis.set_minor_formatter(NullFormatter())
            axis.set_major_formatter(LogFormatterSciNotation())
            if self.high / self.low < 100:
                set_ticks([self.low, self.high], [f"{self.low:g}", f"{self.high:g}"], minor=True)
        elif self.low is not None:
            pad = (self.high - self.low) * 0.05
            set_lim(self.low - pad, self.high + pad)


def _scatter_outcomes(ax, trials, x, y, colour_values, norm, cmap) -> None:
    """One scatter per outcome (its marker); fill = best score; collapsed/diverged get a red edge."""
    for outcome in STYLE:
        idx = [i for i, t in enumerate(trials) if t.outcome == outcome]
        if not idx:
            continue
        _, marker = _style(outcome)
        c = [colour_values[i] for i in idx]
        edge = "red" if outcome in ("collapsed", "diverged") else "black"
        scored = [i for i, v in zip(idx, c) if v is not None and math.isfinite(v)]
        unscored = [i for i, v in zip(idx, c) if v is None or not math.isfinite(v)]
        kw = dict(marker=marker, s=90, edgecolors=edge, linewidths=1.8 if edge == "red" else 0.6, label=outcome)
        if scored:
            ax.scatter(x[scored], y[scored], c=[colour_values[i] for i in scored], cmap=cmap, norm=norm, **kw)
            kw["label"] = None
        if unscored:  # no score at all (diverged in its first epoch, failed): grey
            ax.scatter(x[unscored], y[unscored], c="lightgray", **kw)


def collapse_map(trials, specs: list[dict[str, Any]], metric: str, path: Path) -> Path:
    """Each pair of searched parameters (or the one parameter against the best score): where every
    trial sat, how it ended (marker) and how good it got (colour)."""
    best = [t.best for t in trials]
    finite = [v for v in best if v is not None and math.isfinite(v)]
    norm = matplotlib.colors.Normalize(min(finite), max(finite)) if finite else None
    cmap = plt.get_cmap("viridis")
    axes_specs = [Axis(s) for s in specs]
    if len(axes_specs) == 1:
        pairs = [(axes_specs[0], None)]
    else:
        pairs = list(itertools.combinations(axes_specs, 2))
    cols = min(3, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig, axs = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for k, (a, b) in enumerate(pairs):
        ax = axs[k // cols][k % cols]
        x = a.positions([t.params.get(a.path) for t in trials], seed=k)
        if b is None:  # one parameter: against the best score; trials without one on a line below the rest
            y = np.array([v if v is not None else np.nan for v in best], dtype=float)
            if np.isnan(y).any():
                lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
                floor = lo - 0.1 * ((hi - lo) or 1.0)
                y[np.isnan(y)] = floor
                ax.axhline(floor, color="gray", ls=":", lw=1)
                ax.annotate("no score", (0.01, floor), xycoords=("axes fraction", "data"), va="bottom", fontsize=8,
                            color="gray")
            ax.set_ylabel(f"best {metric}")
        else:
            y = b.positions([t.params.get(b.path) for t in trials], seed=k + 100)
            b.apply(ax, "y")
        a.apply(ax, "x")
        _scatter_outcomes(ax, trials, x, y, best, norm, cmap)
        ax.grid(alpha=0.3)
    for k in range(len(pairs), rows * cols):
        axs[k // cols][k % cols].axis("off")
    handles = [matplotlib.lines.Line2D([], [], ls="", marker=_style(o)[1], color="gray", markersize=8,
                                       markeredgecolor="red" if o in ("collapsed", "diverged") else "black", label=o)
               for o in STYLE if any(t.outcome == o for t in trials)]
    fig.legend(handles=handles, title="outcome", fontsize=8, ncol=len(handles), loc="upper center",
               bbox_to_anchor=(0.5, 0.0))
    if norm is not None:
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axs, label=f"best {metric}", shrink=0.8)
    fig.suptitle("Collapse map: marker = outcome, colour = best score (grey: none)", fontsize=10)
    return save(fig, path)


def rankme_panels(trials, specs: list[dict[str, Any]], rankme_below: float | None, path: Path) -> Path:
    """Each searched parameter against the trial's final RankMe (effective rank of the embeddings;
    low = collapsed), marker by outcome; the search's collapse threshold as a red line."""
    n = len(specs)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axs = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    rank = np.array([t.rankme if t.rankme is not None else np.nan for t in trials], dtype=float)
    for k, spec in enumerate(specs):
        ax, a = axs[k // cols][k % cols], Axis(spec)
        x = a.positions([t.params.get(a.path) for t in trials], seed=k)
        for outcome in STYLE:
            idx = [i for i, t in enumerate(trials) if t.outcome == outcome]
            if idx:
                colour, marker = _style(outcome)
                ax.scatter(x[idx], rank[idx], c=colour, marker=marker, s=60, label=outcome, edgecolors="black",
                           linewidths=0.5)
        if rankme_below is not None:
            ax.axhline(rankme_below, color="red", ls="--", lw=1, label=f"collapse below {rankme_below:g}")
        a.apply(ax, "x")
        ax.set_ylabel("final RankMe")
        ax.grid(alpha=0.3)
        if k == 0:
            fig.legend(fontsize=8, ncol=7, loc="upper center", bbox_to_anchor=(0.5, -0.02))
    for k in range(n, rows * cols):
        axs[k // cols][k % cols].axis("off")
    fig.suptitle("Final RankMe of every trial (low = collapsed embeddings)", fontsize=10)
    return save(fig, path)


def compare_scores(arms: list[dict[str, Any]], metrics: list[str], path: Path) -> Path:
    """Every seed's final score per arm (dots) with the arm's mean and 95 % interval (bar)."""
    fig, axs = plt.subplots(1, len(metrics), figsize=(max(4.0, 1.6 * len(arms) + 2) * len(metrics), 4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, metric in zip(axs[0], metrics):
        for i, arm in enumerate(arms):
            ys = [f[metric] for f in arm.get("finals", []) if f.get(metric) is not None]
            ax.scatter(i + rng.uniform(-0.08, 0.08, len(ys)), ys, color="tab:blue", alpha=0.7, s=30,
                       label="seed" if i == 0 else None)
            s = (arm.get("summary") or {}).get(metric)
            if s and s.get("mean") is not None:
                lo, hi = s.get("ci_low", s["mean"]), s.get("ci_high", s["mean"])
                ax.errorbar(i + 0.25, s["mean"], yerr=[[s["mean"] - lo], [hi - s["mean"]]], fmt="D", color="black",
                            capsize=5, label="mean, 95 % interval" if i == 0 else None)
        ax.set_xticks(range(len(arms)), [a["name"] for a in arms])
        ax.set_xlim(-0.5, len(arms) - 0.5)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.suptitle("Final score of every seed per arm", fontsize=10)
    return save(fig, path)
