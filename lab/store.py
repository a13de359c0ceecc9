"""What a run keeps on disk, and how: files written whole or not at all, the code a run was made by,
checkpoints, run folders that never replace one another, the evaluations a stopped run has finished,
and results in today's format (older folders read through the map of their names)."""
import ast
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import zlib

import numpy as np

import envs
import mlsh
from lab.settings import differences, run_settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # the repository: mlsh.py, runs/
FORMAT = 2          # results.json's format: 2 names the paper's master mlsh and the options master mlsh_options


# ---- Files written whole or not at all ---------------------------------------

@contextlib.contextmanager
def atomic(path, mode="w"):
    """Open a temporary file beside `path` to write; only once it is whole, rename it to `path`
    (an interrupted write leaves the old file as it was)."""
    tmp = path + ".tmp"
    with open(tmp, mode) as f:
        yield f
    os.replace(tmp, path)


def cpu():
    """The model name of the CPU this process runs on, which results.json records: float32 kernels round
    differently from one CPU to another, so per-seed numbers do too."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine() or "unknown"


def write_json(path, data):
    with atomic(path) as f:
        json.dump(data, f, indent=1)


def write_text(path, text):
    with atomic(path) as f:
        f.write(text)


def save_npz(path, arrays, meta):
    """Arrays and a JSON-able dict as one .npz (the dict as text, so no pickle is ever needed)."""
    with atomic(path, "wb") as f:
        np.savez(f, **arrays, meta=np.array(json.dumps(meta)))


def save_png(plt, fig, path):
    """Write a matplotlib figure as a PNG, and close it."""
    with atomic(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def make_folder(folder):
    """Make the output folder (check_writable has said it can be made); ValueError in one line if the
    system refuses it after all (a name too long, a path under /proc)."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot make the output folder {folder} ({e.strerror}): choose another with --out") from None


# ---- The code a run was made by ------------------------------------------------

def code_hash(path):
    """A hash of a Python file's syntax tree with its docstrings dropped: an edit of a comment, a docstring
    or the layout is no change; an edit of what runs is."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def code(family):
    """{file: code_hash} of the code that makes a run's numbers: mlsh.py, envs.py, and the module of a
    family of the user's own."""
    files = [mlsh.__file__, envs.__file__]
    module = sys.modules[type(family).__module__]
    if module is not envs and getattr(module, "__file__", None):
        files.append(module.__file__)
    return {os.path.basename(f): code_hash(f) for f in files}


def changed(saved, now):
    """The files whose code differs between a run's record (`saved`, None for a run that kept none) and now,
    as words ('' when none)."""
    if saved is None:
        return "an older run, whose code is not recorded"
    files = [f for f in sorted(set(saved) | set(now)) if saved.get(f) != now.get(f)]
    return "" if not files else " and ".join(files) + (" have" if len(files) > 1 else " has") + " changed since"


# ---- Checkpoints: the sub-policies and the config they were trained with ----

SHAPE_FIELDS = ("env", "family", "max_steps", "slip", "second_move", "random_start", "start_cell", "subpolicies",
                "macro", "hidden", "layers")
FREE_ON_RESUME = ("rounds", "eval_iters", "eval_seeds", "flat_lr", "flat_lrs", "out", "maze", "rooms", "preset",
                  "eval_split", "methods", "random_subs_master", "interrupt")      # may differ when resuming


def save_checkpoint(path, cfg, family, subs, history, rng, env_rng, seconds=0.0):
    """Sub-policies, their Adam state, the config, the maze, the code, the round records, both
    generators' states (meta-training's and its env's) and the seconds meta-training took so far, as
    one .npz of plain arrays."""
    arrays = {f"subs.{k}": v for k, v in subs.p.items()}
    arrays.update({f"adam_m.{k}": v for k, v in subs.opt.m.items()})
    arrays.update({f"adam_v.{k}": v for k, v in subs.opt.v.items()})
    arrays["adam_t"] = np.array(subs.opt.t)
    meta = {"config": dataclasses.asdict(cfg), "maze": family.maze.rows, "code": code(family),
            "history": history, "rng": rng.bit_generator.state, "env_rng": env_rng.bit_generator.state,
            "seconds": seconds}
    save_npz(path, arrays, meta)


