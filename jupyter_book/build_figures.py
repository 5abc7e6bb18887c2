"""Compute the freeze-depth grid that stands in for the live K slider in the built book.

Run by build.sh before `jupyter-book build`, at the book's profile ($MINIGPT_PROFILE). It calls
minigpt.studies.freeze_sweep.saved_or_run (the committed sweep, or one trained and cached here) and
writes into jupyter_book/_generated/ (not committed):

  freeze_grid_N.png  one column per K (4 per image): the cut, mixed losses, own-domain gains,
                     routing accuracy; freeze_grid.md holds their figure directives
  freeze_trend.png   the same numbers as lines over K, with the "nothing frozen" point (none) left of K = 0
  freeze_table.md    the numbers as a table (a "none" row first) plus a few sentences computed from
                     them, included by freeze_depth.md

The grid draws the K points only: the "none" point has no trunk/crown cut to draw.

Nothing on the page is typed in by hand, so the page changes with the profile and the seed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display during a build
import matplotlib.pyplot as plt  # noqa: E402

from minigpt.analysis.crowns import param_counts  # noqa: E402
from minigpt.experiment import Experiment  # noqa: E402
from minigpt.plots import plot_freeze_grid, plot_freeze_sweep  # noqa: E402
from minigpt.studies.freeze_sweep import saved_or_run, sweep_frame  # noqa: E402

HERE = Path(__file__).resolve().parent
COLS = 4


def _table(frame) -> str:
    # the losses themselves are in the grid; the table keeps the derived numbers, narrow enough for a page
    cols = [("trainable params", "trained per crown", "{:,.0f}"),
            ("divergence %", "divergence %", "{:+.2f}"),
            ("fused vs best specialist %", "fused vs best specialist %", "{:+.2f}"),
            ("fused vs base %", "fused vs base %", "{:+.2f}"),
            ("oracle gap", "oracle gap (nats)", "{:.4f}"),
            ("routing accuracy", "routing accuracy", "{:.0%}"),
            ("crown CKA", "crown CKA", "{:.3f}")]
    head = "| K | " + " | ".join(label for _, label, _ in cols) + " |"
    rule = "|---|" + "---:|" * len(cols)
    body = ["| " + str(k) + " | " + " | ".join(fmt.format(row[c]) for c, _, fmt in cols) + " |"
            for k, row in frame.iterrows()]
    return "\n".join([head, rule, *body])


def _grid(rep: dict, exp, out: Path) -> None:
    """The freeze grid images (K points only) and freeze_grid.md with their figure directives."""
    n_layer = exp.profile.model.n_layer
    base = exp.base()
    ks = [str(K) for K in sorted(rep["ks"])]  # the "none" point has no cut to draw
    counts = {int(K): param_counts(base, int(K)) for K in ks}
    # at most COLS depths per image: a page is ~800 px wide, and the gpu profile has 8 depths
    figures = []
    for i in range(0, len(ks), COLS):
        part = ks[i:i + COLS]
        fig = plot_freeze_grid(rep, n_layer, counts_by_k=counts, k_profile=exp.k, ks=part)
        name = f"freeze_grid_{i // COLS + 1}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        figures += [f"```{{figure}} _generated/{name}",
                    f":name: fig-freeze-grid-{i // COLS + 1}",
                    f":alt: Freeze depths K = {part[0]} to {part[-1]}: the cut, mixed losses, own-domain gains "
                    "and routing accuracy per domain",
                    "",
                    f"Freeze depths K = {part[0]}–{part[-1]} at profile `{rep['profile']}`, seed {rep['seed']}.",
                    "```", ""]
    # figure paths are relative to the page that includes this file (freeze_depth.md)
    (out / "freeze_grid.md").write_text("\n".join(figures))


def _sentences(rep: dict, frame, full, k_profile: int) -> list[str]:
    """The page's table and sentences, every number from the report."""
    fit, best = rep["fit"], int(rep["best_k_by_fused_gain"])
    gains = frame["fused vs best specialist %"]
    lines = [
        f"Computed while this book was built: profile `{rep['profile']}`, seed {rep['seed']}, "
        f"K = {', '.join(str(int(k)) for k in frame.index)} (the profile itself uses K = {k_profile}).",
        "",
        _table(full),
        "",
        f"- Fusion gain over the best specialist is largest at **K = {best}** "
        f"({gains.loc[best]:+.2f}%) and smallest at K = {int(gains.idxmin())} ({gains.min():+.2f}%); "
        f"the fused mixed loss is lowest at K = {int(rep['best_k_by_fused_mixed'])}.",
        f"- Trained parameters per crown fall from {frame['trainable params'].max():,.0f} to "
        f"{frame['trainable params'].min():,.0f} as K grows; divergence (mean own-domain gain over the base) "
        f"goes from {frame['divergence %'].iloc[0]:+.2f}% at K = {int(frame.index[0])} to "
        f"{frame['divergence %'].iloc[-1]:+.2f}% at K = {int(frame.index[-1])}.",
    ]
    if "none" in rep["per_k"]:
        nz = rep["per_k"]["none"]
        lines.append(f"- Nothing frozen (row none: embeddings trained, heads untied, no shared trunk): fused gain over "
                     f"the best specialist {nz['fused_gain_vs_best_specialist_%']:+.2f}%, fused mixed loss "
                     f"{'below' if rep['none_fused_mixed_beats_every_k'] else 'not below'} every K's "
                     f"({rep['none_minus_best_k_fused_mixed']:+.4f} nats against the best K); the compatibility "
                     f"check {'refuses' if nz['compat_refusal'] else 'accepts'} these specialists.")
    if fit.get("slope") is not None:
        r2 = "n/a" if fit.get("r2") is None else f"{fit['r2']:.2f}"
        lines.append(f"- A straight line through {fit['n']} (divergence, gain) points of this profile "
                     f"(this sweep plus other seeds' sweeps and Break 1's controls found on disk): "
                     f"gain = {fit['slope']:.3f} × divergence {fit['intercept']:+.3f}, R² {r2}. "
                     f"Against KALAVAI's published line (gain = 0.82 × divergence − 2.72) the measured gains differ by "
                     f"{fit['kalavai'].get('mean_residual', float('nan')):+.2f} points on average "
                     f"(measured − predicted).")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "_generated")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    exp = Experiment(seed=args.seed)  # the profile comes from $MINIGPT_PROFILE (minigpt.config)
    rep = saved_or_run(exp)
    _grid(rep, exp, args.out)
    frame, full = sweep_frame(rep), sweep_frame(rep, with_none=True)  # K points; with the "none" row first
    fig = plot_freeze_sweep(full, k_profile=exp.k, mark=int(rep["best_k_by_fused_gain"]))
    fig.savefig(args.out / "freeze_trend.png", dpi=110)
    plt.close(fig)
    (args.out / "freeze_table.md").write_text("\n".join(_sentences(rep, frame, full, exp.k)) + "\n")
    print(f"freeze-depth figures for profile {rep['profile']} in {args.out} ({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
