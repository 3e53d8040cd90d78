"""The sweep's ``chart.png``: bandwidth and mean latency against iodepth, with 95 % intervals.

Two panels side by side, one line per policy x guest kernel (colour: policy, line style: kernel),
each point the mean over its finished seeds with an error bar spanning its Student-t 95 %
confidence interval (``_sweep_report.point_stats``; one seed draws no bar).  A policy that falls
back says so in its legend label ("lazy -> strict (no deferred flush), guest 6.7"), since its line
lies on the strict one (it is drawn with hollow markers on top).  The title names the job and machine (``_sweep_report.job_title``).
The PNG carries no software or date metadata, so equal sweeps write equal files.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._sweep_report import job_title, point_policies, point_stats

if TYPE_CHECKING:
    from ._sweep import Matrix, Point

#: the panels: (figure path in a run's summary, y-axis label)
PANELS = (("bandwidth_mib_s", "bandwidth (MiB/s)"), ("latency_us.mean", "mean latency (us)"))


def render_chart(matrix: Matrix, pts: Sequence[Point], done: Mapping[str, dict[str, Any]]) -> bytes | None:
    """The PNG's bytes, or None when matplotlib (the plot extra) is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    policies = point_policies(matrix)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(12, 4.8), dpi=100)
    try:
        for ax, (path, ylabel) in zip(axes, PANELS):
            for (i, policy), (j, kernel) in itertools.product(enumerate(matrix.policy),
                                                              enumerate(matrix.guest_kernel)):
                xs, ys, below, above = [], [], [], []
                for depth in matrix.iodepth:
                    stats = point_stats(pts, done, policy, kernel, depth, path)
                    if stats is not None:
                        mean, _, lo, hi, _ = stats
                        xs.append(depth)
                        ys.append(mean)
                        below.append(mean - lo)
                        above.append(hi - mean)
                _, fallback = policies[policy, kernel]
                shown = f"{policy} -> strict (no deferred flush)" if fallback else policy
                # a fallback's line lies on strict's: hollow, larger markers drawn on top keep it in sight
                marks: dict[str, Any] = {"markersize": 10, "markerfacecolor": "none", "zorder": 3} if fallback else {}
                ax.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, color=f"C{i % 10}",
                            linestyle=("-", "--", ":", "-.")[j % 4], label=f"{shown}, guest {kernel}", **marks)
            if len(matrix.iodepth) > 1:
                ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(matrix.iodepth), [str(d) for d in sorted(matrix.iodepth)])
            ax.set_xlabel("iodepth")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize="small")
        seeds = len(matrix.seed)
        interval = "mean and 95 % CI (Student t)" if seeds > 1 else "one seed: no interval"
        fig.suptitle(f"{job_title(done, pts)}\n{interval} over {seeds} seed(s)", fontsize="medium")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buf.getvalue()
