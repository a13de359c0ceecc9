"""Run mlsh.py over many meta-training seeds, several at a time, and summarise them in one table.

A claim about MLSH is a claim over meta-training seeds. This file is the
tooling for that, kept apart from the algorithm (which stays in mlsh.py):

    python sweep.py --seeds 0-9                        # Four Rooms, ten seeds, one per core at a time
    python sweep.py --seeds 0-9 --env bandits          # any mlsh.py flag passes through
    python sweep.py --seeds 0,3,7 --jobs 1 --out DIR
    python sweep.py --summarise DIR [DIR ...]          # run folders made anywhere (one per cluster job, say)
    python sweep.py --seeds 0-9 --list > jobs.txt      # the mlsh.py command of every seed, one per line
    python sweep.py --compare "near=DIR1" "far=DIR2,DIR3" --out DIR   # finished sweeps side by side

Each seed runs `python mlsh.py --seed S <flags> --out DIR/seed-S` in a
process of its own, so its numbers are bit for bit those of that command run
by hand. A seed whose folder already holds a results.json of the same
settings is not run again, and one stopped half-way resumes from its
checkpoint: an interrupted sweep carries on where it stopped. The summary
goes into DIR/sweep.json, DIR/sweep.md (the table, also printed),
DIR/sweep.png (AUC per seed) and DIR/curves.png (fine-tuning curves).
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

import plots
import run
import store
from measures import interval
from settings import METHODS, PRESETS, Settings, differences, make_family, run_settings

HERE = os.path.dirname(os.path.abspath(__file__))
MLSH = os.path.join(HERE, "mlsh.py")
COLUMNS = {**METHODS, "flat": "flat PPO (lr)"}    # the table's columns, in the order of settings.METHODS
NOT_HERE = {"--seed": "give the seeds with --seeds", "--load": "a sweep trains every seed itself",
            "--eval-only": "a sweep trains every seed itself", "--bench": "run python mlsh.py --bench by itself",
            "--replace": "a sweep never writes over a run: choose another --out, or move the folder away"}


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
    """The mlsh.py flags that give `config` (what differs from its env's defaults), seed and folder left out."""
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
    """What mlsh.py makes of `flags` (a Config), or BadInput with mlsh.py's own message, before any worker starts."""
    for flag in flags:
        name = flag.split("=")[0]
        if name in NOT_HERE:
            raise BadInput(f"{name} is not for a sweep: {NOT_HERE[name]}")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cfg, _ = run.parse_args(flags + ["--seed", "0"])
        make_family(cfg)                                  # a bad maze file is refused here too
    except SystemExit:
        raise BadInput(err.getvalue().strip().removeprefix("mlsh: ")) from None
    except ValueError as e:
        raise BadInput(str(e)) from None
    return cfg


def default_folder(cfg, grid, quick):
    """runs/sweep-<what> (runs/grid-<what> for a grid) beside sweep.py, <what> named as mlsh.py names
    its run's folder: the preset, or maze-<file name>, with -quick added for --quick (a smoke test
    never takes a real sweep's folder)."""
    what = os.path.basename(store.default_out(cfg, quick))
    return os.path.join(HERE, "runs", f"{'grid' if grid else 'sweep'}-{what}")


def parse_grid(items, flags):
    """['max-steps=50,100', 'macro=1,5'] -> [("max-steps", ["50", "100"]), ("macro", ["1", "5"])]."""
    grid = []
    for item in items:
        name, eq, values = item.partition("=")
        name, values = name.strip().lstrip("-"), [v.strip() for v in values.split(",")]
        if not eq or not name or not all(values):
            raise BadInput(f"--grid {item!r}: write NAME=V1,V2,... with the name of an mlsh.py flag, as macro=1,5,10")
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

def read_results(folder):
    path = os.path.join(folder, "results.json")
    with open(path) as f:
        return json.load(f)


def plan(seeds, cfg, out):
    """Which seeds are done, which resume from a checkpoint, which start afresh; refuse folders of other settings."""
    want = settings(dataclasses.asdict(cfg))
    family = make_family(cfg)
    done, todo = {}, []
    for s in seeds:
        folder = os.path.join(out, f"seed-{s}")
        ckpt = os.path.join(folder, "checkpoint.npz")
        if os.path.isfile(os.path.join(folder, "results.json")):
            res = read_results(folder)
            if settings(res["config"]) != want or res["config"]["seed"] != s:
                raise BadInput(f"{folder} holds a run of other settings ({differences(settings(res['config']), want)}):"
                               f" choose another --out, or move that folder away")
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
    """`python mlsh.py <flags> --seed S --out DIR/seed-S` in its own process, its output into the folder's log.txt."""
    folder = os.path.join(out, f"seed-{seed}")
    os.makedirs(folder, exist_ok=True)
    log = open(os.path.join(folder, "log.txt"), "a")
    cmd = [sys.executable, MLSH, *flags, "--seed", str(seed), "--out", folder, *extra]
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    # a session of its own: Ctrl-C reaches the sweep only, which then stops the workers itself; and
    # Ctrl-C's default restored, since a sweep started in the background by a script ignores it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, log, folder


def failure(folder, code):
    """The reason a seed failed: the last 'mlsh:' line (or last line) of its log."""
    with open(os.path.join(folder, "log.txt")) as f:
        lines = [line.strip() for line in f if line.strip()]
    said = [line for line in lines if line.startswith("mlsh:")] or lines[-1:] or ["no output"]
    return f"exit code {code}: {said[-1]}"


def run_seeds(seeds, cells, jobs, log=print):
    """Every seed of every cell, jobs at a time in one pool. cells: [(label, flags, cfg, out)], one per
    sweep (a grid has several; label "" for a lone sweep). Returns [{seed: results or {"error": why}}]."""
    runs, todo = [], []
    for c, (label, flags, cfg, out) in enumerate(cells):
        done, left = plan(seeds, cfg, out)
        runs.append(done)
        todo += [(c, s, extra) for s, extra in left]
        for s in done:
            log(f"{label + ' ' if label else ''}seed {s}: already done in {os.path.join(out, f'seed-{s}')}")
    resumed = [f"{cells[c][0] + ' ' if cells[c][0] else ''}{s}" for c, s, extra in todo if extra]
    total = len(seeds) * len(cells)
    log(f"sweep: {len(todo)} of {total} seeds to run, {jobs} at a time, into "
        f"{cells[0][3] if len(cells) == 1 else os.path.dirname(cells[0][3])}"
        + (f" (resuming seed {', '.join(resumed)} from the checkpoint in its folder)" if resumed else ""))
    running, t0, finished = {}, time.time(), 0
    try:
        while todo or running:
            while todo and len(running) < jobs:
                c, s, extra = todo.pop(0)
                running[c, s] = start(s, cells[c][1], extra, cells[c][3])
            time.sleep(0.2)
            for (c, s), (proc, fh, folder) in list(running.items()):
                if proc.poll() is None:
                    continue
                fh.close()
                del running[c, s]
                finished += 1
                ok = proc.returncode == 0 and os.path.isfile(os.path.join(folder, "results.json"))
                res = runs[c][s] = read_results(folder) if ok else {"error": failure(folder, proc.returncode)}
                elapsed = time.time() - t0
                eta = elapsed / finished * (len(todo) + len(running))
                what = ("  ".join(f"{METHODS[m]} {res['methods'][m]['auc']:.3f}" for m in ("mlsh", "flat")
                                  if m in res["methods"]) if ok else f"failed ({res['error']})")
                log(f"{cells[c][0] + ' ' if cells[c][0] else ''}seed {s}: {what}  ({sum(map(len, runs))}/{total} "
                    f"seeds done, elapsed {elapsed:.0f}s, eta {eta:.0f}s)")
    except KeyboardInterrupt:
        for proc, fh, _ in running.values():
            proc.send_signal(signal.SIGINT)                   # mlsh.py keeps its last complete round
        for proc, fh, _ in running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            fh.close()
        kept = sum(1 for r in runs for res in r.values() if "error" not in res)
        where = cells[0][3] if len(cells) == 1 else os.path.dirname(cells[0][3])
        raise KeyboardInterrupt(f"interrupted: {kept} of {total} seeds are finished and kept in {where}")
    return runs


# ---------------------------------------------------------------------------
# Summary: sweep.json, sweep.md, sweep.png
# ---------------------------------------------------------------------------

def row(seed, res):
    """One seed's line of sweep.json."""
    if "error" in res:
        return {"seed": seed, "error": res["error"]}
    keep = ("auc", "auc_ci", "success_auc", "iters_to_80", "curve")
    methods = {m: {k: res["methods"][m].get(k) for k in keep} for m in METHODS if m in res["methods"]}
    if "flat" in methods:
        methods["flat"]["lr"] = res["methods"]["flat"]["lr"]
    reached = res.get("reach") or {}
    history = res.get("meta_training") or [{}]
    return {"seed": seed, "methods": methods, "best_alone": res["skills_alone"]["best_per_task"],
            "best_master": reached.get("best_score", {}).get("mean"),
            "best_master_skills_only": reached.get("skills_only", {}).get("best_score", {}).get("mean"),
            "random_master_meets": reached.get("master_visit", {}).get("mean"),
            "random_walk_meets": reached.get("walk_visit", {}).get("mean"),
            "meta_success": [history[0].get("joint_success"), history[-1].get("joint_success")],
            "usage": history[-1].get("usage"), "seconds": res.get("seconds", {}).get("meta_training"),
            "cpu": res.get("cpu", "not recorded")}


def summary(rows):
    """Over the seeds that finished: how often MLSH's interval lies above flat's and every baseline's,
    the mean over seeds of MLSH's AUC minus flat's with a 95% bootstrap interval over seeds, the ratio of
    their mean AUCs (the gap), and on how many seeds MLSH scored at least twice flat with the intervals
    apart. What needs a method that was not evaluated (--methods) is None."""
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return {"n": 0, "failed": len(rows)}
    have = [m for m in METHODS if m in ok[0]["methods"]]
    low = lambda r, m: r["methods"][m]["auc_ci"][0]
    high = lambda r, m: r["methods"][m]["auc_ci"][1]
    s = {"n": len(ok), "failed": len(rows) - len(ok), "above_flat": None, "above_all": None,
         "mean_diff": None, "mean_diff_ci": None, "ratio": None, "twice_flat": None,
         "mean_auc": {m: float(np.mean([r["methods"][m]["auc"] for r in ok])) for m in have},
         "mean_success_auc": {m: float(np.mean([r["methods"][m]["success_auc"] for r in ok]))
                              if all(r["methods"][m]["success_auc"] is not None for r in ok) else None
                              for m in have}}
    if "mlsh" in have and "flat" in have:
        diff = [r["methods"]["mlsh"]["auc"] - r["methods"]["flat"]["auc"] for r in ok]
        s["mean_diff"], s["mean_diff_ci"] = interval(diff, np.random.default_rng(0))
        s["above_flat"] = sum(low(r, "mlsh") > high(r, "flat") for r in ok)
        auc = lambda r, m: r["methods"][m]["auc"]
        s["twice_flat"] = sum(low(r, "mlsh") > high(r, "flat") and auc(r, "mlsh") >= 2 * auc(r, "flat") for r in ok)
        if s["mean_auc"]["flat"] > 0:
            s["ratio"] = s["mean_auc"]["mlsh"] / s["mean_auc"]["flat"]
    if "mlsh_paper" in have and "flat" in have:
        s["paper_above_flat"] = sum(low(r, "mlsh_paper") > high(r, "flat") for r in ok)
    baselines = [m for m in have if m not in ("mlsh", "mlsh_paper")]
    if "mlsh" in have and baselines:
        s["above_all"] = sum(low(r, "mlsh") > max(high(r, m) for m in baselines) for r in ok)
    return s


def summary_line(s):
    if s["n"] == 0:
        return f"no seed finished ({s['failed']} failed)"
    failed = f"; {s['failed']} seed(s) failed" if s["failed"] else ""
    if s["above_flat"] is None:
        return (f"{s['n']} seeds: mean AUC " + ", ".join(f"{METHODS[m]} {a:.3f}" for m, a in s["mean_auc"].items())
                + f" (flat PPO not evaluated: --methods){failed}")
    return (f"{s['n']} seeds: MLSH's interval above flat PPO's on {s['above_flat']} of {s['n']}, above every "
            f"baseline's on {s['above_all']}; MLSH AUC minus flat's {s['mean_diff']:+.3f} "
            f"[{s['mean_diff_ci'][0]:+.3f}, {s['mean_diff_ci'][1]:+.3f}] (mean over seeds, 95% bootstrap "
            f"interval); mean AUC MLSH {s['mean_auc']['mlsh']:.3f}, flat {s['mean_auc']['flat']:.3f}"
            + (f"; the paper's master over the same skills: {s['mean_auc']['mlsh_paper']:.3f}, its interval above "
               f"flat's on {s['paper_above_flat']} of {s['n']}" if s.get("paper_above_flat") is not None else "")
            + failed)


def cpu_line(rows):
    """A line when the seeds ran on more than one CPU (empty when on one): per-seed numbers differ between
    CPUs, so such a table is read by its summary over seeds."""
    on = {}
    for r in rows:
        on.setdefault(r.get("cpu", "not recorded"), []).append(str(r["seed"]))
    if len(on) < 2:
        return ""
    return (f"These seeds ran on {len(on)} CPUs (" + "; ".join(f"{c}: seed {', '.join(s)}" for c, s in on.items())
            + "): per-seed numbers differ between CPUs; read the summary over seeds.\n")


def ratio_line(s):
    """The gap, in one line (empty without MLSH and flat PPO)."""
    if s.get("twice_flat") is None:
        return ""
    ratio = "flat's mean AUC is 0" if s["ratio"] is None else f"{s['ratio']:.2f}"
    return (f"MLSH / flat PPO (ratio of the mean AUCs): {ratio}; MLSH at least twice flat PPO with the "
            f"intervals apart on {s['twice_flat']} of {s['n']} seeds\n")


def table(rows, s):
    """The per-seed markdown table: bold where MLSH's interval lies above flat's."""
    shown = [m for m in METHODS if m in ("mlsh", "flat", "shared", "random_subs")
             or any(m in r.get("methods", {}) for r in rows)]
    columns = [COLUMNS[m] for m in shown] + ["success AUC MLSH / flat", "best sub-policy alone", "best master's score",
                                             "a random master / walk meets the goal",
                                             "meta-training success, first / last round"]
    lines = ["| seed | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 1) + "|"]
    frac = lambda x: "-" if x is None else f"{x:.2f}"
    skills = lambda r: r.get("best_master_skills_only")
    best_master = lambda r: frac(r.get("best_master")) + ("" if skills(r) is None else f" (skills alone {skills(r):.2f})")

    def cell(m, name):
        if name not in m:
            return "-"
        text = f"{m[name]['auc']:.3f} [{m[name]['auc_ci'][0]:.3f}, {m[name]['auc_ci'][1]:.3f}]"
        if name == "flat":
            return f"{text} ({m['flat']['lr']:g})"
        above = name == "mlsh" and "flat" in m and m["mlsh"]["auc_ci"][0] > m["flat"]["auc_ci"][1]
        return f"**{text}**" if above else text

    for r in rows:
        if "error" in r:
            lines.append(f"| {r['seed']} | failed: {r['error']} |" + " |" * (len(columns) - 1))
            continue
        m = r["methods"]
        success = " / ".join(frac(m[n]["success_auc"] if n in m else None) for n in ("mlsh", "flat"))
        meets = " / ".join(frac(r.get(k)) for k in ("random_master_meets", "random_walk_meets"))
        meta = " / ".join(frac(x) for x in r.get("meta_success", [None, None]))
        lines.append(f"| {r['seed']} | " + " | ".join(cell(m, n) for n in shown) + f" | {success} | "
                     f"{r['best_alone']:.2f} | {best_master(r)} | {meets} | {meta} |")
    if s["n"]:
        mean, succ = s["mean_auc"], s["mean_success_auc"]
        lines.append("| mean | " + " | ".join(f"{mean[n]:.3f}" if n in mean else "-" for n in shown) + " | "
                     + " / ".join(frac(succ.get(n)) for n in ("mlsh", "flat")) + " | | | | |")
    return "\n".join(lines) + "\n\n" + summary_line(s) + "\n" + ratio_line(s) + cpu_line(rows)


QUICK_NOTE = "--quick: a smoke test; these numbers say nothing about MLSH"


# Flat PPO learns from scratch: it does not depend on these settings, only on the rest (the task, the
# networks, PPO's settings, the evaluation, the seed)
NOT_FLATS = ("subpolicies", "macro", "master", "interrupt", "rounds", "tasks", "warmup", "joint", "sub_lr",
             "sub_ent", "master_lr", "methods", "flat_lrs", "preset")


def flat_source(folder, seeds, config):
    """{seed: flat PPO's results} from the sweep in `folder`, whose runs must hold flat PPO and differ from
    `config` only in settings flat PPO does not depend on (NOT_FLATS); else BadInput, before any run."""
    if "flat" in config["methods"]:
        raise BadInput("--flat-from takes flat PPO from another sweep: leave flat out of --methods")
    want = {k: v for k, v in config.items() if k not in NOT_FLATS}
    flat = {}
    for s in seeds:
        if not os.path.isfile(os.path.join(folder, f"seed-{s}", "results.json")):
            raise BadInput(f"--flat-from {folder}: no finished seed {s} there; run that sweep's seed first")
        res = read_results(os.path.join(folder, f"seed-{s}"))
        there = {k: v for k, v in settings(res["config"]).items() if k not in NOT_FLATS}
        if "flat" not in res["methods"] or there != want:
            why = differences(there, want) if there != want else "it has no flat PPO"
            raise BadInput(f"--flat-from {folder}: seed {s} is not flat PPO of these settings ({why})")
        flat[s] = res["methods"]["flat"]
    return flat


def with_flat(runs, flat):
    """Each finished seed's results with flat PPO's (of the same seed) from another sweep (flat_source)."""
    return {s: res if "error" in res else {**res, "methods": {**res["methods"], "flat": flat[s]}}
            for s, res in runs.items()}


def write_summary(out, runs, flags, config, log=print, flat_from=None):
    """sweep.json, sweep.md, sweep.png and curves.png in `out` from {seed: results}; prints the table.
    Runs made with --quick say so in the table's first line and in the figures' titles. flat_from: the
    sweep flat PPO's results came from (with_flat), named under the table."""
    rows = [row(s, runs[s]) for s in sorted(runs)]
    s = summary(rows)
    quick = any(res.get("quick") for res in runs.values())
    command = shlex.join(["python", "mlsh.py", *flags])
    os.makedirs(out, exist_ok=True)
    store.write_json(os.path.join(out, "sweep.json"), {"flags": flags, "config": config, "runs": rows, "summary": s,
                                                       "quick": quick})
    text = (f"**{QUICK_NOTE}**\n\n" * quick + f"`{command} --seed S`, seeds {', '.join(str(r['seed']) for r in rows)}"
            f"\n\n{table(rows, s)}" + (f"Flat PPO: each seed's from {near(flat_from)} (it does not depend on the "
                                       f"settings in which the two differ)\n" if flat_from else ""))
    command += f"\n({QUICK_NOTE})" * quick
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
            raise BadInput(f"{folder} holds no results.json: give folders that a finished mlsh.py run wrote")
        res = read_results(folder)
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
    """grid.json, grid.md and grid.png: per cell, every method's mean AUC over the seeds with 95% bootstrap
    intervals over seeds, MLSH's difference from flat PPO and its ratio to it, and on how many seeds MLSH's
    interval lay above flat's."""
    rng = np.random.default_rng(0)
    table = []
    for (label, _, _, folder), r in zip(cells, runs):
        rows = [row(s, r[s]) for s in sorted(r)]
        ok = [x for x in rows if "error" not in x]
        auc = {m: interval([x["methods"][m]["auc"] for x in ok], rng) if ok and m in ok[0]["methods"] else None
               for m in METHODS}
        table.append({"values": dict(v.split("=") for v in label.split()), "folder": folder, **auc,
                      "summary": summary(rows)})
    os.makedirs(out, exist_ok=True)
    store.write_json(os.path.join(out, "grid.json"), {"flags": flags, "grid": grid, "cells": table})
    names = [name for name, _ in grid]
    shown = [m for m in METHODS if any(c[m] is not None for c in table)]
    show = lambda a: "-" if a is None else f"{a[0]:.3f} [{a[1][0]:.3f}, {a[1][1]:.3f}]"
    quick = any(res.get("quick") for r in runs for res in r.values())
    lines = [f"**{QUICK_NOTE}**\n" * quick + f"`python mlsh.py {shlex.join(flags)} --seed S` over "
             + ", ".join(f"--{n} {' / '.join(v)}" for n, v in grid),
             "", "| " + " | ".join(names + [METHODS[m] for m in shown]) + " | MLSH minus flat | MLSH / flat "
             "| MLSH above flat | at least twice flat |", "|" + " --- |" * (len(names) + len(shown) + 4)]
    for c in table:
        s = c["summary"]
        diff = "-" if s.get("mean_diff") is None else \
            f"{s['mean_diff']:+.3f} [{s['mean_diff_ci'][0]:+.3f}, {s['mean_diff_ci'][1]:+.3f}]"
        ratio = "-" if s.get("ratio") is None else f"{s['ratio']:.2f}"
        count = lambda k: "-" if s.get(k) is None else f"{s[k]} of {s['n']}"
        lines.append("| " + " | ".join([c["values"][n] for n in names] + [show(c[m]) for m in shown])
                     + f" | {diff} | {ratio} | {count('above_flat')} | {count('twice_flat')} |")
    text = ("\n".join(lines) + "\n\nAUC: mean over meta-training seeds, 95% bootstrap interval over seeds. "
            "MLSH / flat: the ratio of the mean AUCs. At least twice flat: seeds on which MLSH's AUC was at least "
            "twice flat PPO's and its interval lay above flat's.\n")
    store.write_text(os.path.join(out, "grid.md"), text)
    if len(grid) <= 2:
        plots.plot_grid(os.path.join(out, "grid.png"), grid, table, " ".join(["python mlsh.py", *flags]))
    log("\n" + text)
    log(f"grid.json, grid.md{', grid.png' if len(grid) <= 2 else ''} in {out}; each cell's sweep in its folder")


USED = 0.05     # a skill "in use": it acted in at least this share of the last round's steps


def compare(steps):
    """Several settings side by side, one line each: [(name, [sweep folder, ...])] -> the table's text
    (compare.md), its numbers (compare.json) and each setting's rows for the figures. A setting's folders are
    pooled run by run (one goal held out per folder, say), so its intervals are 95% bootstrap intervals over
    runs. Also per setting, means over its runs: what the skills allow (the best master's score, `reach`),
    the skills in use at the end of meta-training, and its compute (env steps and seconds of meta-training)."""
    data, pooled, quick = [], [], False
    for name, folders in steps:
        rows, env_steps = [], []
        for folder in folders:
            if not os.path.isfile(os.path.join(folder, "sweep.json")):
                raise BadInput(f"{folder} holds no sweep.json: give folders a finished sweep.py wrote")
            with open(os.path.join(folder, "sweep.json")) as f:
                sweep = json.load(f)
            c, quick = sweep["config"], quick or sweep.get("quick", False)
            ok = [r for r in sweep["runs"] if "error" not in r]
            rows += ok
            env_steps += [(c["warmup"] + c["joint"]) * c["tasks"] * c["copies"] * c["steps"] * c["rounds"]] * len(ok)
        need = [m for m in ("mlsh", "mlsh_paper", "flat") if not rows or m not in rows[0]["methods"]]
        if need:
            raise BadInput(f"{name}: its runs lack {', '.join(need)}; compare sweeps that ran both masters and flat "
                           "PPO")
        ci = lambda x: interval(x, np.random.default_rng(0))     # as summary() draws its intervals
        auc = lambda m: [r["methods"][m]["auc"] for r in rows]
        above = lambda m: sum(r["methods"][m]["auc_ci"][0] > r["methods"]["flat"]["auc_ci"][1] for r in rows)
        cell = {m: ci(auc(m)) for m in METHODS if m in rows[0]["methods"]}
        for m in ("mlsh", "mlsh_paper"):
            cell[f"{m}_minus_flat"] = ci(np.subtract(auc(m), auc("flat")))
            cell[f"{m}_above_flat"] = above(m)
        mean = lambda k: None if any(r.get(k) is None for r in rows) else float(np.mean([r[k] for r in rows]))
        used = [None if r.get("usage") is None else (sum(u >= USED for u in r["usage"]), max(r["usage"])) for r in rows]
        data.append({"name": name, "folders": [near(f) for f in folders], "runs": len(rows), **cell,
                     "reach": mean("best_master"), "reach_skills_only": mean("best_master_skills_only"),
                     "seconds": mean("seconds"), "env_steps": float(np.mean(env_steps)),
                     "skills_used": None if None in used else [float(np.mean(u)) for u in zip(*used)]})
        pooled.append((name, rows))
    show = lambda a, sign="": f"{a[0]:{sign}.3f} [{a[1][0]:{sign}.3f}, {a[1][1]:{sign}.3f}]"
    shown = [m for m in METHODS if all(m in d for d in data)]
    frac = lambda x: "-" if x is None else f"{x:.2f}"
    used = lambda u: "-" if u is None else f"{u[0]:.1f} (most used {u[1]:.2f})"
    lines = ["| setting | runs | " + " | ".join(METHODS[m] for m in shown) + " | MLSH minus flat | the paper's master "
             "minus flat | runs with MLSH / the paper's master above flat | best master's score | skills in use "
             "| meta-training env steps, seconds |", "| --- " * (len(shown) + 8) + "|"]
    for d in data:
        lines.append(f"| {d['name']} | {d['runs']} | " + " | ".join(show(d[m]) for m in shown)
                     + f" | {show(d['mlsh_minus_flat'], '+')} | {show(d['mlsh_paper_minus_flat'], '+')} | "
                     f"{d['mlsh_above_flat']} / {d['mlsh_paper_above_flat']} of {d['runs']} | {frac(d['reach'])}"
                     + ("" if d["reach_skills_only"] is None else f" (skills alone {d['reach_skills_only']:.2f})")
                     + f" | {used(d['skills_used'])} | {d['env_steps'] / 1e6:.1f} M, "
                     + ("-" if d["seconds"] is None else f"{d['seconds']:.0f} s") + " |")
    text = (f"**{QUICK_NOTE}**\n\n" * quick + "\n".join(lines) + "\n\nAUC: mean over runs (meta-training seeds; "
            "a setting of several sweeps pools their runs), 95% bootstrap interval over runs. Above flat: runs on "
            "which the method's interval lay above flat PPO's. Best master's score: what the skills allow (reach; "
            "skills alone: without the single moves), mean over runs. Skills in use: "
            f"sub-policies that acted in at least {USED:.0%} of the last meta-training round's steps, mean over runs, "
            "and the most used one's share. Env steps and seconds: one run's meta-training.\n")
    return text, data, pooled


def write_compare(out, steps, log=print):
    """compare.json, compare.md, compare.png (one panel of fine-tuning curves per setting) and gaps.png (each
    setting's lead over flat PPO) in `out`."""
    text, data, pooled = compare(steps)
    store.check_writable(out)
    os.makedirs(out, exist_ok=True)
    store.write_json(os.path.join(out, "compare.json"), {"settings": data})
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
        raise BadInput(f"{message} (python sweep.py --help)")


def parse(argv):
    p = Parser(allow_abbrev=False, description="Run python mlsh.py over meta-training seeds, several at a time, "
               "and summarise them (sweep.json, sweep.md, sweep.png, curves.png). Every other flag goes to mlsh.py as it is "
               "(python mlsh.py --help).")
    p.add_argument("--seeds", help="seeds to run: 0-9, 0,3,7 or both (0-4,9)")
    p.add_argument("--jobs", type=int, help="seeds run at a time (default: the cores this process may use)")
    p.add_argument("--out", help="the sweep's folder; seed S runs in OUT/seed-S (default: runs/sweep-<preset>, or "
                                 "runs/sweep-maze-<file name> with --maze, beside mlsh.py; with --summarise, the "
                                 "folders' common parent)")
    p.add_argument("--summarise", nargs="+", metavar="DIR", help="no runs: summarise these finished run folders")
    p.add_argument("--list", action="store_true", help="no runs: print the mlsh.py command of every seed (of every "
                   "grid cell), one per line, for a cluster's scheduler; the same sweep command afterwards, or "
                   "--summarise, makes the tables from their folders")
    p.add_argument("--grid", nargs="+", metavar="NAME=V1,V2", help="a sweep for every combination of these mlsh.py "
                   "flag values (as macro=1,5,10), each in OUT/NAME-V_..., and grid.md/json/png over them "
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
        raise BadInput(f"--summarise takes folders only, not mlsh.py flags, --grid or --list ({' '.join(flags)})")
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
                runs = with_flat(runs, flat_source(args.flat_from, sorted(runs), config))
            out = os.path.abspath(args.out or os.path.commonpath([os.path.dirname(d) for d in folders]))
            store.check_writable(out)
            write_summary(out, runs, flags_of(config), config, flat_from=args.flat_from)
            return
        seeds = parse_seeds(args.seeds)
        grid = parse_grid(args.grid, flags) if args.grid else []
        cells = [(label, f, check_flags(f)) for label, f in grid_cells(grid, flags)]
        out = os.path.abspath(args.out or default_folder(cells[0][2], grid, "--quick" in flags))
        cells = [(label, f, cfg, os.path.join(out, label.replace("=", "-").replace(" ", "_")))
                 for label, f, cfg in cells]
        flat = [flat_source(args.flat_from, seeds, settings(dataclasses.asdict(cfg))) if args.flat_from else None
                for *_, cfg, _ in cells]                   # checked before any run
        if args.list:
            for label, f, cfg, folder in cells:
                for s in seeds:
                    print(shlex.join(["python", near(MLSH), *f, "--seed", str(s), "--out",
                                      near(os.path.join(folder, f"seed-{s}"))]))
            return
        for *_, folder in cells:
            store.check_writable(folder)
        jobs = args.jobs or len(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else os.cpu_count())
        runs = [r if f is None else with_flat(r, f) for r, f in zip(run_seeds(seeds, cells, jobs), flat)]
        for (label, f, cfg, folder), r in zip(cells, runs):
            write_summary(folder, r, f, settings(dataclasses.asdict(cfg)), log=print if not grid else lambda s: None,
                          flat_from=args.flat_from)
        if grid:
            write_grid(out, grid, cells, runs, flags)
    except (BadInput, ValueError) as e:
        print(f"sweep: {e}", file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt as e:
        print(f"\n{e or 'interrupted'}\ncarry on with: {shlex.join(['python', 'sweep.py', *argv])}")
        raise SystemExit(130)
    if any("error" in res for r in runs for res in r.values()):
        raise SystemExit(1)


def stop(signum, frame):
    """SIGTERM (kill PID) stops a sweep as Ctrl-C does, also one started in the background, which ignores Ctrl-C."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    main()
