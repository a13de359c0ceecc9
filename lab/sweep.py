"""Run the lab over many meta-training seeds, several at a time, and summarise them in one table.

A claim about MLSH is a claim over meta-training seeds. This is the tooling for that, kept apart from
the algorithm (mlsh.py), run from the repository's root:

    python -m lab.sweep --seeds 0-9                     # Four Rooms, ten seeds, one per core at a time
    python -m lab.sweep --seeds 0-9 --env bandits       # any flag of python -m lab passes through
    python -m lab.sweep --seeds 0,3,7 --jobs 1 --out DIR
    python -m lab.sweep --summarise DIR [DIR ...]       # run folders made anywhere (one per cluster job, say)
    python -m lab.sweep --seeds 0-9 --list > jobs.txt   # the python -m lab command of every seed, one a line
    python -m lab.sweep --compare "near=DIR1" "far=DIR2,DIR3" --out DIR   # finished sweeps side by side

Each seed runs `python -m lab --seed S <flags> --out DIR/seed-S` in a process of
its own, so its numbers are bit for bit those of that command run by hand. A
seed whose folder already holds a results.json of the same settings and code is
not run again, and one stopped half-way resumes from its checkpoint: an
interrupted sweep carries on where it stopped. The summary goes into
DIR/sweep.json, DIR/sweep.md (the table, also printed), DIR/sweep.png (AUC per
seed), DIR/curves.png (fine-tuning curves) and DIR/scores.npz (every learner's
scores of every seed, which python -m lab.report keeps as a row of the results).
The verdict against flat PPO is the paired difference over seeds with its 95%
t-interval, which holds its coverage at 5 and 10 seeds (lab/stats.py).
"""
import argparse
import contextlib
import dataclasses
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np

from lab import plots, report, run, stats, store
from lab.settings import METHODS, PRESETS, Settings, differences, run_settings
from mlsh import interval

MASTERS = ("mlsh", "mlsh_options")                # the masters over the skills, each compared with flat PPO
COLUMNS = {**{m: m for m in METHODS}, "flat": "flat (lr)"}   # the table's columns, in the order of METHODS
NOT_HERE = {"--seed": "give the seeds with --seeds", "--load": "a sweep trains every seed itself",
            "--eval-only": "a sweep trains every seed itself", "--bench": "run python -m lab --bench by itself",
            "--replace": "a sweep never writes over a run: choose another --out, or move the folder away"}
FORMAT = 2          # sweep.json's format, as results.json's (store.FORMAT)


class BadInput(Exception):
    """Input that sweep.py refuses: one line for the user, exit code 2."""


# ---------------------------------------------------------------------------
# Seeds and settings
# ---------------------------------------------------------------------------

def parse_seeds(text):
    """'0-9', '0,3,7' or both ('0-4,9') -> sorted list of distinct seeds."""
    seeds = set()
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if not part or not lo.isdigit() or (dash and not hi.isdigit()):
            raise BadInput(f"--seeds {text!r}: {part!r} is not a seed or a range; write seeds like 0-9, 0,3,7 "
                           f"or 0-4,9")
        lo, hi = int(lo), int(hi) if dash else int(lo)
        if hi < lo:
            raise BadInput(f"--seeds {text!r}: the range {part} is reversed (empty); write it low-high, "
                           f"as {hi}-{lo}")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def settings(config):
    """A run's config without what differs between the seeds of one sweep (seed, output folder), in
    today's form (run_settings)."""
    return {k: v for k, v in run_settings(config).items() if k != "seed"}


def flags_of(config):
    """The flags of python -m lab that give `config` (what differs from its preset), seed and folder left out."""
    config = settings(config)
    preset = config["preset"] if PRESETS.get(config["preset"], {}).get("env") == config["env"] else config["env"]
    flags = [] if preset == Settings.preset else ["--env", preset] if preset == config["env"] else ["--preset", preset]
    if config["env"] == "rooms" and config["rooms"] != PRESETS[preset]["rooms"]:
        flags += ["--rooms", str(config["rooms"])]               # before the rest: T and S follow it
    default = settings(dataclasses.asdict(run.parse_args(flags)[0]))
    for k, v in config.items():
        if k in ("env", "preset", "rooms") or v == default.get(k):
            continue
        flag = "--" + k.replace("_", "-")
        flags += [flag] if v is True else [flag, *map(str, v)] if isinstance(v, list) else [flag, str(v)]
    return flags


def check_flags(flags):
    """What python -m lab makes of `flags` (its settings and task family), or BadInput with its own message,
    before any worker starts."""
    for flag in flags:
        name = flag.split("=")[0]
        if name in NOT_HERE:
            raise BadInput(f"{name} is not for a sweep: {NOT_HERE[name]}")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cfg, _, family = run.parse_args(flags + ["--seed", "0"])
    except SystemExit:
        raise BadInput(err.getvalue().strip().removeprefix("lab: ")) from None
    return cfg, family


def default_folder(cfg, grid, quick):
    """runs/sweep-<what> (runs/grid-<what> for a grid) at the repository's root, <what> named as a run names
    its folder: the preset, or maze-<file name>, with -quick added for --quick (a smoke test never takes
    a real sweep's folder)."""
    what = os.path.basename(store.default_out(cfg, quick))
    return os.path.join(store.ROOT, "runs", f"{'grid' if grid else 'sweep'}-{what}")


