"""The results document's tables, made from the scores every row keeps, and nothing else.

Every row of lab/RESULTS.md keeps every learner's scores in lab/scores/NAME.npz (a sweep's scores.npz,
committed), so any statistic can be computed again without training:

    python -m lab.report                          # remake every marked table of lab/RESULTS.md and README.md
    python -m lab.report --check                  # which tables differ from what their scores give (exit 1)
    python -m lab.report --add NAME runs/sweep-X  # commit a finished sweep's scores as the row NAME
    python -m lab.report --show NAME              # one row's table, printed

A table in the document sits between `<!-- table NAME -->` and `<!-- end -->`: the statistics of
`stats.py` for each method (the verdict against flat PPO paired over meta-training seeds). A rate table,
`<!-- rates NAME NAME ... -->`, gives flat PPO's AUC at each rate of each validation row, and the best. The verdict,
`<!-- verdict NAME NAME ... -->`, gives a line per row.
"""
import argparse
import functools
import json
import os
import re
import shutil
import sys

import numpy as np

from lab import stats, store
from lab.settings import METHODS

SCORES = os.path.join(store.ROOT, "lab", "scores")
DOCUMENTS = [os.path.join(store.ROOT, "lab", "RESULTS.md"), os.path.join(store.ROOT, "README.md")]
MASTERS = ("mlsh", "mlsh_options")
COMPARED = ("mlsh", "mlsh_options", "shared", "random_subs")      # each against flat PPO
# rows whose seeds split into two kinds, by a per-seed measure: the bandit skills split (the best sub-policy
# alone succeeds 0.9 of the time or more) or not. Their word is a description (stats.split), not a test
SPLITS = {"bandits": ("best_alone", 0.9)}


def split_of(name):
    """(measure, threshold) where the row `name` is one of SPLITS' families (bandits, bandits-w9u1), else None."""
    return next((v for k, v in SPLITS.items() if name == k or name.startswith(k + "-")), None)


class BadInput(Exception):
    """Input the report refuses: one line, exit code 2."""


def auc(score):
    """Each learner's AUC, the mean over its iterations: (..., iterations) -> (...)."""
    return score.mean(axis=-1)


def method_keys(meta, score):
    """{method: its key among the scores}: flat PPO at its rate chosen on validation tasks (meta's flat_lr),
    every other method at its one rate."""
    keys = {}
    for m in METHODS:
        if m == "flat":
            k = store.method_key("flat", meta["flat_lr"])
            if k in score:
                keys[m] = k
            continue
        found = [k for k in score if k.split("@")[0] == m]
        if found:
            keys[m] = found[0]
    return keys


def row_stats(meta, score, rng=None, name=None):
    """Every statistic of one row from its scores (a sweep's pooled scores: (seeds, evaluation seeds, tasks,
    iterations) per method key). Per method: the mean AUC over seeds with its t-interval, and the mean and
    IQM with rliable's stratified bootstrap intervals (score matrix: seeds x tasks). Per method against flat
    PPO: the paired difference per seed (the verdict, stats.paired) and its word, the paired probability of
    improvement, rliable's unpaired one with its stratified interval, and on how many seeds the method was
    ahead (a paired t-interval over that seed's tasks above 0: a description)."""
    rng = np.random.default_rng(0) if rng is None else rng
    keys = method_keys(meta, score)
    a = {m: auc(score[k]) for m, k in keys.items()}                      # (seeds, eval seeds, tasks)
    out = {"n": len(meta["seeds"]), "methods": {}, "vs_flat": {}}
    for m, x in a.items():
        mean, low, high = stats.t_interval(stats.seed_means(x))
        matrix = stats.per_task(x)
        out["methods"][m] = {"key": keys[m], "mean": [mean, low, high],
                             "boot_mean": stats.stratified([matrix], stats.mean, rng),
                             "iqm": stats.stratified([matrix], stats.iqm, rng)}
    if "flat" not in a:
        return out
    for m in [m for m in COMPARED if m in a]:
        d = stats.paired(a[m], a["flat"])
        task_diff = stats.per_task(a[m]) - stats.per_task(a["flat"])      # (seeds, tasks)
        _, low, _ = stats.t_interval(task_diff)
        out["vs_flat"][m] = {"diff": d, "word": stats.word(d["ci"]),
                             "p_paired": stats.paired_improvement(a[m], a["flat"]),
                             "p_rliable": stats.stratified([stats.per_task(a[m]), stats.per_task(a["flat"])],
                                                           stats.improvement, rng),
                             "ahead_seeds": int(np.sum(low > 0))}
        kinds = split_of(name or "")
        if kinds and all(kinds[0] in r for r in meta["runs"]):
            k = stats.split([r[kinds[0]] for r in meta["runs"]], d["per_seed"], kinds[1])
            if 0 < k["above"] < k["n"]:                 # two kinds indeed: a description instead of a word
                out["vs_flat"][m].update(word="two kinds of seed", split={**k, "measure": kinds[0]})
    return out


