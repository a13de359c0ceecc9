"""PPO's implementation details, one at a time and together, on validation tasks (issue 31).

    python ppo_details.py flat --env fourrooms --seeds 0-4 --variants base eps ortho clip mbadv onelr vclip all
    python ppo_details.py masters --env rooms --seeds 0-2 --ckpt 'runs/ck/rooms-{seed}/checkpoint.npz' --variants ...
    python ppo_details.py masters --env rooms --seeds 0-2 --ckpt ... --variants all --tag -skills-all   (skills meta-trained with them)
    python ppo_details.py report

Each (mode, preset, seed, variant, method, rate) is one fine-tuning of 16 validation tasks x 5 evaluation seeds,
kept in its own file under runs/ppo-details (written whole; one already there is not run again, so the
same command carries on). flat: flat PPO at every rate of the preset's sweep, from the seed's fine_tune
stream. masters: both masters (options, the paper's) over the checkpoint's frozen sub-policies. report:
mean AUC over seeds per variant, with the 95% bootstrap interval over seeds.
"""
import argparse
import dataclasses
import glob
import json
import os
import sys
from multiprocessing import Pool

import numpy as np

import mlsh
import run
import store
from measures import interval
from settings import make_family

VARIANTS = {   # name: the Config fields it changes (value_lr "same": the value function at the policy's rate)
    "base": {},
    "eps": {"adam_eps": 1e-5},
    "ortho": {"init": "orthogonal"},
    "clip": {"grad_clip": 0.5},
    "mbadv": {"adv_norm": "minibatch"},
    "onelr": {"value_lr": "same"},
    "vclip": {"value_clip": 0.2},
    "all": {"adam_eps": 1e-5, "init": "orthogonal", "grad_clip": 0.5, "adv_norm": "minibatch"},
    "sb3": {"adam_eps": 1e-5, "init": "orthogonal", "grad_clip": 0.5, "adv_norm": "minibatch", "value_lr": "same"},
}
OUT = "runs/ppo-details"


def config(preset, seed, variant, lr):
    cfg, _ = run.parse_args(["--preset", preset, "--seed", str(seed), "--eval-split", "validation"])
    changes = dict(VARIANTS[variant])
    if changes.get("value_lr") == "same":
        changes["value_lr"] = lr
    return dataclasses.replace(cfg, **changes)


def job(task):
    mode, preset, seed, variant, method, lr, ckpt, tag = task
    path = f"{OUT}/{mode}{tag}-{preset}-{seed}-{variant}-{method}-{lr:g}.json"
    if os.path.exists(path):
        return path
    cfg = config(preset, seed, variant, lr)
    family = make_family(cfg)
    if mode == "flat":
        make_agent = mlsh.flat(cfg, family, lr)
    else:
        kept = store.load_checkpoint(ckpt.format(seed=seed), cfg, family, resume=False)
        subs = mlsh.Net(kept["subs"], cfg.sub_lr, one_hot=family.one_hot)
        make_agent = mlsh.masters(cfg, family, subs, options=method == "mlsh")
    score, success, _ = mlsh.fine_tune(cfg, family, make_agent, mlsh.stream(cfg.seed, "fine_tune"))
    store.write_json(path, {"mode": mode + tag, "preset": preset, "seed": seed, "variant": variant, "method": method,
                            "lr": lr, "auc": float(score.mean()), "per_learner": score.mean(1).round(5).tolist()})
    return path


def seeds(text):
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def report():
    rows = [json.load(open(p)) for p in sorted(glob.glob(f"{OUT}/*.json"))]
    keys = sorted({(r["mode"], r["preset"], r["method"], r["lr"]) for r in rows})
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    rng = np.random.default_rng(0)
    for mode, preset, method, lr in keys:
        line = f"{mode:8s} {preset:10s} {method:10s} {lr:<6g}"
        for v in variants:
            x = [r["auc"] for r in rows if (r["mode"], r["preset"], r["method"], r["lr"], r["variant"])
                 == (mode, preset, method, lr, v)]
            if x:
                m, ci = interval(x, rng)
                line += f" | {v} {m:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] n{len(x)}"
        print(line)
    # flat PPO's best rate per variant and seed: the mean over seeds of each seed's best
    for preset in sorted({r["preset"] for r in rows if r["mode"] == "flat"}):
        line = f"flat best rate, {preset}:"
        for v in variants:
            by_seed = {}
            for r in rows:
                if (r["mode"], r["preset"], r["variant"]) == ("flat", preset, v):
                    by_seed.setdefault(r["seed"], {})[r["lr"]] = r["auc"]
            best = [max(a.values()) for a in by_seed.values()]
            if best:
                m, ci = interval(best, rng)
                line += f" | {v} {m:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] n{len(best)}"
        print(line)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["flat", "masters", "report"])
    p.add_argument("--env", default="fourrooms", help="preset")
    p.add_argument("--seeds", type=seeds, default=[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--ckpt", default="")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--tag", default="", help="masters: names the checkpoints' set in the files, as -skills-all")
    a = p.parse_args()
    if a.mode == "report":
        return report()
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"ppo_details: unknown variants {unknown}; choose from {list(VARIANTS)}")
    os.makedirs(OUT, exist_ok=True)
    lrs = run.parse_args(["--preset", a.env])[0].flat_lrs
    if a.env == "fourrooms":   # the preset's default run tries one rate; the sweeps' full test four
        lrs = mlsh.Config.flat_lrs
    tasks = [(a.mode, a.env, s, v, "flat", lr, "", "") for v in a.variants for s in a.seeds for lr in lrs] \
        if a.mode == "flat" else \
        [(a.mode, a.env, s, v, m, 0.01, a.ckpt, a.tag) for v in a.variants for s in a.seeds for m in ("mlsh", "mlsh_paper")]
    with Pool(a.jobs) as pool:
        for path in pool.imap_unordered(job, tasks):
            print(path, flush=True)


if __name__ == "__main__":
    main()
