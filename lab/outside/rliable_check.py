"""rliable's statistics on the project's kept scores, beside the project's own (lab/stats.py).

An outside check of the statistics the results document reports: rliable (Agarwal et al. 2021, "Deep RL
at the edge of the statistical precipice") computes the mean, the IQM and the probability of
improvement, with its stratified bootstrap intervals, from the same committed scores (lab/scores/*.npz)
as a matrix of meta-training seeds x held-out tasks, each cell the mean AUC over the evaluation seeds.
Not part of the product and never run by CI. From the repository's root:

    python -m venv .venv-rliable && .venv-rliable/bin/pip install -r lab/outside/requirements-rliable.txt
    .venv-rliable/bin/python -m lab.outside.rliable_check                # every kept row
    .venv-rliable/bin/python -m lab.outside.rliable_check fourrooms      # some

The point estimates must agree to 1e-9; the intervals, drawn from other random numbers, within Monte
Carlo error (both draw lab.stats.REPS replications). rliable's probability of improvement is unpaired, per
task; the project computes that definition for this comparison (stats.improvement), and reports its own
paired one beside it.
"""
import argparse
import glob
import os

import numpy as np
from rliable import library, metrics

from lab import report, stats, store

POINT = 1e-9
EDGE = 0.01      # an interval's edges: the Monte Carlo error of 5,000 replications is a few thousandths here


def matrix(score, key):
    """(seeds, tasks) of the mean AUC over evaluation seeds, from a row's (seeds, eval seeds, tasks, iterations)."""
    return score[key].mean(axis=-1).mean(axis=1)


def check(name):
    """rliable's numbers and the project's for one kept row: [(method, statistic, rliable's, the project's)]."""
    meta, score, _ = report.read(name)
    ours = report.row_stats(meta, score)
    keys = report.method_keys(meta, score)
    np.random.seed(0)                               # rliable's bootstrap draws from numpy's global generator
    rows = []
    for m, key in keys.items():
        x = matrix(score, key)
        for stat, func, mine in [("mean", metrics.aggregate_mean, ours["methods"][m]["boot_mean"]),
                                 ("IQM", metrics.aggregate_iqm, ours["methods"][m]["iqm"])]:
            point, ci = library.get_interval_estimates({m: x}, lambda s: np.array([func(s)]), reps=stats.REPS)
            rows.append((m, stat, (float(point[m][0]), [float(ci[m][0, 0]), float(ci[m][1, 0])]), mine))
    for m, v in ours["vs_flat"].items():
        pair = [matrix(score, keys[m]), matrix(score, keys["flat"])]
        point, ci = library.get_interval_estimates({m: pair}, lambda x, y: np.array(
            [metrics.probability_of_improvement(x, y)]), reps=stats.REPS)
        rows.append((m, "P(improvement over flat PPO)", (float(point[m][0]), [float(ci[m][0, 0]),
                                                                                float(ci[m][1, 0])]), v["p_rliable"]))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab.outside.rliable_check", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="kept rows (lab/scores/NAME.npz); default: every one")
    names = p.parse_args(argv).names or sorted(os.path.basename(f)[:-4] for f in glob.glob(os.path.join(report.SCORES,
                                                                                                          "*.npz")))
    lines = ["| row | method | statistic | rliable | the project | point: same to 1e-9 | edges within 0.01 |",
             "|" + " --- |" * 7]
    bad = 0
    for name in names:
        for m, stat, theirs, mine in check(name):
            same = abs(theirs[0] - mine[0]) <= POINT
            near = max(abs(a - b) for a, b in zip(theirs[1], mine[1])) <= EDGE
            bad += not (same and near)
            lines.append(f"| {name} | {m} | {stat} | {report.plain(theirs)} | {report.plain(mine)} | "
                         f"{'yes' if same else 'NO'} | {'yes' if near else 'NO'} |")
    text = "\n".join(lines) + f"\n\n{'every number agrees' if not bad else f'{bad} disagree'}\n"
    out = os.path.join(store.ROOT, "runs", "outside", "rliable.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    store.write_text(out, text)
    print(text + f"(also in {out})")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
