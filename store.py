"""What a run keeps on disk, and how: files written whole or not at all, checkpoints, run folders
that never replace one another, and the evaluations a stopped run has finished. It imports the
algorithm (mlsh.py); the algorithm never imports it."""
import contextlib
import dataclasses
import json
import os
import platform
import zlib

import numpy as np

from mlsh import Adam
from settings import differences, run_settings


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


# ---- Checkpoints: the sub-policies and the config they were trained with ----

SHAPE_FIELDS = ("env", "max_steps", "slip", "second_move", "random_start", "start_cell", "subpolicies",
                "macro", "hidden", "layers")
FREE_ON_RESUME = ("rounds", "eval_iters", "eval_seeds", "flat_lrs", "out", "maze", "rooms", "preset",
                  "eval_split", "methods", "master", "interrupt")      # may differ when resuming


def save_checkpoint(path, cfg, family, subs, history, rng, env_rng, seconds=0.0):
    """Sub-policies, their Adam state, the config, the maze, the round records, both generators'
    states (meta-training's and its env's) and the seconds meta-training took so far, as one .npz
    of plain arrays."""
    arrays = {f"subs.{k}": v for k, v in subs.p.items()}
    arrays.update({f"adam_m.{k}": v for k, v in subs.opt.m.items()})
    arrays.update({f"adam_v.{k}": v for k, v in subs.opt.v.items()})
    arrays["adam_t"] = np.array(subs.opt.t)
    meta = {"config": dataclasses.asdict(cfg), "maze": family.maze.rows,
            "history": history, "rng": rng.bit_generator.state, "env_rng": env_rng.bit_generator.state,
            "seconds": seconds}
    save_npz(path, arrays, meta)


def load_checkpoint(path, cfg, family, resume):
    """Read a checkpoint (never unpickling) and refuse it, saying what differs, if it does not fit.

    resume=True (carry on meta-training): every setting but those in
    FREE_ON_RESUME must match; otherwise (evaluate only) the env and the
    hierarchy's shape must. Returns the sub-policies' weights and Adam state, the round records
    and both generators' states.
    """
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path}: no such file "
                         f"(a run writes its folder's checkpoint.npz, as runs/<preset>/checkpoint.npz)")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":                      # every .npz is a zip file
            raise ValueError(f"checkpoint {path} is not a checkpoint (.npz) file: "
                             f"use one that mlsh.py wrote, or train anew without --load")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            part = lambda prefix: {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}
            params, m, v, t = part("subs."), part("adam_m."), part("adam_v."), z["adam_t"]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"checkpoint {path} holds pickled objects, which are never loaded: "
                             f"use a checkpoint that mlsh.py wrote") from None
        raise ValueError(f"checkpoint {path} is damaged or not a checkpoint ({e}): "
                         f"use another, or train anew without --load") from None
    except Exception as e:   # a truncated zip, a missing entry, bad JSON: the same to the user
        raise ValueError(f"checkpoint {path} is damaged or not a checkpoint ({type(e).__name__}: "
                         f"{e}): use another, or train anew without --load") from None
    saved, now = run_settings(meta["config"]), run_settings(dataclasses.asdict(cfg))
    keys = [k for k in now if k not in FREE_ON_RESUME] if resume else SHAPE_FIELDS
    diffs = differences({k: saved.get(k) for k in keys}, {k: now[k] for k in keys})
    if meta["maze"] != family.maze.rows:
        diffs += ("; " if diffs else "") + "its maze layout is not this run's"
    if diffs:
        raise ValueError(f"checkpoint {path} does not fit this run: {diffs}. "
                         f"Give the flags it was trained with, or train anew without --load")
    if resume and len(meta["history"]) > cfg.rounds:     # carrying on never shortens a run's history
        raise ValueError(f"checkpoint {path} holds {len(meta['history'])} rounds, more than --rounds {cfg.rounds}: "
                         f"give --rounds {len(meta['history'])} or more, or --eval-only to evaluate it as it is")
    opt = Adam(params, cfg.sub_lr)
    opt.m, opt.v, opt.t = m, v, int(t)
    return {"subs": params, "opt": opt, "history": meta["history"], "rng": meta["rng"],
            "env_rng": meta["env_rng"], "seconds": meta.get("seconds", 0.0),    # (older checkpoints: no seconds)
            "config": meta["config"]}