def parse_grid(items, flags):
    """['max-steps=50,100', 'macro=1,5'] -> [("max-steps", ["50", "100"]), ("macro", ["1", "5"])]."""
    grid = []
    for item in items:
        name, eq, values = item.partition("=")
        name, values = name.strip().lstrip("-"), [v.strip() for v in values.split(",")]
        if not eq or not name or not all(values):
            raise BadInput(f"--grid {item!r}: write NAME=V1,V2,... with the name of a flag of python -m lab, as "
                           f"macro=1,5,10")
        if f"--{name}" in [f.split("=")[0] for f in flags]:
            raise BadInput(f"--{name} is given both as a flag and in --grid: keep one")
        grid.append((name, values))
    return grid


def grid_cells(grid, flags):
    """Every combination of the grid's values: [(label, flags)], label like 'max-steps=50 macro=5'."""
    cells = [("", list(flags))]
    for name, values in grid:
        cells = [(f"{label} {name}={v}".strip(), f + [f"--{name}", v]) for label, f in cells for v in values]
    return cells


# ---------------------------------------------------------------------------
# Running the seeds, --jobs at a time
# ---------------------------------------------------------------------------

def plan(seeds, cfg, family, out):
    """Which seeds are done, which resume from a checkpoint, which start afresh; refuse folders of other
    settings or made by other code."""
    want, code = settings(dataclasses.asdict(cfg)), store.code(family)
    done, todo = {}, []
    for s in seeds:
        folder = os.path.join(out, f"seed-{s}")
        ckpt = os.path.join(folder, "checkpoint.npz")
        if os.path.isfile(os.path.join(folder, "results.json")):
            res = store.read_results(folder)
            if settings(res["config"]) != want or res["config"]["seed"] != s:
                raise BadInput(f"{folder} holds a run of other settings ({differences(settings(res['config']), want)}):"
                               f" choose another --out, or move that folder away")
            if store.changed(res.get("code"), code):
                raise BadInput(f"{folder} holds a run made by other code ({store.changed(res.get('code'), code)}): "
                               f"choose another --out, or move that folder away")
            done[s] = res
        elif os.path.isfile(ckpt):
            try:
                store.load_checkpoint(ckpt, dataclasses.replace(cfg, seed=s), family, resume=True)
            except ValueError as e:
                raise BadInput(f"{e}; it cannot be resumed here: choose another --out, or move {folder} away") from None
            todo.append((s, ["--load", ckpt]))
        else:
            todo.append((s, []))
    return done, todo


def start(seed, flags, extra, out):
    """`python -m lab <flags> --seed S --out DIR/seed-S` in its own process at the repository's root, its
    output into the folder's log.txt."""
    folder = os.path.join(out, f"seed-{seed}")
    os.makedirs(folder, exist_ok=True)
    log = open(os.path.join(folder, "log.txt"), "a")
    cmd = [sys.executable, "-m", "lab", *flags, "--seed", str(seed), "--out", folder, *extra]
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    # a session of its own: Ctrl-C reaches the sweep only, which then stops the workers itself; and
    # Ctrl-C's default restored, since a sweep started in the background by a script ignores it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=store.ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, log, folder


def failure(folder, code):
    """The reason a seed failed: the last 'lab:' line (or last line) of its log."""
    with open(os.path.join(folder, "log.txt")) as f:
        lines = [line.strip() for line in f if line.strip()]
    said = [line for line in lines if line.startswith("lab:")] or lines[-1:] or ["no output"]
    return f"exit code {code}: {said[-1]}"


def run_seeds(seeds, cells, jobs, log=print):
    """Every seed of every cell, jobs at a time in one pool. cells: [(label, flags, cfg, family, out)], one
    per sweep (a grid has several; label "" for a lone sweep). Returns [{seed: results or {"error": why}}]."""
    runs, todo = [], []
    for c, (label, flags, cfg, family, out) in enumerate(cells):
        done, left = plan(seeds, cfg, family, out)
        runs.append(done)
        todo += [(c, s, extra) for s, extra in left]
        for s in done:
            log(f"{label + ' ' if label else ''}seed {s}: already done in {os.path.join(out, f'seed-{s}')}")
    resumed = [f"{cells[c][0] + ' ' if cells[c][0] else ''}{s}" for c, s, extra in todo if extra]
    total = len(seeds) * len(cells)
    log(f"sweep: {len(todo)} of {total} seeds to run, {jobs} at a time, into "
        f"{cells[0][4] if len(cells) == 1 else os.path.dirname(cells[0][4])}"
        + (f" (resuming seed {', '.join(resumed)} from the checkpoint in its folder)" if resumed else ""))
    running, t0, finished = {}, time.time(), 0
    try:
        while todo or running:
            while todo and len(running) < jobs:
                c, s, extra = todo.pop(0)
                running[c, s] = start(s, cells[c][1], extra, cells[c][4])
            time.sleep(0.2)
            for (c, s), (proc, fh, folder) in list(running.items()):
                if proc.poll() is None:
                    continue
                fh.close()
                del running[c, s]
                finished += 1
                ok = proc.returncode == 0 and os.path.isfile(os.path.join(folder, "results.json"))
                res = runs[c][s] = store.read_results(folder) if ok else {"error": failure(folder, proc.returncode)}
                elapsed = time.time() - t0
                eta = elapsed / finished * (len(todo) + len(running))
                what = ("  ".join(f"{m} {res['methods'][m]['auc']:.3f}" for m in (*MASTERS, "flat")
                                  if m in res["methods"]) if ok else f"failed ({res['error']})")
                log(f"{cells[c][0] + ' ' if cells[c][0] else ''}seed {s}: {what}  ({sum(map(len, runs))}/{total} "
                    f"seeds done, elapsed {elapsed:.0f}s, eta {eta:.0f}s)")
    except KeyboardInterrupt:
        for proc, fh, _ in running.values():
            proc.send_signal(signal.SIGINT)                   # a run keeps its last complete round
        for proc, fh, _ in running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            fh.close()
        kept = sum(1 for r in runs for res in r.values() if "error" not in res)
        where = cells[0][4] if len(cells) == 1 else os.path.dirname(cells[0][4])
        raise KeyboardInterrupt(f"interrupted: {kept} of {total} seeds are finished and kept in {where}")
    return runs