def load_checkpoint(path, cfg, family, resume):
    """Read a checkpoint (never unpickling) and refuse it, saying what differs, if it does not fit.

    resume=True (carry on meta-training): every setting but those in FREE_ON_RESUME must match, and
    so must the code; otherwise (evaluate only) the env and the hierarchy's shape must. Returns the
    sub-policies' weights and Adam state, the round records, both generators' states and the code
    that made it.
    """
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path}: no such file "
                         f"(a run writes its folder's checkpoint.npz, as runs/<preset>/checkpoint.npz)")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":                      # every .npz is a zip file
            raise ValueError(f"checkpoint {path} is not a checkpoint (.npz) file: "
                             f"use one that a run wrote, or train anew without --load")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            part = lambda prefix: {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}
            params, m, v, t = part("subs."), part("adam_m."), part("adam_v."), z["adam_t"]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"checkpoint {path} holds pickled objects, which are never loaded: "
                             f"use a checkpoint that a run wrote") from None
        raise ValueError(f"checkpoint {path} is damaged or not a checkpoint ({e}): "
                         f"use another, or train anew without --load") from None
    except Exception as e:   # a truncated zip, a missing entry, bad JSON: the same to the user
        raise ValueError(f"checkpoint {path} is damaged or not a checkpoint ({type(e).__name__}: "
                         f"{e}): use another, or train anew without --load") from None
    saved, now = run_settings(upgrade_config(meta["config"])), run_settings(dataclasses.asdict(cfg))
    keys = [k for k in now if k not in FREE_ON_RESUME] if resume else SHAPE_FIELDS
    diffs = differences({k: saved.get(k) for k in keys}, {k: now[k] for k in keys})
    if meta["maze"] != family.maze.rows:
        diffs += ("; " if diffs else "") + "its maze layout is not this run's"
    if diffs:
        raise ValueError(f"checkpoint {path} does not fit this run: {diffs}. "
                         f"Give the flags it was trained with, or train anew without --load")
    other = changed(meta.get("code"), code(family))
    if resume and other:
        raise ValueError(f"checkpoint {path} was made by other code ({other}): its meta-training cannot be "
                         f"carried on by this code; train anew (--replace, or another --out), or evaluate it "
                         f"with --eval-only")
    if resume and len(meta["history"]) > cfg.rounds:     # carrying on never shortens a run's history
        raise ValueError(f"checkpoint {path} holds {len(meta['history'])} rounds, more than --rounds {cfg.rounds}: "
                         f"give --rounds {len(meta['history'])} or more, or --eval-only to evaluate it as it is")
    opt = mlsh.Adam(params, cfg.sub_lr)
    opt.m, opt.v, opt.t = m, v, int(t)
    return {"subs": params, "opt": opt, "history": meta["history"], "rng": meta["rng"],
            "env_rng": meta["env_rng"], "seconds": meta.get("seconds", 0.0),    # (older checkpoints: no seconds)
            "config": meta["config"], "code": meta.get("code")}


# ---- Run folders: each kind of run its own, and none replaced by another ----

def default_out(cfg, quick):
    """Each kind of run has a folder of its own in runs/ at the repository's root: runs/<preset> (or
    <env>, for a family with no preset of the lab's), runs/maze-<file name> for --maze,
    runs/family-<Class> for --family, each with -quick added for --quick."""
    name = (f"maze-{os.path.splitext(os.path.basename(cfg.maze))[0]}" if cfg.maze else
            f"family-{cfg.family.rpartition(':')[2]}" if cfg.family else cfg.preset or cfg.env)
    return os.path.join(ROOT, "runs", name + "-quick" * quick)