# ---- Run folders: each kind of run its own, and none replaced by another ----

def default_out(cfg, quick):
    """Each kind of run has a folder of its own beside mlsh.py: runs/<preset>, runs/maze-<file
    name> for --maze, each with -quick added for --quick."""
    name = f"maze-{os.path.splitext(os.path.basename(cfg.maze))[0]}" if cfg.maze else cfg.preset
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs", name + "-quick" * quick)


def kept_run(out, cfg, opts):
    """What the folder `out` holds for this run, read before anything is written:

        "empty"        nothing of a run (or --replace): start
        "finished"     a finished run of these very settings (its results.json): nothing to do
        "interrupted"  a run of these settings that stopped before its results: carry on from its
                       checkpoint (or, with --eval-only, from the evaluations it kept)
        "extend"       --load of the folder's own checkpoint: carry it on (load_checkpoint checks the fit)

    Raises ValueError, saying what to do, where this run would replace another's: a run of other
    settings (its results.json, its checkpoint, or the evaluations kept of a run that stopped), or a
    checkpoint that --load of another file would write over. So no command shortens a run's history."""
    if opts.replace:
        return "empty"
    res, ckpt, kept = (os.path.join(out, f) for f in ("results.json", "checkpoint.npz", KEPT))
    if opts.load and not opts.eval_only and os.path.abspath(opts.load) == ckpt:
        return "extend"
    try:
        if os.path.isfile(res):
            with open(res) as f:
                saved = json.load(f)["config"]
        elif os.path.isfile(ckpt):
            with np.load(ckpt, allow_pickle=False) as z:
                saved = json.loads(str(z["meta"]))["config"]
        elif os.path.isfile(kept):
            saved = read_kept(kept)[0]["config"]
        else:
            return "empty"
    except Exception as e:   # unreadable: still someone's run
        raise ValueError(f"{out} holds a run that cannot be read ({type(e).__name__}) and this one would "
                         f"replace it: choose another --out, or give --replace to write over it") from None
    saved, now = run_settings(saved), run_settings(dataclasses.asdict(cfg))
    diffs = differences(saved, now)
    if diffs:
        carry = (f"; to carry on its meta-training with these settings, give --load {ckpt}"
                 if os.path.isfile(ckpt) and not opts.eval_only
                 and all(k in FREE_ON_RESUME for k in saved if saved[k] != now.get(k)) else "")
        raise ValueError(f"{out} holds a run of other settings ({diffs}): choose another --out, or give "
                         f"--replace to write over it{carry}")
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


def kept_key(cfg, subs):
    """What kept evaluations were made for: these settings and these very sub-policies."""
    return {"config": run_settings(dataclasses.asdict(cfg)),
            "subs": zlib.crc32(b"".join(subs.p[k].tobytes() for k in sorted(subs.p)))}


def save_kept(path, key, kept):
    """kept: [(score, success, learner 0's master weights) per fine-tuning, in order]."""
    arrays = {}
    for j, (score, success, master) in enumerate(kept):
        arrays.update({f"{j}.score": score, f"{j}.success": success})
        arrays.update({f"{j}.master.{k}": w for k, w in master.items()})
    save_npz(path, arrays, key)


def kept_for(path, key):
    """The evaluations kept in `path` for `key` (kept_key), or [] (none, other ones, unreadable: kept_run
    lets an unreadable file be replaced only with --replace)."""
    try:
        saved, kept = read_kept(path) or (None, [])
    except Exception:
        return []
    return kept if saved == key else []


def read_kept(path):
    """(the key it was kept for, [(score, success, learner 0's master) per call]) from a
    save_kept file, or None when there is none. Raises if it cannot be read."""
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        part = lambda prefix: {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}
        calls = sum(k.endswith(".score") for k in z.files)
        return (json.loads(str(z["meta"])),
                [(z[f"{i}.score"], z[f"{i}.success"], part(f"{i}.master.")) for i in range(calls)])