def signed(v):
    return f"{v[0]:+.3f} [{v[1][0]:+.3f}, {v[1][1]:+.3f}]"


def plain(v):
    return f"{v[0]:.3f} [{v[1][0]:.3f}, {v[1][1]:.3f}]"


def cost(config):
    """What meta-training costs against a new task's budget: (meta-training env steps, one new task's env
    steps, how many new tasks before meta-training has paid for itself even by a learner that needed no
    steps at all)."""
    c = config
    meta = (c["warmup"] + c["joint"]) * c["tasks"] * c["copies"] * c["steps"] * c["rounds"]
    task = c["eval_iters"] * c["copies"] * c["steps"]
    return meta, task, int(np.ceil(meta / task))


def command(meta):
    """A row's command as said from the repository's root: a folder given absolute (as --flat-from /x/y/runs/z)
    shown from its runs/ on, so that the tables read the same in every checkout."""
    return re.sub(r"(?<=\s)/\S*?/(runs/)", r"\1", meta["command"].replace(store.ROOT + os.sep, ""))


def flags(meta):
    """A row's command without its `python -m lab.sweep`, for a table whose header names it."""
    return command(meta).removeprefix("python -m lab.sweep ")


def where(meta):
    """The seeds, commit(s) and CPU(s) of a row, in one line."""
    runs = meta["runs"]
    ids = [r["seed"] for r in runs]
    seeds = f"{ids[0]}-{ids[-1]}" if len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1)) else \
        ", ".join(map(str, ids))
    commits = sorted({str(r.get("commit")) for r in runs})
    cpus = {}
    for r in runs:
        cpus.setdefault(r.get("cpu", "not recorded"), []).append(str(r["seed"]))
    on = "; ".join(f"{c} (seed {', '.join(s)})" for c, s in cpus.items()) if len(cpus) > 1 else next(iter(cpus))
    return f"seeds {seeds}; commit {', '.join(commits)}; {on}"