def kept_run(out, cfg, opts, now_code):
    """What the folder `out` holds for this run, read before anything is written:

        "empty"        nothing of a run (or --replace): start
        "finished"     a finished run of these very settings and this code (its results.json): nothing to do
        "interrupted"  a run of these settings and this code that stopped before its results: carry on
                       from its checkpoint (or, with --eval-only, from the evaluations it kept)
        "extend"       --load of the folder's own checkpoint: carry it on (load_checkpoint checks the fit)

    Raises ValueError, saying what to do, where this run would replace another's (a run of other settings
    or made by other code: its results.json, its checkpoint, or the evaluations kept of a run that
    stopped), or a checkpoint that --load of another file would write over. So no command shortens a
    run's history, and none passes a run of other code off as this code's."""
    if opts.replace:
        return "empty"
    res, ckpt, kept = (os.path.join(out, f) for f in ("results.json", "checkpoint.npz", KEPT))
    if opts.load and not opts.eval_only and os.path.abspath(opts.load) == ckpt:
        return "extend"
    try:
        if os.path.isfile(res):
            with open(res) as f:
                saved = json.load(f)
        elif os.path.isfile(ckpt):
            with np.load(ckpt, allow_pickle=False) as z:
                saved = json.loads(str(z["meta"]))
        elif os.path.isfile(kept):
            saved = read_kept(kept)[0]
        else:
            return "empty"
        config = saved["config"]
    except Exception as e:   # unreadable: still someone's run
        raise ValueError(f"{out} holds a run that cannot be read ({type(e).__name__}) and this one would "
                         f"replace it: choose another --out, or give --replace to write over it") from None
    old, new = run_settings(upgrade_config(config)), run_settings(dataclasses.asdict(cfg))
    diffs = differences(old, new)
    if diffs:
        carry = (f"; to carry on its meta-training with these settings, give --load {ckpt}"
                 if os.path.isfile(ckpt) and not opts.eval_only
                 and all(k in FREE_ON_RESUME for k in old if old[k] != new.get(k)) else "")
        raise ValueError(f"{out} holds a run of other settings ({diffs}): choose another --out, or give "
                         f"--replace to write over it{carry}")
    other = changed(saved.get("code"), now_code)
    if other:
        raise ValueError(f"{out} holds a run of these settings made by other code ({other}): give --replace to "
                         f"run it again with this code, or choose another --out")
    if os.path.isfile(res):
        return "finished"
    if opts.load and not opts.eval_only and os.path.isfile(ckpt):
        raise ValueError(f"{out} holds the checkpoint of a run of these settings that stopped, and --load "
                         f"{opts.load} would write over it: leave out --load (the same command carries that run "
                         f"on), choose another --out, or give --replace")
    return "interrupted"


def check_writable(folder):
    """Make sure the output folder can be made and written, before any training; nothing is created
    (a refused run leaves no folder behind)."""
    parent = os.path.abspath(folder)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        why = "not a folder" if not os.path.isdir(parent) else "not writable"
        raise ValueError(f"cannot write into the output folder {folder} ({parent} is {why}): "
                         f"choose another with --out")


# ---- Evaluations kept while a run evaluates: a stopped one carries on -------

KEPT = "evaluation-so-far.npz"     # in a run's folder while it evaluates: the methods finished


def kept_key(cfg, subs, now_code):
    """What kept evaluations were made for: these settings, this code and these very sub-policies."""
    return {"config": run_settings(dataclasses.asdict(cfg)), "code": now_code,
            "subs": zlib.crc32(b"".join(subs.p[k].tobytes() for k in sorted(subs.p)))}


def method_key(name, lr):
    """A fine-tuning's key among the kept ones: its method and learning rate, as 'flat@0.01'."""
    return f"{name}@{lr:g}"


def save_kept(path, key, kept):
    """kept: {method_key: (score, success, learner 0's master weights)}, the fine-tunings finished."""
    arrays = {}
    for k, (score, success, master) in kept.items():
        arrays.update({f"{k}/score": score, f"{k}/success": success})
        arrays.update({f"{k}/master/{w}": v for w, v in master.items()})
    save_npz(path, arrays, {**key, "kept": list(kept)})


def kept_for(path, key):
    """The evaluations kept in `path` for `key` (kept_key), or {} (none, other ones, unreadable: kept_run
    lets an unreadable file be replaced only with --replace)."""
    try:
        saved, kept = read_kept(path) or (None, {})
    except Exception:
        return {}
    return kept if saved == key else {}


def read_kept(path):
    """(the key it was kept for, {method_key: (score, success, learner 0's master)}) from a save_kept file,
    or None when there is none. Raises if it cannot be read."""
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        part = lambda prefix: {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}
        kept = {k: (z[f"{k}/score"], z[f"{k}/success"], part(f"{k}/master/")) for k in meta.pop("kept")}
        return meta, kept


