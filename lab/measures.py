"""What a run measures besides the AUC's curves: a method's summary, each skill alone, what the skills
allow any master (reach), and the speed of rollouts and updates (--bench). It imports the algorithm
(mlsh.py); the algorithm never imports it."""
import time

import numpy as np

import envs
from lab import stream
from mlsh import Net, Runner, child_seed, interval, new_agent, sample, update


def band(y):
    """Mean curve of the rows of y and the half-width of its 95% band: 1.96 standard errors, the
    standard deviation over rows with ddof 1 (0 for a single row)."""
    y = np.asarray(y, dtype=float)
    half = 1.96 * y.std(axis=0, ddof=1) / np.sqrt(len(y)) if len(y) > 1 else np.zeros(y.shape[1])
    return y.mean(axis=0), half


def summarise(score, success):
    """A method's fine-tuning, (learners, iterations) each: its AUC (the mean over learners of each one's mean
    normalised return) with a 95% t-interval over learners (mlsh.interval, as python mlsh.py prints it),
    the success AUC, the mean curves with a band, and the first iteration with 80% success (None: never).

    success_auc is the mean success rate over the iterations: the paper's
    reward does not ask for the shortest path, so both are reported.
    """
    auc, ci = interval(score.mean(axis=1))
    hit80 = np.flatnonzero(success.mean(axis=0) >= 0.8)
    mean, half = band(score)
    return {"auc": auc, "auc_ci": ci, "success_auc": float(success.mean()),
            "curve": mean.round(4).tolist(),
            "curve_band": [(mean - half).clip(0, 1).round(4).tolist(),
                           (mean + half).clip(0, 1).round(4).tolist()],
            "success_curve": success.mean(axis=0).round(4).tolist(),
            "iters_to_80": int(hit80[0]) + 1 if len(hit80) else None}


def skills_alone(cfg, family, subs, iters=4):
    """The collapse diagnostic: each sub-policy acting alone, with no master, on each held-out task.

    Returns success (K, n_tasks): row k is what sub-policy k achieves by
    itself. Two alike rows are one skill learned twice. The mean over tasks
    of each column's best is what a master that knew the task could get by
    picking one sub-policy for the whole episode.
    """
    tasks, K = family.held_out(cfg.eval_split), subs.G
    n_tasks = len(tasks)
    rng = stream(cfg.seed, "skills_alone")
    env = family.make(np.tile(np.repeat(tasks, cfg.copies), K), cfg.eval_split, seed=child_seed(rng))
    # learner k * n_tasks + j is sub-policy k on task j, acting every step as a flat policy would
    alone = new_agent(rng, K * n_tasks, family, family.n_actions, cfg, 0.0)
    for w in alone.master.p:
        alone.master.p[w][...] = np.repeat(subs.p[w], n_tasks, axis=0)
    runner = Runner(env, K * n_tasks)
    success = [runner.run(alone, cfg.steps, rng).success for _ in range(iters)]
    return np.mean(success, axis=0).reshape(K, n_tasks)