def table(name, meta, score, s=None):
    """A row's table: the command, where it ran, a line per method, the per-seed differences, the cost.
    s: the row's statistics when already computed (kept_stats), else row_stats'."""
    s = row_stats(meta, score, name=name) if s is None else s
    lines = [f"`{command(meta)}` ({where(meta)})", "",
             "| method | mean AUC [t, over seeds] | mean [stratified bootstrap] | IQM [stratified bootstrap] | minus "
             "flat PPO, paired [t, over seeds] | verdict | P(improvement), paired [t] | P(improvement), rliable's "
             "[stratified bootstrap] | seeds ahead |", "|" + " --- |" * 9]
    for m, r in s["methods"].items():
        v = s["vs_flat"].get(m)
        test = meta["config"].get("eval_split", "test") == "test"
        label = (f"flat PPO (lr {meta['flat_lr']:g}{', chosen on validation tasks' * test})" if m == "flat" else m)
        mean = f"{r['mean'][0]:.3f} [{r['mean'][1]:.3f}, {r['mean'][2]:.3f}]"
        cells = [label, mean, plain(r["boot_mean"]), plain(r["iqm"])]
        cells += (["", "", "", "", ""] if v is None else
                  [signed((v["diff"]["mean"], v["diff"]["ci"])), v["word"],
                   plain((v["p_paired"]["mean"], v["p_paired"]["ci"])), plain(v["p_rliable"]),
                   f"{v['ahead_seeds']} of {s['n']}"])
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for m, v in s["vs_flat"].items():
        lines.append(f"{m} minus flat PPO, seed by seed: " + " ".join(f"{d:+.3f}" for d in v["diff"]["per_seed"]))
    runs = meta["runs"]
    frac = lambda x: "-" if x is None else f"{x:.2f}"
    for m in [m for m in MASTERS if m in s["methods"]]:
        best = [(r.get("best_master") or {}).get(m) for r in runs]
        if any(b is not None for b in best):
            lines.append(f"what the skills allow {m} (the best master's score over them, `reach`), seed by seed: "
                         + " ".join(frac(b) for b in best))
    meets = [((r.get("random_master_meets") or {}).get("mlsh"), r.get("random_walk_meets")) for r in runs]
    if any(a is not None for a, _ in meets):
        lines.append("a uniformly random mlsh master / a random walk meets the goal in this share of episodes, seed by "
                     "seed: " + " ".join(f"{frac(a)}/{frac(b)}" for a, b in meets))
    for m, v in s["vs_flat"].items():
        if v.get("split"):
            k = v["split"]
            lines.append(f"{m}: the skills split ({k['measure']} >= {k['at']}) on {k['above']} of {k['n']} seeds; "
                         f"minus flat PPO {fmt(k['mean_above'])} on those, {fmt(k['mean_below'])} on the rest (two "
                         f"kinds of seed: a description, not a test)")
    sweep = {float(k.split("@")[1]): stats.seed_means(auc(score[k])).mean() for k in score if k.startswith("flat@")}
    best = max(sweep, key=sweep.get) if sweep else None
    if meta["config"].get("eval_split", "test") == "test" and len(sweep) > 1:
        lines.append("flat PPO's sweep on the test tasks themselves, mean AUC (not a result): "
                     + ", ".join(f"{v:.3f} at {lr:g}" for lr, v in sorted(sweep.items()))
                     + (f"; the best, {best:g}, is the validation's rate" if best == meta["flat_lr"] else
                        f"; the best, {best:g}, is not the validation's rate"))
    m_steps, t_steps, tasks = cost(meta["config"])
    if meta["config"].get("eval_split", "test") == "test" and "mlsh" in s["methods"]:
        lines.append(f"meta-training: {m_steps / 1e6:.2f} M env steps; a new task: {t_steps:,}; meta-training "
                     f"pays for itself after {tasks} new tasks at the least")
    return "\n".join(lines) + "\n"


def costs():
    """What meta-training costs, per preset, from its settings alone: meta-training's env steps, a new
    task's budget (what each method gets to learn it), and how many new tasks it takes before meta-training
    has paid for itself, even for a learner that needed no steps at all on them."""
    from lab import run                       # the presets as a run reads them
    lines = ["| preset | meta-training env steps | a new task's env steps | new tasks before meta-training "
             "pays for itself, at the least |", "|" + " --- |" * 4]
    for name in ["fourrooms", "bandits", "paper", "paper-code", "rooms"]:
        m_steps, t_steps, tasks = cost(run.preset_values(name))
        lines.append(f"| {name} | {m_steps:,} | {t_steps:,} | {tasks} |")
    return "\n".join(lines) + "\n"


def fmt(x):
    return "-" if x is None else f"{x:+.3f}"


def sweep_of_rates(meta, score):
    """A validation row's flat PPO sweep: {rate: (mean AUC over seeds, t-interval low, high)}, the best rate,
    and whether the best lies at the sweep's edge (a best at an edge asks for a wider sweep)."""
    flat = sorted((float(k.split("@")[1]), k) for k in score if k.startswith("flat@"))
    means = {lr: stats.t_interval(stats.seed_means(auc(score[k]))) for lr, k in flat}
    best = max(means, key=lambda lr: means[lr][0])
    return means, best, best in (flat[0][0], flat[-1][0])


def rates(names):
    """The validation rows' flat PPO sweeps, a line each: its command, seeds and commit, each rate's mean AUC
    over seeds with its t-interval (the best in bold), and the rate chosen, inside the sweep or at its edge."""
    sweeps = [(n, *read(n)[:2]) for n in names]
    found = [sweep_of_rates(meta, score) for _, meta, score in sweeps]
    grid = sorted({lr for means, _, _ in found for lr in means})
    lines = ["| validation row | `python -m lab.sweep` | seeds, commit, CPU | "
             + " | ".join(f"{lr:g}" for lr in grid) + " | chosen |",
             "| --- | --- | --- | " + " | ".join("---" for _ in grid) + " | --- |"]
    cell = lambda m, lo, hi: f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
    for (name, meta, _), (means, best, edge) in zip(sweeps, found):
        cells = ["" if lr not in means else f"**{cell(*means[lr])}**" if lr == best else cell(*means[lr])
                 for lr in grid]
        said = f"{best:g}, " + ("at the sweep's edge: widen the sweep" if edge else "inside the sweep")
        lines.append(f"| {name} | `{flags(meta)}` | {where(meta)} | " + " | ".join(cells) + f" | {said} |")
    return "\n".join(lines) + "\n"


