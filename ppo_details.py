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
    "eo": {"adam_eps": 1e-5, "init": "orthogonal"},
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
    """Per (mode, preset, method): each variant's AUC (flat PPO: each seed's best rate, and which
    rates won) as the mean over seeds, and its difference from base on the same seeds, with 95%
    bootstrap intervals over seeds."""
    rows = [json.load(open(p)) for p in sorted(glob.glob(f"{OUT}/*.json"))]
    rng = np.random.default_rng(0)
    for mode, preset, method in sorted({(r["mode"], r["preset"], r["method"]) for r in rows}):
        auc = {}                                   # variant -> seed -> rate -> AUC
        for r in rows:
            if (r["mode"], r["preset"], r["method"]) == (mode, preset, method):
                auc.setdefault(r["variant"], {}).setdefault(r["seed"], {})[r["lr"]] = r["auc"]
        print(f"\n{mode} {preset} {method}")
        for v in [v for v in VARIANTS if v in auc]:
            best = {s: max(a.values()) for s, a in auc[v].items()}
            m, ci = interval(list(best.values()), rng)
            line = f"  {v:6s} {m:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] n{len(best)}"
            if mode.startswith("flat"):
                mean = lambda lr: np.mean([a[lr] for a in auc[v].values() if lr in a])
                line += "  rates " + " ".join(f"{lr:g}:{mean(lr):.3f}" for lr in sorted({lr for a in auc[v].values() for lr in a}))
            common = [s for s in best if s in auc.get("base", {})]
            if v != "base" and common:
                d, dci = interval([best[s] - max(auc["base"][s].values()) for s in common], rng)
                line += f"  vs base {d:+.3f} [{dci[0]:+.3f}, {dci[1]:+.3f}] n{len(common)}"
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