# ---------------------------------------------------------------------------
# Summary: sweep.json, sweep.md, sweep.png
# ---------------------------------------------------------------------------

def paired_ahead(res):
    """Whether each master over the skills was ahead of each other method on this one seed: the paired
    difference per held-out task (the mean over evaluation seeds: the same tasks and streams for both) has a
    95% t-interval over tasks above 0. {master: {method: bool}}; {} where the run kept no scores (older
    code). A description of one seed; the verdict rests on the difference over seeds (report.py)."""
    path = os.path.join(res.get("folder", ""), store.SCORES)
    if not os.path.isfile(path):
        return {}
    meta, score, _ = store.load_scores(path)
    if res.get("flat_folder"):
        score.update({k: v for k, v in store.load_scores(os.path.join(res["flat_folder"], store.SCORES))[1].items()
                      if k.startswith("flat@")})
    tasks = {m: report.auc(score[k]).mean(axis=0) for m, k in report.method_keys(meta, score).items()}
    return {m: {b: bool(stats.t_interval(tasks[m] - tasks[b])[1] > 0) for b in tasks if b not in MASTERS}
            for m in MASTERS if m in tasks}


def row(seed, res):
    """One seed's line of sweep.json (res: its results.json, in today's format)."""
    if "error" in res:
        return {"seed": seed, "error": res["error"]}
    keep = ("auc", "auc_ci", "success_auc", "iters_to_80", "curve")
    methods = {m: {k: res["methods"][m].get(k) for k in keep} for m in METHODS if m in res["methods"]}
    if "flat" in methods:
        methods["flat"]["lr"] = res["methods"]["flat"]["lr"]
    reached = res.get("reach") or {}
    mean = lambda m, k: ((reached.get(m) or {}).get(k) or {}).get("mean")      # None where not measured
    history = res.get("meta_training") or [{}]
    return {"seed": seed, "methods": methods, "best_alone": res["skills_alone"]["best_per_task"],
            "best_master": {m: mean(m, "best_score") for m in MASTERS if m in reached} or None,
            "random_master_meets": {m: mean(m, "random_meets") for m in MASTERS if m in reached} or None,
            "random_walk_meets": reached.get("random_walk_meets", {}).get("mean"),
            "meta_success": [history[0].get("joint_success"), history[-1].get("joint_success")],
            "usage": history[-1].get("usage"), "seconds": res.get("seconds", {}).get("meta_training"),
            "cpu": res.get("cpu", "not recorded"), "code": res.get("code"), "commit": res.get("commit"),
            "ahead": paired_ahead(res)}


def ahead(r, m, b):
    """Whether master m was ahead of method b on the seed of row r (paired_ahead); None where not known."""
    return (r.get("ahead") or {}).get(m, {}).get(b)


def summary(rows):
    """Over the seeds that finished, for each master over the skills (MASTERS) beside flat PPO: the mean over
    seeds of its AUC minus flat's with a 95% t-interval over seeds (the methods meet the same tasks and
    streams: the difference is paired; the verdict rests on it), the ratio of their mean AUCs, and as
    descriptions, on how many seeds it was ahead of flat PPO (and of every baseline) by a paired comparison
    within the seed (paired_ahead), and on how many of those it scored at least twice flat (None where the
    runs kept no scores). What needs a method that was not evaluated (--methods) is left out."""
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return {"n": 0, "failed": len(rows)}
    have = [m for m in METHODS if m in ok[0]["methods"]]
    auc = lambda r, m: r["methods"][m]["auc"]
    s = {"n": len(ok), "failed": len(rows) - len(ok),
         "mean_auc": {m: float(np.mean([auc(r, m) for r in ok])) for m in have},
         "mean_success_auc": {m: float(np.mean([r["methods"][m]["success_auc"] for r in ok]))
                              if all(r["methods"][m]["success_auc"] is not None for r in ok) else None
                              for m in have}}
    baselines = [m for m in have if m not in MASTERS]
    for m in [m for m in MASTERS if m in have and "flat" in have]:
        d = stats.paired([auc(r, m) for r in ok], [auc(r, "flat") for r in ok])     # the verdict's interval
        diff, ci = d["mean"], d["ci"]
        known = all(ahead(r, m, b) is not None for r in ok for b in baselines)
        count = lambda test: sum(bool(test(r)) for r in ok) if known else None
        s[m] = {"minus_flat": diff, "minus_flat_ci": ci, "above_flat": count(lambda r: ahead(r, m, "flat")),
                "above_all": count(lambda r: all(ahead(r, m, b) for b in baselines)),
                "ratio": s["mean_auc"][m] / s["mean_auc"]["flat"] if s["mean_auc"]["flat"] > 0 else None,
                "twice_flat": count(lambda r: ahead(r, m, "flat") and auc(r, m) >= 2 * auc(r, "flat"))}
    return s


