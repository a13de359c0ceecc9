"""Flat PPO from Stable-Baselines3 on this project's tasks, scored as the project scores flat PPO.

An outside check of the project's own flat PPO (mlsh.flat): the same held-out goals, budget, networks
and score, with the library's PPO. Not part of the product: it needs PyTorch, which the product never
does, and it is never run by CI. From the repository's root:

    python -m venv .venv-outside && .venv-outside/bin/pip install -r lab/outside/requirements.txt
    .venv-outside/bin/python -m lab.outside.sb3_check --preset fourrooms --seeds 0-4 --lrs 0.003 0.01 0.03
    .venv-outside/bin/python -m lab.outside.sb3_check --preset rooms --seeds 0-4 --lrs 0.003 0.01 0.03
    .venv-outside/bin/python -m lab.outside.sb3_check --report

Seed s is what the project's run at --seed s fine-tunes: every test goal (16) x 5 evaluation seeds,
80 learners, each its own network seed and env seed. The budget is the preset's: 16 copies x S steps,
30 iterations, 4 epochs of 4 minibatches, one 64-unit tanh layer for the policy and one for the value,
entropy 0.01, gamma 0.99, lambda 0.95, clip 0.2; the library's defaults otherwise (Adam eps 1e-5, one
optimiser for both networks, orthogonal initialisation, gradient norm clipped at 0.5, advantages
normalised per minibatch). An iteration's score is the mean normalised return of the episodes that
ended in it; a learner's AUC is the mean over the 30; a seed's AUC the mean over its 80 learners.
Each (preset, seed, rate) is kept in its own file under runs/outside (written whole; one already
there is not run again, so the same command carries on).
"""
import argparse
import glob
import json
import os

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

import envs  # the project's tasks
from lab import run, store  # the project's presets, as its command line reads them
from mlsh import interval

OUT = os.path.join(store.ROOT, "runs", "outside")


class ProjectEnv(gym.Env):
    """One copy of a project task (envs.SingleEnv) as a Gymnasium env: one-hot observation, 4 moves."""

    def __init__(self, family, task, split, seed):
        self.single = envs.SingleEnv(family.make(np.array([task]), split, seed=seed))
        self.task, self.first = task, True
        self.observation_space = gym.spaces.Box(0.0, 1.0, (family.obs_dim,), np.float32)
        self.action_space = gym.spaces.Discrete(family.n_actions)

    def reset(self, seed=None, options=None):
        # the env's own generator (seeded once) carries on from episode to episode
        obs, info = self.single.reset(options={"task": self.task} if self.first else None)
        self.first = False
        return obs.astype(np.float32), info

    def step(self, action):
        obs, r, term, trunc, info = self.single.step(int(action))
        return obs.astype(np.float32), r, term, trunc, {"score": float(info["score"])}


class Scores(BaseCallback):
    """Per iteration (rollout), the mean score of the episodes that ended in it."""

    def __init__(self):
        super().__init__()
        self.curve, self.ended = [], []

    def _on_step(self):
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done:
                self.ended.append(info["score"])
        return True

    def _on_rollout_end(self):
        self.curve.append(float(np.mean(self.ended)) if self.ended else 0.0)
        self.ended = []


def learner(cfg, family, task, lr, seed):
    """One fresh PPO learner on one held-out task; its 30 scores."""
    env_rng = np.random.default_rng([seed, task])
    venv = DummyVecEnv([lambda s=int(env_rng.integers(2**31)): ProjectEnv(family, task, cfg.eval_split, s)
                        for _ in range(cfg.copies)])
    batch = cfg.copies * cfg.steps
    model = PPO("MlpPolicy", venv, learning_rate=lr, n_steps=cfg.steps, batch_size=batch // cfg.minibatches,
                n_epochs=cfg.epochs, gamma=cfg.gamma, gae_lambda=cfg.lam, clip_range=cfg.clip,
                ent_coef=cfg.master_ent, seed=seed, device="cpu",
                policy_kwargs=dict(net_arch=dict(pi=[cfg.hidden] * cfg.layers, vf=[cfg.hidden] * cfg.layers),
                                   activation_fn=torch.nn.Tanh))
    scores = Scores()
    model.learn(total_timesteps=batch * cfg.eval_iters, callback=scores)
    return scores.curve[:cfg.eval_iters]


def one_seed(preset, seed, lr):
    path = os.path.join(OUT, f"{preset}-{seed}-{lr:g}.json")
    if os.path.exists(path):
        return json.load(open(path))
    cfg, _, family = run.parse_args(["--preset", preset, "--seed", str(seed)])
    goals = family.held_out(cfg.eval_split)
    curves = [learner(cfg, family, int(goal), lr, 1000 * (cfg.eval_seeds * seed + e) + g)
              for e in range(cfg.eval_seeds) for g, goal in enumerate(goals)]
    auc = np.mean(curves, axis=1)
    res = {"preset": preset, "seed": seed, "lr": lr, "auc": float(auc.mean()), "per_learner": auc.round(5).tolist(),
           "curve": np.mean(curves, axis=0).round(4).tolist(), "torch": torch.__version__}
    os.makedirs(OUT, exist_ok=True)
    store.write_json(path, res)
    return res


def report():
    rows = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(OUT, "*.json")))]
    for preset in sorted({r["preset"] for r in rows}):
        print(f"{preset}: mean AUC over seeds [95% t-interval over seeds]")
        for lr in sorted({r["lr"] for r in rows if r["preset"] == preset}):
            x = [r["auc"] for r in rows if (r["preset"], r["lr"]) == (preset, lr)]
            m, ci = interval(x)
            print(f"  rate {lr:<6g} {m:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  seeds {len(x)}")
        by_seed, rates = {}, {r["lr"] for r in rows if r["preset"] == preset}
        for r in rows:
            if r["preset"] == preset:
                by_seed.setdefault(r["seed"], {})[r["lr"]] = r["auc"]
        full = [max(a.values()) for a in by_seed.values() if set(a) == rates]      # seeds run at every rate
        if full:
            m, ci = interval(full)
            print(f"  each seed's best rate, over the seeds run at every rate: {m:.3f} [{ci[0]:.3f}, "
                  f"{ci[1]:.3f}]  seeds {len(full)}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="fourrooms", choices=["fourrooms", "rooms"])
    p.add_argument("--seeds", default="0-4", help="a range, as 0-4")
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2])
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    if a.report:
        return report()
    torch.set_num_threads(1)
    lo, _, hi = a.seeds.partition("-")
    for seed in range(int(lo), int(hi or lo) + 1):
        for lr in a.lrs:
            r = one_seed(a.preset, seed, lr)
            print(f"{a.preset} seed {seed} rate {lr:g}: AUC {r['auc']:.3f}", flush=True)


if __name__ == "__main__":
    main()