def verdict(names):
    """A line per row: its command, seeds, and each method against flat PPO, paired over seeds, with its word
    (flat PPO's own mean AUC beside)."""
    lines = ["| row | `python -m lab.sweep` | seeds, commit, CPU | flat PPO | "
             + " | ".join(f"{m} minus flat PPO" for m in COMPARED) + " |", "|" + " --- |" * (4 + len(COMPARED))]
    for name in names:
        meta, _, s = kept_stats(name)

        def cell(m):
            if m not in s["vs_flat"]:
                return "-"
            v = s["vs_flat"][m]
            if v.get("split"):
                k = v["split"]
                return (f"{signed((v['diff']['mean'], v['diff']['ci']))}; the skills split on {k['above']} of {k['n']} "
                        f"seeds: {fmt(k['mean_above'])} there, {fmt(k['mean_below'])} elsewhere (a description)")
            return f"{signed((v['diff']['mean'], v['diff']['ci']))} **{v['word']}**"
        lines.append(f"| {name} | `{flags(meta)}` | {where(meta)} | {s['methods']['flat']['mean'][0]:.3f} | "
                     + " | ".join(cell(m) for m in COMPARED) + " |")
    return "\n".join(lines) + "\n"


def older():
    """The verdict's rows as RESULTS.md recorded them before the scores were kept (lab/scores/older.json: each
    seed's AUC from its table, flat PPO at each seed's best rate on the test tasks): each master minus flat PPO,
    paired over seeds, with the percentile bootstrap over seeds those tables drew (made again here, 10,000
    replications) and the t-interval; where the word changes, which."""
    with open(os.path.join(SCORES, "older.json")) as f:
        rows = json.load(f)
    rng = np.random.default_rng(0)
    lines = ["| row | commit | seeds | master | minus flat PPO | percentile bootstrap over seeds | its word | "
             "t-interval over seeds | its word | changed |", "|" + " --- |" * 10]
    for name, r in rows.items():
        for m in [m for m in MASTERS if m in r]:
            d = np.subtract(r[m], r["flat"])
            boot = d[rng.integers(0, len(d), (10000, len(d)))].mean(axis=1)
            b = [float(x) for x in np.percentile(boot, [2.5, 97.5])]
            mean, low, high = stats.t_interval(d)
            old, new = stats.word(b), stats.word([low, high])
            lines.append(f"| {name} | {r['commit']} | {len(d)} | {m} | {mean:+.3f} | [{b[0]:+.3f}, {b[1]:+.3f}] "
                         f"| {old} | [{low:+.3f}, {high:+.3f}] | {new} | {'**yes**' if old != new else 'no'} |")
    return "\n".join(lines) + "\n"


