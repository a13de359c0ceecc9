"""What a lab run fine-tunes beside MLSH's two masters (mlsh.learners): flat PPO at each rate of its sweep,
a master over untrained sub-policies, and the shared policy at flat PPO's rate."""
import numpy as np

import mlsh
from lab import stream


def learners(cfg, family, subs):
    """(method, learning rate, make_agent) for every method of cfg.methods but "shared" (which is pre-trained
    first: shared()), in the order of METHODS:

      mlsh, mlsh_options   the two masters over the learned φ, as python mlsh.py makes them
      random_subs          a master (cfg.random_subs_master's kind) over untrained sub-policies: what
                           learning φ bought
      flat                 flat PPO from scratch, once per rate in cfg.flat_lrs
    """
    out = [(name, lr, make) for name, lr, make in mlsh.learners(cfg, family, subs)
           if name in cfg.methods and name != "flat"]
    if "random_subs" in cfg.methods:
        untrained = mlsh.Net.new(stream(cfg.seed, "random_subs"), cfg.subpolicies, family, family.n_actions, cfg,
                                 cfg.sub_lr, 0.01)
        out.append(("random_subs", cfg.master_lr, mlsh.masters(cfg, family, untrained, cfg.random_subs_master)))
    if "flat" in cfg.methods:
        out += [("flat", lr, mlsh.flat(cfg, family, lr)) for lr in cfg.flat_lrs]
    return out


def best_rate(auc):
    """The best learning rate given the AUC per rate. Flat PPO's reported rate is chosen this way on
    validation tasks (cfg.flat_lr); on the test tasks the best is shown beside it, marked, never reported."""
    return max(auc, key=auc.get)


def pretrain_shared(cfg, family, lr, rng):
    """The "shared policy" baseline: one flat policy trained on the training tasks with exactly
    meta-training's env steps and task schedule."""
    M, E = cfg.tasks, cfg.copies
    agent = mlsh.new_agent(rng, 1, family, family.n_actions, cfg, lr)   # one learner over all M * E copies
    runner = mlsh.Runner(family.make(np.zeros(M * E, dtype=int), "train", seed=mlsh.child_seed(rng)), 1)
    for _ in range(cfg.rounds):
        runner.set_tasks(np.repeat(family.sample(rng, M), E))
        for _ in range(cfg.warmup + cfg.joint):
            mlsh.update(agent, runner.run(agent, cfg.steps, rng), cfg, rng)
    return agent


def shared(cfg, family, lr, pretrained=True):
    """The shared policy's (method, lr, make_agent): every learner starts from one flat policy pre-trained
    at lr (pretrain_shared); pretrained=False gives the same learners from scratch, a stand-in for kept
    results whose weights are put in place of theirs."""
    start = pretrain_shared(cfg, family, lr, stream(cfg.seed, "shared")) if pretrained else None
    return "shared", lr, mlsh.flat(cfg, family, lr, start)