# ---- Results in today's format: older folders through the map of their names ----

SCORES = "scores.npz"    # in a finished run's folder: every learner's curves, every method and rate
SCORES_FORMAT = 1


def save_scores(path, score, success, meta):
    """Every learner's fine-tuning, kept so that any statistic can be computed again without training:
    score and success {method_key: array (..., evaluation seeds, tasks, iterations)}, a run's (run.py) or a
    sweep's with the seed first (sweep.pool_scores), the normalised return as float32 and the success rate
    as float16; meta (JSON) says what made them."""
    arrays = {f"score.{k}": np.asarray(v, dtype=np.float32) for k, v in score.items()}
    arrays.update({f"success.{k}": np.asarray(v, dtype=np.float16) for k, v in success.items()})
    with atomic(path, "wb") as f:
        np.savez_compressed(f, **arrays, meta=np.array(json.dumps({"format": SCORES_FORMAT, **meta})))


def learners(x, eval_seeds):
    """A method's (learners, iterations) from mlsh.fine_tune as (evaluation seeds, tasks, iterations):
    learner e * tasks + j is evaluation seed e on held-out task j."""
    return np.reshape(x, (eval_seeds, -1, np.shape(x)[-1]))


def load_scores(path):
    """(meta, {method_key: score}, {method_key: success}) from a scores file (save_scores, or a row's
    pooled file with a leading seed axis); ValueError, in one line, for a file that is not one."""
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            score = {k.split(".", 1)[1]: z[k].astype(np.float64) for k in z.files if k.startswith("score.")}
            success = {k.split(".", 1)[1]: z[k].astype(np.float64) for k in z.files if k.startswith("success.")}
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a scores file ({type(e).__name__}: {e})") from None
    if meta.get("format") != SCORES_FORMAT:
        raise ValueError(f"{path}: scores of format {meta.get('format')}; this code reads {SCORES_FORMAT}")
    return meta, score, success


def commit():
    """The commit of the repository's code, with '+changes' when mlsh.py, envs.py or the lab differ from it
    (None outside a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mlsh.py", "envs.py", "lab/*.py"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def old_names(config):
    """The map of an older run's method names (results of no format) to today's: where its master was the
    options master (the default then), 'mlsh' was it and 'mlsh_paper' the paper's master."""
    return {"mlsh": "mlsh_options", "mlsh_paper": "mlsh"} if config.get("master") == "options" else {}


def upgrade_config(config):
    """An older run's config (one with the setting "master", gone since) in today's names: random_subs'
    master is the master it named, and its methods are listed as old_names reads them."""
    if "master" not in config:
        return config
    config, rename = dict(config), old_names(config)
    config["random_subs_master"] = config.pop("master")
    config["methods"] = [n for m in config.get("methods", []) for n in
                         (["mlsh", "mlsh_options"] if m == "mlsh" and rename else [m])]
    return config


def upgrade(results):
    """results.json's contents in today's format (FORMAT): an older run's methods, reach and config renamed
    through old_names, so that no number is shown under another method's name. ValueError for a format
    this code does not know."""
    version = results.get("format", 1)
    if version == FORMAT:
        return results
    if version != 1:
        raise ValueError(f"results of format {version}: this code reads formats 1 and {FORMAT}; use newer code")
    rename = old_names(results["config"])
    methods = {rename.get(m, m): r for m, r in results["methods"].items()}
    config = upgrade_config({"master": "paper", **results["config"]})
    out = {**results, "format": FORMAT, "config": config, "methods": methods, "code": None}
    reach = results.get("reach")
    if reach:
        first = {"best_score": reach["best_score"], "best_success": reach["best_success"],
                 "random_meets": reach["master_visit"]}
        out["reach"] = {"random_walk_meets": reach["walk_visit"]}
        if rename:   # the options master's maps, and the skills alone (the paper's master) beside them
            out["reach"].update(mlsh_options=first, mlsh=dict(reach["skills_only"], random_meets=None))
        else:
            out["reach"]["mlsh"] = first
    return out


def read_results(folder):
    """A run folder's results.json, in today's format (upgrade), with the folder it was read from."""
    with open(os.path.join(folder, "results.json")) as f:
        return {**upgrade(json.load(f)), "folder": os.path.abspath(folder)}
