"""PNG plots of a run (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vrscale.sampler import ProcessSampler

XY = tuple[Sequence[float], Sequence[float]]


def lines(
    path: Path,
    title: str,
    series: Mapping[str, XY],
    *,
    xlabel: str,
    ylabel: str,
    hlines: Mapping[str, float] | None = None,
    step: bool = False,
) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, (x, y) in series.items():
        if step:
            ax.step(x, y, where="post", label=label)
        else:
            ax.plot(x, y, label=label, marker="o" if len(x) <= 12 else None)
    for name, level in (hlines or {}).items():
        ax.axhline(level, linestyle="--", color="grey", linewidth=1)
        ax.annotate(name, (0, level), xycoords=("axes fraction", "data"), fontsize=8, va="bottom")
    _finish(fig, ax, title, xlabel, ylabel, legend=bool(series))
    return _save(fig, path)


def bars(
    path: Path,
    title: str,
    values: Mapping[str, float],
    *,
    ylabel: str,
    hline: tuple[str, float] | None = None,
) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(values)
    heights = [values[n] for n in names]
    rects = ax.bar(names, heights, color="#4c72b0")
    ax.bar_label(rects, labels=[f"{h:.3g}" for h in heights], fontsize=8)
    if hline is not None:
        ax.axhline(hline[1], linestyle="--", color="red", linewidth=1, label=hline[0])
    _finish(fig, ax, title, "", ylabel, legend=hline is not None)
    return _save(fig, path)


def latency_cdf(
    path: Path, title: str, samples: Mapping[str, Sequence[float]], *, unit: str = "s"
) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, values in samples.items():
        if not values:
            continue
        xs = sorted(values)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
    ax.axhline(0.99, linestyle=":", color="grey", linewidth=1)
    _finish(fig, ax, title, f"latency ({unit})", "fraction ≤ x", legend=True)
    return _save(fig, path)


def processes(out_dir: Path, sampler: ProcessSampler, prefix: str = "") -> list[Path]:
    """RSS and CPU over time, one line per process label (Ray base summed)."""
    made = []
    for metric, ylabel, name in (
        ("rss_mb", "RSS (MiB)", "memory"),
        ("cpu_pct", "CPU (% of one core)", "cpu"),
    ):
        series: dict[str, XY] = {}
        for label, s in sorted(sampler.series.items()):
            if s.role == "simulator" and metric == "cpu_pct" and not any(s.cpu_pct):
                continue
            series[label] = (s.t, getattr(s, metric))
        if series:
            made.append(
                lines(
                    out_dir / f"{prefix}processes_{name}.png",
                    f"{name} per process",
                    series,
                    xlabel="seconds since the run started",
                    ylabel=ylabel,
                )
            )
    return made


def _finish(fig: Figure, ax: Axes, title: str, xlabel: str, ylabel: str, *, legend: bool) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="best", ncol=2)
    fig.tight_layout()


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