def coverage(reps=4000):
    """How often each interval over seeds holds the true difference, simulated (stats.coverage): the
    verdict's t-interval, and the percentile bootstrap over seed means the older tables drew, at 5 and 10
    seeds, for normal and skewed (gamma, shape 4) seed effects."""
    draws = {"normal": lambda rng, shape: rng.normal(0.0, 0.1, shape),
             "skewed (gamma, shape 4)": lambda rng, shape: rng.gamma(4.0, 0.05, shape) - 0.2}
    lines = ["| seed effects | seeds | t-interval over seeds (the verdict; 4,000 rows) | percentile bootstrap over "
             "seed means (2,000 rows of 1,000 replications) |",
             "| --- | --- | --- | --- |"]
    for name, draw in draws.items():
        for n in (5, 10):
            t = stats.coverage(n, draw, np.random.default_rng(n), reps=reps)
            b = stats.coverage(n, draw, np.random.default_rng(n), reps=reps // 2, method="bootstrap", boot=1000)
            lines.append(f"| {name} | {n} | {t:.3f} | {b:.3f} |")
    return "\n".join(lines) + "\n"


def kept_stats(name):
    """A kept row's (meta, score, row_stats), computed once per file as it is now: the verdicts of both
    documents and the row's own table draw the same bootstrap only once."""
    path = kept_path(name)
    return _stats_of(path, os.path.getmtime(path), name)


@functools.lru_cache(maxsize=None)
def _stats_of(path, mtime, name):
    meta, score, _ = store.load_scores(path)
    return meta, score, row_stats(meta, score, name=name)


def kept_path(name):
    """The file of a kept row (lab/scores/NAME.npz); BadInput, in one line, where the row is not kept."""
    path = os.path.join(SCORES, f"{name}.npz")
    if not os.path.isfile(path):
        raise BadInput(f"no scores for the row {name!r} ({path}): add them with python -m lab.report --add {name} "
                       f"SWEEP_DIR")
    return path


def read(name):
    """A row's committed scores (lab/scores/NAME.npz): (meta, score, success)."""
    return store.load_scores(kept_path(name))


MARK = re.compile(r"<!-- (table|rates|verdict|older|costs|coverage) ?([^>]*?) -->\n(.*?)<!-- end -->", re.S)


def remake(text):
    """The document with every marked table made again from its scores."""
    def one(m):
        kind, names = m.group(1), m.group(2).split()
        if kind in ("verdict", "older", "costs", "coverage"):
            body = {"verdict": lambda: verdict(names), "older": older, "costs": costs, "coverage": coverage}[kind]()
        else:
            body = table(names[0], *kept_stats(names[0])) if kind == "table" else rates(names)
        return f"<!-- {' '.join([kind, *names])} -->\n{body}<!-- end -->"
    return MARK.sub(one, text)


def stale(text):
    """The marks whose tables differ from what their scores give now."""
    new = remake(text)
    return [f"{a.group(1)} {a.group(2)}" for a, b in zip(MARK.finditer(text), MARK.finditer(new))
            if a.group(0) != b.group(0)]


def add(name, folder, replace=False):
    """A finished sweep's pooled scores (DIR/scores.npz) committed as the row NAME."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise BadInput(f"--add {name!r}: a row's name is lower-case letters, digits and dashes, as fourrooms-default")
    src = os.path.join(folder, "scores.npz")
    if not os.path.isfile(src):
        raise BadInput(f"{folder} holds no scores.npz: give the folder of a finished python -m lab.sweep")
    meta, _, _ = store.load_scores(src)
    if meta.get("quick"):
        raise BadInput(f"{folder} is a --quick sweep: its numbers say nothing; run the real one")
    dst = os.path.join(SCORES, f"{name}.npz")
    if os.path.exists(dst) and not replace:
        raise BadInput(f"the row {name} is already kept in {dst}: give --replace to put these scores in its place")
    os.makedirs(SCORES, exist_ok=True)
    shutil.copyfile(src, dst + ".tmp")
    os.replace(dst + ".tmp", dst)
    return dst


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab.report", description="Remake the tables of lab/RESULTS.md and "
                                "the README's verdict from the scores kept in lab/scores/, or add a sweep's scores "
                                "as a row.")
    p.add_argument("--check", action="store_true", help="say which tables differ from their scores (exit 1 if any)")
    p.add_argument("--add", nargs=2, metavar=("NAME", "DIR"), help="keep DIR/scores.npz as lab/scores/NAME.npz")
    p.add_argument("--replace", action="store_true", help="with --add: in place of the row's kept scores")
    p.add_argument("--show", metavar="NAME", help="print one row's table")
    p.add_argument("--document", action="append", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        if args.add:
            print(f"kept as {add(*args.add, replace=args.replace)}")
            return
        if args.show:
            print(table(args.show, *read(args.show)[:2]))
            return
        stale_ones = []
        for document in args.document or DOCUMENTS:
            with open(document) as f:
                text = f.read()
            if args.check:
                stale_ones += [f"{os.path.relpath(document, store.ROOT)}: {m}" for m in stale(text)]
                continue
            store.write_text(document, remake(text))
            print(f"remade {len(MARK.findall(text))} table(s) in {document}")
        if args.check:
            print("\n".join(f"stale: {m}" for m in stale_ones) or "every table is what its scores give")
            raise SystemExit(1 if stale_ones else 0)
    except (BadInput, ValueError) as e:
        print(f"report: {e}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