def reach(cfg, family, subs, rollouts=32):
    """What the skills let each master do on goal tasks (family.goal_cells), by dynamic programming (None
    on other tasks).

    Every sub-policy k is run `rollouts` times for N steps from every cell.
    A master decides at steps 0, N, 2N, ..., so the best any master can do
    (even one that also knew the time) is a backward recursion over its
    decision times t = T - N, ..., N, 0, for every goal g at once:

        V_t(c, g) = max_k mean_r [ 1 / (t + tau)       if rollout r of k from c first meets g
                                                       at its step tau <= n_t = min(N, T - t)
                                   V_(t + n_t)(end, g) else, `end` being where it was then ]
        V_T = 0

    With the score d(s, g) / steps, the best expected score from start s is
    d(s, g) V_0(s, g); under the paper's reward (every step on g pays, the
    episode goes on) each choice earns its steps on g and the recursion
    always continues, and the score divides by the best return. The same
    recursion with 1 for a hit gives the best success; with the mean over k
    instead of the max, how often a uniformly random master (a fresh one)
    meets g; with K = 1 and uniformly random actions, how often a random walk
    (flat PPO at its start) does. For the options master each primitive
    action is one more choice that lasts one step, and it decides at every
    t = T - 1, ..., 0.
    Returns {master: {"best_score", "best_success", "random_meets"}} for the paper's master "mlsh" and
    "mlsh_options", and "random_walk_meets": per-goal arrays (n_cells,), averaged over starts when the
    start is random, NaN at the start cell.
    """
    if not family.goal_cells:
        return None
    maze, C, N, T, A = family.maze, family.maze.n_cells, cfg.macro, family.max_steps, family.n_actions
    rng = stream(cfg.seed, "reach")

    def first_meetings(logits_of, K, n, rollouts=rollouts):
        """Choice k run from every cell for n steps, `rollouts` times: (first, cells, n), where
        first[c, k, r, g] is the step (1..n) at which rollout r from cell c first met g, 0 if not,
        and cells[c, k, r, t] where it was after step t + 1."""
        env = family.make(np.zeros(C * K * rollouts, dtype=int), seed=child_seed(rng))
        env.autoreset = False                                   # goals do not end these rollouts
        env.reset()
        env.pos[:] = np.repeat(np.arange(C), K * rollouts)      # copy i starts at i // (K rollouts)
        k = np.tile(np.repeat(np.arange(K), rollouts), C)
        cells = np.empty((n, env.n), dtype=int)
        for t in range(n):
            env.step(sample(rng, logits_of(env.obs_at(env.pos), k)))
            cells[t] = env.pos
        cells = cells.T.reshape(C, K, rollouts, n)
        first = np.zeros((C, K, rollouts, C), dtype=np.int16)
        c, kk, r = np.indices((C, K, rollouts))
        for t in reversed(range(n)):                            # the earliest meeting written last
            first[c, kk, r, cells[..., t]] = t + 1
        return first, cells, n

    def visits(cells, m):
        """[c, k, r, g]: how many of the first m steps of rollout r of choice k from c end on g."""
        count = np.zeros(cells.shape[:3] + (C,))
        c, kk, r = np.indices(cells.shape[:3])
        for i in range(m):
            count[c, kk, r, cells[..., i]] += 1
        return count

    def recursion(choices, value_of_hit, over, every):
        """V_0 by backward induction over the decision times 0, every, 2 every, ... < T.
        value_of_hit=None: the paper's reward, 1 for every step on g, and the episode goes on."""
        V = {T: np.zeros((C, C))}
        for t in reversed(range(0, T, every)):
            per_choice = []
            for first, cells, n in choices:
                n_t = min(n, T - t)                             # T may cut a decision short
                later = V[t + n_t][cells[..., n_t - 1]]
                if value_of_hit is None:
                    per_choice.append((visits(cells, n_t) + later).mean(2))
                    continue
                hit = (first > 0) & (first <= n_t)
                per_choice.append(np.where(hit, value_of_hit(t + first), later).mean(2))
            V[t] = over(np.concatenate(per_choice, axis=1), axis=1)
            for done in [key for key in V if key > t + N]:     # no choice lasts longer than N
                del V[done]
        return V[0]                                             # (start cell, goal)

    score, hit = (lambda t: 1.0 / np.maximum(t, 1)), (lambda t: np.ones(t.shape))
    skills = [first_meetings(lambda obs, k: subs(obs[None])[k, np.arange(len(k))], subs.G, N)]
    walk = [first_meetings(lambda obs, k: np.zeros((len(k), A)), 1, N)]
    one = lambda obs, k: np.where(np.arange(A) == k[:, None], 0.0, -1e9)   # [options] A choices of one step
    noisy = family.slip or family.second_move                    # moves that may not go as meant
    moves = [first_meetings(one, A, 1, rollouts if noisy else 1)]
    masters = {"mlsh": (skills, N), "mlsh_options": (skills + moves, 1)}   # their choices, and how often they decide
    starts = np.arange(C) if family.start_cell is None else np.array([family.start_cell])

    def per_goal(V):
        return np.array([np.mean([V[s, g] for s in starts if s != g]) if set(starts) - {g}
                         else np.nan for g in range(C)])

    if family.reward == "every_step":                          # the score: return / best return
        best = lambda options, every: recursion(options, None, np.max, every) / np.maximum(
            envs.best_returns(maze, T, family.slip, family.second_move), 1e-9)
    else:                                                      # the score: d(s, g) / steps
        best = lambda options, every: maze.dist * recursion(options, score, np.max, every)
    out = {m: {"best_score": per_goal(best(choices, every)),
               "best_success": per_goal(recursion(choices, hit, np.max, every)),
               "random_meets": per_goal(recursion(choices, hit, np.mean, every))}
           for m, (choices, every) in masters.items()}
    out["random_walk_meets"] = per_goal(recursion(walk, hit, np.mean, N))
    return out


# ---- Benchmark: rollout throughput and seconds per PPO iteration ------------

def bench(cfg, log=print):
    """Env steps per second with the policy's forward pass, and seconds per PPO iteration."""
    rng = np.random.default_rng(cfg.seed)
    family = envs.GoalTasks()
    A, K = family.n_actions, cfg.subpolicies
    figures = {}
    for copies in (64, 256):
        subs = Net.new(rng, K, family, A, cfg, 1e-3)
        for name, agent in [("flat", new_agent(rng, 1, family, A, cfg, 1e-3)),
                            ("mlsh", new_agent(rng, 1, family, K, cfg, 1e-3, cfg.macro, subs=subs))]:
            runner = Runner(family.make(family.sample(rng, copies), seed=0), 1)
            runner.run(agent, 16, rng)                                  # warm up
            t0 = time.perf_counter()
            runner.run(agent, 256, rng)
            rate = copies * 256 / (time.perf_counter() - t0)
            figures[f"rollout_{name}_{copies}"] = rate
            log(f"rollout  {name:4s} {copies:3d} envs: {rate:9,.0f} env steps/s "
                f"(policy forward included)")
    M, E = cfg.tasks, cfg.copies
    subs = Net.new(rng, K, family, A, cfg, cfg.sub_lr, out_scale=0.01)
    runner = Runner(family.make(np.repeat(family.sample(rng, M), E), seed=0), M)
    for name, agent, joint in [
            ("flat", new_agent(rng, M, family, A, cfg, 3e-3), False),
            ("mlsh", new_agent(rng, M, family, K, cfg, cfg.master_lr, cfg.macro, subs, True), True)]:
        times = []
        for _ in range(6):
            t0 = time.perf_counter()
            update(agent, runner.run(agent, cfg.steps, rng), cfg, rng, train_subs=joint)
            times.append(time.perf_counter() - t0)
        figures[f"iteration_{name}"] = float(np.median(times[1:]))
        log(f"PPO iteration {name:4s} ({M} tasks x {E} envs x {cfg.steps} steps = "
            f"{M * E * cfg.steps} steps): {figures[f'iteration_{name}']:.3f} s  "
            f"(rollout and update{', joint: θ and φ' if joint else ''})")
    return figures