def summary_line(s):
    if s["n"] == 0:
        return f"no seed finished ({s['failed']} failed)"
    failed = f"; {s['failed']} seed(s) failed" if s["failed"] else ""
    if not any(m in s for m in MASTERS):
        return (f"{s['n']} seeds: mean AUC " + ", ".join(f"{m} {a:.3f}" for m, a in s["mean_auc"].items())
                + f" (no master and flat PPO to compare: --methods){failed}")
    count = lambda k: "-" if k is None else k
    return "\n".join(f"{s['n']} seeds, {m}: AUC minus flat's {d['minus_flat']:+.3f} [{d['minus_flat_ci'][0]:+.3f}, "
                     f"{d['minus_flat_ci'][1]:+.3f}] (mean over seeds, 95% t-interval, paired), "
                     f"{stats.word([d['minus_flat_ci'][0], d['minus_flat_ci'][1]])}; ahead of flat PPO on "
                     f"{count(d['above_flat'])} of {s['n']} seeds, of every baseline on {count(d['above_all'])} "
                     f"(paired within each seed: a description); mean AUC {m} {s['mean_auc'][m]:.3f}, flat "
                     f"{s['mean_auc']['flat']:.3f}"
                     for m, d in [(m, s[m]) for m in MASTERS if m in s]) + failed


def spread_line(rows, key, what):
    """A line when the seeds ran on more than one `what` (empty when on one): per-seed numbers differ between
    CPUs and between code, so such a table is read by its summary over seeds."""
    on = {}
    for r in rows:
        value = r.get(key, "not recorded")
        said = json.dumps(value) if isinstance(value, dict) or value is None else value
        on.setdefault(said, []).append(str(r["seed"]))
    if len(on) < 2:
        return ""
    return (f"These seeds ran on {len(on)} {what} (" + "; ".join(f"{c}: seed {', '.join(s)}" for c, s in on.items())
            + f"): per-seed numbers differ between {what}; read the summary over seeds.\n")


def cpu_line(rows):
    return spread_line(rows, "cpu", "CPUs")


def code_line(rows):
    return spread_line(rows, "code", "versions of the code")


def ratio_line(s):
    """The gap, in one line per master (empty without a master and flat PPO)."""
    show = lambda d: "flat's mean AUC is 0" if d["ratio"] is None else f"{d['ratio']:.2f}"
    return "".join(f"{m} / flat PPO (ratio of the mean AUCs): {show(s[m])}; {m} at least twice flat PPO and ahead "
                   f"of it on {'-' if s[m]['twice_flat'] is None else s[m]['twice_flat']} of {s['n']} seeds\n"
                   for m in MASTERS if m in s)


def table(rows, s):
    """The per-seed markdown table: bold where a master was ahead of flat PPO on the seed (paired_ahead)."""
    shown = [m for m in METHODS if any(m in r.get("methods", {}) for r in rows)]
    masters = [m for m in MASTERS if m in shown]
    columns = ([COLUMNS[m] for m in shown] + [f"success AUC {' / '.join(masters + ['flat'])}", "best sub-policy alone",
               f"best master's score ({' / '.join(masters)})", f"a random master ({' / '.join(masters)}) / walk "
               f"meets the goal", "meta-training success, first / last round"])
    lines = ["| seed | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 1) + "|"]
    frac = lambda x: "-" if x is None else f"{x:.2f}"
    per_master = lambda r, k: " / ".join(frac((r.get(k) or {}).get(m)) for m in masters)

    def cell(r, m, name):
        if name not in m:
            return "-"
        text = f"{m[name]['auc']:.3f} [{m[name]['auc_ci'][0]:.3f}, {m[name]['auc_ci'][1]:.3f}]"
        if name == "flat":
            return f"{text} ({m['flat']['lr']:g})"
        return f"**{text}**" if name in MASTERS and ahead(r, name, "flat") else text

    for r in rows:
        if "error" in r:
            lines.append(f"| {r['seed']} | failed: {r['error']} |" + " |" * (len(columns) - 1))
            continue
        m = r["methods"]
        success = " / ".join(frac(m[n]["success_auc"] if n in m else None) for n in masters + ["flat"])
        meets = per_master(r, "random_master_meets") + f" / {frac(r.get('random_walk_meets'))}"
        meta = " / ".join(frac(x) for x in r.get("meta_success", [None, None]))
        lines.append(f"| {r['seed']} | " + " | ".join(cell(r, m, n) for n in shown) + f" | {success} | "
                     f"{r['best_alone']:.2f} | {per_master(r, 'best_master')} | {meets} | {meta} |")
    if s["n"]:
        mean, succ = s["mean_auc"], s["mean_success_auc"]
        lines.append("| mean | " + " | ".join(f"{mean[n]:.3f}" if n in mean else "-" for n in shown) + " | "
                     + " / ".join(frac(succ.get(n)) for n in masters + ["flat"]) + " | | | | |")
    return ("\n".join(lines) + "\n\n" + summary_line(s) + "\n" + ratio_line(s) + cpu_line(rows) + code_line(rows)
            + "Bold: the master was ahead of flat PPO on that seed (paired, within the seed). "
            + "; ".join(f"{m}: {METHODS[m]}" for m in shown)
            + ".\n")


QUICK_NOTE = "--quick: a smoke test; these numbers say nothing about MLSH"


# Flat PPO learns from scratch: it does not depend on these settings, only on the rest (the task, the
# networks, PPO's settings, the evaluation, the seed)
NOT_FLATS = ("subpolicies", "macro", "random_subs_master", "interrupt", "rounds", "tasks", "warmup", "joint",
             "sub_lr", "sub_ent", "master_lr", "methods", "flat_lr", "flat_lrs", "preset")


def flat_source(folder, seeds, config, code):
    """{seed: flat PPO's results} from the sweep in `folder`, whose runs must hold flat PPO, be made by this
    code and differ from `config` only in settings flat PPO does not depend on (NOT_FLATS); else BadInput,
    before any run."""
    if "flat" in config["methods"]:
        raise BadInput("--flat-from takes flat PPO from another sweep: leave flat out of --methods")
    want = {k: v for k, v in config.items() if k not in NOT_FLATS}
    flat = {}
    for s in seeds:
        if not os.path.isfile(os.path.join(folder, f"seed-{s}", "results.json")):
            raise BadInput(f"--flat-from {folder}: no finished seed {s} there; run that sweep's seed first")
        res = store.read_results(os.path.join(folder, f"seed-{s}"))
        there = {k: v for k, v in settings(res["config"]).items() if k not in NOT_FLATS}
        other = store.changed(res.get("code"), code)
        if "flat" not in res["methods"] or there != want or other:
            why = differences(there, want) if there != want else f"made by other code: {other}" if other else \
                "it has no flat PPO"
            raise BadInput(f"--flat-from {folder}: seed {s} is not flat PPO of these settings ({why})")
        flat[s] = res
    return flat


def with_flat(runs, flat):
    """Each finished seed's results with flat PPO's (of the same seed) from another sweep (flat_source), and
    the folder whose scores hold its learners."""
    return {s: res if "error" in res else {**res, "methods": {**res["methods"], "flat": flat[s]["methods"]["flat"]},
                                           "flat_folder": flat[s]["folder"]}
            for s, res in runs.items()}


def pool_scores(out, runs, command, config, flat_from=None):
    """The finished seeds' scores (each run's scores.npz, flat PPO's from its --flat-from folder) as one
    file, OUT/scores.npz: per method and rate (seeds, evaluation seeds, tasks, iterations), with what made
    each seed. A row's committed scores are such a file (python -m lab.report --add). Returns its meta and
    scores, or None where a seed kept none (a run of older code)."""
    ok = {s: r for s, r in sorted(runs.items()) if "error" not in r}
    paths = [os.path.join(r["folder"], store.SCORES) for r in ok.values()]
    if not ok or not all(os.path.isfile(p) for p in paths):
        return None
    score, success, per_seed, tasks = {}, {}, [], None
    for (s, res), path in zip(ok.items(), paths):
        meta, sc, su = store.load_scores(path)
        if res.get("flat_folder"):
            _, fsc, fsu = store.load_scores(os.path.join(res["flat_folder"], store.SCORES))
            sc.update({k: v for k, v in fsc.items() if k.startswith("flat@")})
            su.update({k: v for k, v in fsu.items() if k.startswith("flat@")})
        tasks = meta["tasks"] if tasks is None else tasks
        if meta["tasks"] != tasks:
            raise BadInput(f"{res['folder']}: other held-out tasks than seed {next(iter(ok))}'s; one setting at a time")
        for k in sc:
            score.setdefault(k, []).append(sc[k])
            success.setdefault(k, []).append(su[k])
        r = row(s, res)
        per_seed.append({k: v for k, v in r.items() if k != "methods"} | {"commit": res.get("commit")})
    keep = [k for k in score if len(score[k]) == len(ok)]            # the methods every seed has
    flat_lr = next(iter(ok.values()))["config"]["flat_lr"]
    meta = {"command": command, "seeds": list(ok), "tasks": tasks, "config": config, "flat_lr": flat_lr,
            "runs": per_seed, "flat_from": flat_from and near(flat_from),
            "quick": any(r.get("quick") for r in ok.values())}
    score = {k: np.stack(score[k]) for k in keep}
    store.save_scores(os.path.join(out, store.SCORES), score, {k: np.stack(success[k]) for k in keep}, meta)
    return meta, score


def write_summary(out, runs, flags, config, log=print, flat_from=None):
    """sweep.json, sweep.md, sweep.png and curves.png in `out` from {seed: results}; prints the table.
    Runs made with --quick say so in the table's first line and in the figures' titles. flat_from: the
    sweep flat PPO's results came from (with_flat), named under the table."""
    rows = [row(s, runs[s]) for s in sorted(runs)]
    s = summary(rows)
    quick = any(res.get("quick") for res in runs.values())
    command = shlex.join(["python", "-m", "lab", *flags])
    store.make_folder(out)
    store.write_json(os.path.join(out, "sweep.json"), {"format": FORMAT, "flags": flags, "config": config, "runs": rows,
                                                       "summary": s, "quick": quick})
    text = (f"**{QUICK_NOTE}**\n\n" * quick + f"`{command} --seed S`, seeds {', '.join(str(r['seed']) for r in rows)}"
            f"\n\n{table(rows, s)}" + (f"Flat PPO: each seed's from {near(flat_from)} (it does not depend on the "
                                       f"settings in which the two differ)\n" if flat_from else ""))
    command += f"\n({QUICK_NOTE})" * quick
    ok = [r["seed"] for r in rows if "error" not in r]
    seeds = f"{ok[0]}-{ok[-1]}" if ok and ok == list(range(ok[0], ok[-1] + 1)) else ",".join(map(str, ok))
    pooled = pool_scores(out, runs, shlex.join(["python", "-m", "lab.sweep", "--seeds", seeds, *flags]
                                               + (["--flat-from", near(flat_from)] if flat_from else [])), config,
                         flat_from)
    if pooled is not None:
        text += "\nFrom every learner's scores (scores.npz; lab/stats.py):\n\n" + report.table(None, *pooled)
    store.write_text(os.path.join(out, "sweep.md"), text)
    if s["n"]:
        plots.plot_seeds(os.path.join(out, "sweep.png"), rows, command)
        plots.plot_sweep_curves(os.path.join(out, "curves.png"), rows, command)
    log("\n" + text)
    log(f"sweep.json, sweep.md, sweep.png and curves.png in {out}")
    return s


def gather(folders):
    """{seed: results} from run folders made anywhere; all must hold one setting, each seed once."""
    runs, first = {}, None
    for folder in folders:
        if not os.path.isfile(os.path.join(folder, "results.json")):
            raise BadInput(f"{folder} holds no results.json: give folders that a finished run of python -m lab wrote")
        res = store.read_results(folder)
        seed = res["config"]["seed"]
        if first is None:
            first = (folder, settings(res["config"]))
        elif settings(res["config"]) != first[1]:
            raise BadInput(f"{folder} and {first[0]} are runs of different settings "
                           f"({differences(settings(res['config']), first[1])}): summarise one setting at a time")
        if seed in runs:
            raise BadInput(f"{folder} is seed {seed} again: give each seed's folder once")
        runs[seed] = res
    return runs, first[1]


def write_grid(out, grid, cells, runs, flags, log=print):
    """grid.json, grid.md and grid.png: per cell, every method's mean AUC over the seeds with its 95%
    t-interval over seeds, and for each master its difference from flat PPO (paired, over seeds), its ratio
    to it, and on how many seeds it was ahead of flat (paired within the seed: a description)."""
    table = []
    for (label, _, _, _, folder), r in zip(cells, runs):
        rows = [row(s, r[s]) for s in sorted(r)]
        ok = [x for x in rows if "error" not in x]
        auc = {m: interval([x["methods"][m]["auc"] for x in ok]) if ok and m in ok[0]["methods"] else None
               for m in METHODS}
        table.append({"values": dict(v.split("=") for v in label.split()), "folder": folder, **auc,
                      "summary": summary(rows)})
    store.make_folder(out)
    store.write_json(os.path.join(out, "grid.json"), {"format": FORMAT, "flags": flags, "grid": grid, "cells": table})
    names = [name for name, _ in grid]
    shown = [m for m in METHODS if any(c[m] is not None for c in table)]
    masters = [m for m in MASTERS if any(m in c["summary"] for c in table)]
    show = lambda a: "-" if a is None else f"{a[0]:.3f} [{a[1][0]:.3f}, {a[1][1]:.3f}]"
    count = lambda k: "-" if k is None else k
    quick = any(res.get("quick") for r in runs for res in r.values())
    lines = [f"**{QUICK_NOTE}**\n" * quick + f"`python -m lab {shlex.join(flags)} --seed S` over "
             + ", ".join(f"--{n} {' / '.join(v)}" for n, v in grid),
             "", "| " + " | ".join(names + shown + [f"{m} {what}" for m in masters for what in
                                                    ("minus flat", "/ flat", "ahead of flat", "at least twice flat")])
             + " |", "|" + " --- |" * (len(names) + len(shown) + 4 * len(masters))]
    for c in table:
        s = c["summary"]
        per = []
        for m in masters:
            d = s.get(m)
            per += (["-"] * 4 if d is None else
                    [f"{d['minus_flat']:+.3f} [{d['minus_flat_ci'][0]:+.3f}, {d['minus_flat_ci'][1]:+.3f}]",
                     "-" if d["ratio"] is None else f"{d['ratio']:.2f}", f"{count(d['above_flat'])} of {s['n']}",
                     f"{count(d['twice_flat'])} of {s['n']}"])
        lines.append("| " + " | ".join([c["values"][n] for n in names] + [show(c[m]) for m in shown] + per) + " |")
    text = ("\n".join(lines) + "\n\nAUC: mean over meta-training seeds, 95% t-interval over seeds. / flat: the ratio "
            "of the mean AUCs. Ahead of flat: seeds on which the master's paired difference from flat PPO over the "
            "seed's tasks had a 95% t-interval above 0 (a description; the verdict is the difference over seeds). At "
            "least twice flat: of those, the seeds where its AUC was at least twice flat PPO's.\n")
    store.write_text(os.path.join(out, "grid.md"), text)
    if len(grid) <= 2:
        plots.plot_grid(os.path.join(out, "grid.png"), grid, table, " ".join(["python -m lab", *flags]))
    log("\n" + text)
    log(f"grid.json, grid.md{', grid.png' if len(grid) <= 2 else ''} in {out}; each cell's sweep in its folder")


USED = 0.05     # a skill "in use": it acted in at least this share of the last round's steps


def read_sweep(folder):
    """A sweep folder's sweep.json in today's format (FORMAT): an older sweep's rows renamed as
    store.upgrade renames a run's results, so that no number is shown under another method's name."""
    if not os.path.isfile(os.path.join(folder, "sweep.json")):
        raise BadInput(f"{folder} holds no sweep.json: give folders a finished python -m lab.sweep wrote")
    with open(os.path.join(folder, "sweep.json")) as f:
        sweep = json.load(f)
    if sweep.get("format", 1) == FORMAT:
        return sweep
    if sweep.get("format", 1) != 1:
        raise BadInput(f"{folder}: a sweep.json of format {sweep['format']}; this code reads 1 and {FORMAT}")
    rename = store.old_names(sweep["config"])
    first = "mlsh_options" if rename else "mlsh"       # the master an older row's reach measured

    def upgraded(r):
        if "error" in r:
            return r
        best = {first: r.get("best_master")}
        if rename:
            best["mlsh"] = r.get("best_master_skills_only")
        return {**r, "methods": {rename.get(m, m): v for m, v in r["methods"].items()}, "best_master": best,
                "random_master_meets": {first: r.get("random_master_meets")}, "code": None}

    return {**sweep, "format": FORMAT, "config": store.upgrade_config({"master": "paper", **sweep["config"]}),
            "runs": [upgraded(r) for r in sweep["runs"]]}


def compare(steps):
    """Several settings side by side, one line each: [(name, [sweep folder, ...])] -> the table's text
    (compare.md), its numbers (compare.json) and each setting's rows for the figures. A setting's folders are
    pooled run by run (one goal held out per folder, say), so its intervals are 95% t-intervals over runs.
    Also per setting, means over its runs: what the skills allow each master (the best master's score,
    `reach`), the skills in use at the end of meta-training, and its compute (env steps and seconds of
    meta-training)."""
    data, pooled, quick = [], [], False
    for name, folders in steps:
        rows, env_steps = [], []
        for folder in folders:
            sweep = read_sweep(folder)
            c, quick = sweep["config"], quick or sweep.get("quick", False)
            ok = [r for r in sweep["runs"] if "error" not in r]
            rows += ok
            env_steps += [(c["warmup"] + c["joint"]) * c["tasks"] * c["copies"] * c["steps"] * c["rounds"]] * len(ok)
        need = [m for m in (*MASTERS, "flat") if not rows or m not in rows[0]["methods"]]
        if need:
            raise BadInput(f"{name}: its runs lack {', '.join(need)}; compare sweeps that ran both masters and flat "
                           "PPO")
        auc = lambda m: [r["methods"][m]["auc"] for r in rows]
        above = lambda m: sum(bool(ahead(r, m, "flat")) for r in rows) if all(
            ahead(r, m, "flat") is not None for r in rows) else None
        cell = {m: interval(auc(m)) for m in METHODS if m in rows[0]["methods"]}
        for m in MASTERS:
            cell[f"{m}_minus_flat"] = interval(np.subtract(auc(m), auc("flat")))
            cell[f"{m}_above_flat"] = above(m)
        mean = lambda k, m: (None if any((r.get(k) or {}).get(m) is None for r in rows)
                             else float(np.mean([r[k][m] for r in rows])))
        used = [None if r.get("usage") is None else (sum(u >= USED for u in r["usage"]), max(r["usage"])) for r in rows]
        data.append({"name": name, "folders": [near(f) for f in folders], "runs": len(rows), **cell,
                     "reach": {m: mean("best_master", m) for m in MASTERS},
                     "seconds": float(np.mean([r["seconds"] for r in rows])) if all(r.get("seconds") for r in rows)
                     else None, "env_steps": float(np.mean(env_steps)),
                     "skills_used": None if None in used else [float(np.mean(u)) for u in zip(*used)],
                     "code": code_line(rows), "cpu": cpu_line(rows)})
        pooled.append((name, rows))
    show = lambda a, sign="": f"{a[0]:{sign}.3f} [{a[1][0]:{sign}.3f}, {a[1][1]:{sign}.3f}]"
    shown = [m for m in METHODS if all(m in d for d in data)]
    frac = lambda x: "-" if x is None else f"{x:.2f}"
    count = lambda k: "-" if k is None else k
    used = lambda u: "-" if u is None else f"{u[0]:.1f} (most used {u[1]:.2f})"
    lines = ["| setting | runs | " + " | ".join(shown) + " | mlsh minus flat | mlsh_options minus flat | runs with "
             "mlsh / mlsh_options ahead of flat | best master's score (mlsh / mlsh_options) | skills in use "
             "| meta-training env steps, seconds |", "| --- " * (len(shown) + 8) + "|"]
    for d in data:
        lines.append(f"| {d['name']} | {d['runs']} | " + " | ".join(show(d[m]) for m in shown)
                     + f" | {show(d['mlsh_minus_flat'], '+')} | {show(d['mlsh_options_minus_flat'], '+')} | "
                     f"{count(d['mlsh_above_flat'])} / {count(d['mlsh_options_above_flat'])} of {d['runs']} | "
                     + " / ".join(frac(d["reach"][m]) for m in MASTERS)
                     + f" | {used(d['skills_used'])} | {d['env_steps'] / 1e6:.1f} M, "
                     + ("-" if d["seconds"] is None else f"{d['seconds']:.0f} s") + " |")
    notes = "".join(f"{d['name']}: {d[k]}" for d in data for k in ("cpu", "code") if d[k])
    text = (f"**{QUICK_NOTE}**\n\n" * quick + "\n".join(lines) + "\n\nAUC: mean over runs (meta-training seeds; "
            "a setting of several sweeps pools their runs), 95% t-interval over runs. Ahead of flat: runs on "
            "which the master was ahead of flat PPO, paired within the run (a description). Best master's score: what "
            "the skills allow each master (reach), mean over runs. Skills in use: sub-policies "
            f"that acted in at least {USED:.0%} of the last meta-training round's steps, mean over runs, "
            "and the most used one's share. Env steps and seconds: one run's meta-training.\n" + notes)
    return text, data, pooled


def write_compare(out, steps, log=print):
    """compare.json, compare.md, compare.png (one panel of fine-tuning curves per setting) and gaps.png (each
    setting's lead over flat PPO) in `out`."""
    text, data, pooled = compare(steps)
    store.check_writable(out)
    store.make_folder(out)
    store.write_json(os.path.join(out, "compare.json"), {"format": FORMAT, "settings": data})
    store.write_text(os.path.join(out, "compare.md"), text)
    plots.plot_compare(os.path.join(out, "compare.png"), pooled)
    plots.plot_gaps(os.path.join(out, "gaps.png"), data)
    log("\n" + text)
    log(f"compare.json, compare.md, compare.png (curves) and gaps.png (the leads over flat PPO) in {near(out)}")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def near(path):
    """A path as short as it can be said from here: relative below the current folder, else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise BadInput(f"{message} (python -m lab.sweep --help)")


def parse(argv):
    p = Parser(prog="python -m lab.sweep", allow_abbrev=False, description="Run python -m lab over meta-training "
               "seeds, several at a time, and summarise them (sweep.json, sweep.md, sweep.png, curves.png). Every "
               "other flag goes to python -m lab as it is (python -m lab --help).")
    p.add_argument("--seeds", help="seeds to run: 0-9, 0,3,7 or both (0-4,9)")
    p.add_argument("--jobs", type=int, help="seeds run at a time (default: the cores this process may use)")
    p.add_argument("--out", help="the sweep's folder; seed S runs in OUT/seed-S (default: runs/sweep-<preset>, or "
                                 "runs/sweep-maze-<file name> with --maze, at the repository's root; with --summarise, "
                                 "the folders' common parent)")
    p.add_argument("--summarise", nargs="+", metavar="DIR", help="no runs: summarise these finished run folders")
    p.add_argument("--list", action="store_true", help="no runs: print the python -m lab command of every seed (of "
                   "every grid cell), one per line, to run from the repository's root, for a cluster's scheduler; "
                   "the same sweep command afterwards, or --summarise, makes the tables from their folders")
    p.add_argument("--grid", nargs="+", metavar="NAME=V1,V2", help="a sweep for every combination of these values of "
                   "python -m lab's flags (as macro=1,5,10), each in OUT/NAME-V_..., and grid.md/json/png over them "
                   "(default OUT: runs/grid-<preset>)")
    p.add_argument("--compare", nargs="+", metavar="NAME=DIR[,DIR]", help="no runs: finished sweeps side by side, "
                   "one line and one panel of curves per NAME, its sweeps' runs pooled (compare.md/json/png and "
                   "gaps.png in --out, default the folders' common parent)")
    p.add_argument("--flat-from", metavar="DIR", help="flat PPO's results from the sweep in DIR, seed by seed, "
                   "instead of running it again: for settings flat PPO does not depend on (K, N, W, U, the rounds), "
                   "with flat left out of --methods")
    args, flags = p.parse_known_args(argv)
    if sum(x is not None for x in (args.seeds, args.summarise, args.compare)) != 1:
        raise BadInput("give --seeds to run a sweep, --summarise DIR ... to summarise run folders, or --compare "
                       "NAME=DIR ... to set finished sweeps side by side (one of the three)")
    if args.compare and (flags or args.grid or args.list or args.flat_from):
        raise BadInput(f"--compare takes NAME=DIR[,DIR] items and --out only ({' '.join(flags)})")
    bad = [c for c in args.compare or [] if "=" not in c or not c.split("=", 1)[1]]
    if bad:
        raise BadInput(f"--compare {bad[0]}: give each setting as NAME=DIR or NAME=DIR,DIR (its sweeps' folders)")
    if args.summarise and (flags or args.grid or args.list):
        raise BadInput(f"--summarise takes folders only, not flags of python -m lab, --grid or --list "
                       f"({' '.join(flags)})")
    if args.jobs is not None and args.jobs < 1:
        raise BadInput(f"--jobs is {args.jobs}; it must be at least 1")
    return args, flags


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, flags = parse(argv)
        if args.compare:
            steps = [(c.split("=", 1)[0], [os.path.abspath(d) for d in c.split("=", 1)[1].split(",")])
                     for c in args.compare]
            folders = [d for _, ds in steps for d in ds]
            write_compare(os.path.abspath(args.out or os.path.commonpath([os.path.dirname(d) for d in folders])),
                          steps)
            return
        if args.summarise:
            folders = [os.path.abspath(d) for d in args.summarise]
            runs, config = gather(folders)
            if args.flat_from:
                code = next((r["code"] for r in runs.values() if r.get("code")), None)
                runs = with_flat(runs, flat_source(args.flat_from, sorted(runs), config, code))
            out = os.path.abspath(args.out or os.path.commonpath([os.path.dirname(d) for d in folders]))
            store.check_writable(out)
            write_summary(out, runs, flags_of(config), config, flat_from=args.flat_from)
            return
        seeds = parse_seeds(args.seeds)
        grid = parse_grid(args.grid, flags) if args.grid else []
        cells = [(label, f, *check_flags(f)) for label, f in grid_cells(grid, flags)]
        out = os.path.abspath(args.out or default_folder(cells[0][2], grid, "--quick" in flags))
        cells = [(label, f, cfg, family, os.path.join(out, label.replace("=", "-").replace(" ", "_")))
                 for label, f, cfg, family in cells]
        flat = [flat_source(args.flat_from, seeds, settings(dataclasses.asdict(cfg)), store.code(family))
                if args.flat_from else None for _, _, cfg, family, _ in cells]      # checked before any run
        if args.list:
            for label, f, cfg, family, folder in cells:
                for s in seeds:
                    seed_folder = os.path.join(folder, f"seed-{s}")        # said from the root, where it runs
                    if folder.startswith(store.ROOT + os.sep):
                        seed_folder = os.path.relpath(seed_folder, store.ROOT)
                    print(shlex.join(["python", "-m", "lab", *f, "--seed", str(s), "--out", seed_folder]))
            return
        for *_, folder in cells:
            store.check_writable(folder)
        jobs = args.jobs or len(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else os.cpu_count())
        runs = [r if f is None else with_flat(r, f) for r, f in zip(run_seeds(seeds, cells, jobs), flat)]
        for (label, f, cfg, family, folder), r in zip(cells, runs):
            write_summary(folder, r, f, settings(dataclasses.asdict(cfg)), log=print if not grid else lambda s: None,
                          flat_from=args.flat_from)
        if grid:
            write_grid(out, grid, cells, runs, flags)
    except (BadInput, ValueError) as e:
        print(f"sweep: {e}", file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt as e:
        print(f"\n{e or 'interrupted'}\ncarry on with: {shlex.join(['python', '-m', 'lab.sweep', *argv])}")
        raise SystemExit(130)
    if any("error" in res for r in runs for res in r.values()):
        raise SystemExit(1)


def stop(signum, frame):
    """SIGTERM (kill PID) stops a sweep as Ctrl-C does, also one started in the background, which ignores Ctrl-C."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    main()
