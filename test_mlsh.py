"""Tests for mlsh.py and envs.py: gradients, advantages, environment semantics, learning.

Run: python -m pytest -q
"""
import ast
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import check_grad

import envs
import mlsh


# ---------------------------------------------------------------------------
# Gradients: hand-written backprop against finite differences (float64)
# ---------------------------------------------------------------------------

def _flat(p):
    return np.concatenate([p[k].ravel() for k in sorted(p)])


def _unflat(v, like):
    out, i = {}, 0
    for k in sorted(like):
        out[k] = v[i:i + like[k].size].reshape(like[k].shape)
        i += like[k].size
    return out


def _rel_err(f, g, p):
    x0 = _flat(p)
    return check_grad(f, g, x0, epsilon=1e-7) / np.linalg.norm(g(x0))


def test_mlp_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    p = mlsh.mlp_init(rng, 3, [5, 7, 6, 4], out_scale=0.7, dtype=np.float64)   # two tanh layers, G=3
    x = rng.standard_normal((3, 9, 5))
    target = rng.standard_normal((3, 9, 4))

    def f(v):
        out, _ = mlsh.mlp_forward(_unflat(v, p), x)
        return 0.5 * ((out - target) ** 2).sum()

    def g(v):
        q = _unflat(v, p)
        out, hs = mlsh.mlp_forward(q, x)
        return _flat(mlsh.mlp_backward(q, hs, out - target))

    err = _rel_err(f, g, p)
    assert err < 1e-6, f"mlp_backward's gradient is off: relative error {err:.2g} against finite differences"


def test_ppo_loss_and_value_loss_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    G, B, D, A = 2, 40, 6, 4
    pi = mlsh.mlp_init(rng, G, [D, 8, 8, A], out_scale=1.0, dtype=np.float64)
    vf = mlsh.mlp_init(rng, G, [D, 8, 1], dtype=np.float64)
    x = rng.standard_normal((G, B, D))
    act = rng.integers(0, A, (G, B))
    logits0, _ = mlsh.mlp_forward(pi, x)
    # old log probs spread around the current ones, so that some ratios are clipped and some not
    old_logp = np.take_along_axis(mlsh.log_softmax(logits0), act[..., None], -1)[..., 0] + rng.normal(0, 0.3, (G, B))
    adv = rng.standard_normal((G, B))
    ret = rng.standard_normal((G, B))
    w = rng.random((G, B))
    w /= w.sum(1, keepdims=True)
    ratio = np.exp(np.take_along_axis(mlsh.log_softmax(logits0), act[..., None], -1)[..., 0] - old_logp)
    clipped = np.abs(ratio - 1) > 0.2
    assert 0.1 < clipped.mean() < 0.9            # both branches of the clip are exercised
    both = dict(pi=pi, vf=vf)
    layout = {f"{n}.{k}": a for n, net in both.items() for k, a in net.items()}

    def split(v):
        q = _unflat(v, layout)
        return ({k[3:]: a for k, a in q.items() if k.startswith("pi.")},
                {k[3:]: a for k, a in q.items() if k.startswith("vf.")})

    def f(v):
        qp, qv = split(v)
        lp, _ = mlsh.ppo_loss(mlsh.mlp_forward(qp, x)[0], act, old_logp, adv, w, 0.2, 0.05)
        lv, _ = mlsh.value_loss(mlsh.mlp_forward(qv, x)[0], ret, w)
        return (lp + lv).sum()

    def g(v):
        qp, qv = split(v)
        out, hs = mlsh.mlp_forward(qp, x)
        _, dlogits = mlsh.ppo_loss(out, act, old_logp, adv, w, 0.2, 0.05)
        vout, vhs = mlsh.mlp_forward(qv, x)
        _, dv = mlsh.value_loss(vout, ret, w)
        gp, gv = mlsh.mlp_backward(qp, hs, dlogits), mlsh.mlp_backward(qv, vhs, dv)
        return np.concatenate([_flat(gp), _flat(gv)])

    err = _rel_err(f, g, layout)
    assert err < 1e-6, f"the PPO and value gradients are off: relative error {err:.2g} against finite differences"


def test_ppo_loss_clips_the_ratio_by_hand():
    # two actions, pi = (0.5, 0.5), action 0 taken with old probability 0.25: ratio r = 2
    logits, act, old_logp, w = np.zeros((1, 1, 2)), np.array([[0]]), np.log([[0.25]]), np.ones((1, 1))
    # A = +1: min(2 * 1, 1.2 * 1) = 1.2 is the clipped term, so no gradient
    loss, dlogits = mlsh.ppo_loss(logits, act, old_logp, np.array([[1.0]]), w, clip=0.2, ent_coef=0.0)
    assert np.allclose(loss, [-1.2]) and np.allclose(dlogits, 0.0)
    # A = -1: min(-2, -1.2) = -2 is the unclipped term; dL/dz = -r A (onehot - pi) = 2 (0.5, -0.5)
    loss, dlogits = mlsh.ppo_loss(logits, act, old_logp, np.array([[-1.0]]), w, clip=0.2, ent_coef=0.0)
    assert np.allclose(loss, [2.0]) and np.allclose(dlogits, [[[1.0, -1.0]]])
    # the entropy bonus of a uniform policy is log 2, and its gradient there is 0
    loss, dlogits = mlsh.ppo_loss(logits, act, np.log([[0.5]]), np.array([[0.0]]), w, clip=0.2, ent_coef=0.1)
    assert np.allclose(loss, [-0.1 * np.log(2)]) and np.allclose(dlogits, 0.0)


def test_log_softmax_is_stable_for_large_logits():
    z = np.array([[1000.0, 0.0, -1000.0], [5e5, 5e5, 0.0]])
    lp = mlsh.log_softmax(z)
    assert np.all(np.isfinite(lp))
    assert np.allclose(np.exp(lp).sum(-1), 1.0)
    assert np.allclose(lp[1, :2], np.log(0.5))


def test_sample_follows_the_probabilities():
    rng = np.random.default_rng(2)
    logits = np.log(np.array([[0.1, 0.2, 0.7]]).repeat(60000, axis=0))
    counts = np.bincount(mlsh.sample(rng, logits), minlength=3) / 60000
    assert np.allclose(counts, [0.1, 0.2, 0.7], atol=0.01)


# ---------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------

def test_discount_cumsum_example():
    assert np.allclose(mlsh.discount_cumsum(np.array([1.0, 1.0, 1.0]), 0.5), [1.75, 1.5, 1.0])


def test_gae_loop_by_hand():
    # one stream of 4 steps: the goal is reached at step 2 (terminated), the step limit hits at 3 (truncated)
    rew = np.array([[0.0], [0.0], [1.0], [0.0]])
    val = next_val = np.full((4, 1), 0.5)
    term = np.array([[0], [0], [1], [0]], bool)
    end = np.array([[0], [0], [1], [1]], bool)
    # delta = r + 0.9 (1 - term) V' - V = (-0.05, -0.05, 0.5, -0.05); A_t = delta_t + 0.45 (1 - end_t) A_t+1
    expected = [[-0.05 + 0.45 * 0.175], [-0.05 + 0.45 * 0.5], [0.5], [-0.05]]
    assert np.allclose(mlsh.gae_loop(rew, val, next_val, term, end, 0.9, 0.5), expected)
    assert np.allclose(mlsh.gae(rew, val, next_val, term, end, 0.9, 0.5), expected)


def test_gae_lfilter_equals_the_loop():
    rng = np.random.default_rng(3)
    S, n = 80, 7
    rew, val, next_val = rng.random((S, n)), rng.standard_normal((S, n)), rng.standard_normal((S, n))
    term = rng.random((S, n)) < 0.05
    end = term | (rng.random((S, n)) < 0.05)
    a = mlsh.gae_loop(rew, val, next_val, term, end, 0.99, 0.95)
    b = mlsh.gae(rew, val, next_val, term, end, 0.99, 0.95)
    assert np.allclose(a, b, atol=1e-10)
    # one episode, no ends: GAE with lambda = 1 is the discounted return minus the value
    r = rng.random((10, 1))
    v = np.zeros((10, 1))
    nothing = np.zeros((10, 1), bool)
    assert np.allclose(mlsh.gae(r, v, v, nothing, nothing, 0.9, 1.0), mlsh.discount_cumsum(r, 0.9))


def _zero_value_net(G, D):
    cfg = mlsh.Config(hidden=4)
    net = mlsh.Net(np.random.default_rng(0), G, D, 1, cfg, 1e-3)
    for k in net.p:
        net.p[k][...] = 0
    return net


def _rollout(decide, rew, term=None, trunc=None):
    S, n = rew.shape
    z = np.zeros((S, n))
    none = np.zeros((S, n), bool)
    return mlsh.Rollout(obs=np.zeros((S, n, 2)), next_obs=np.zeros((S, n, 2)), decide=decide,
                        choice=z.astype(int), choice_logp=z, act=z.astype(int), act_logp=z, rew=rew,
                        term=none if term is None else term, trunc=none if trunc is None else trunc,
                        score=None, success=None, usage=None)


def test_master_transitions_reward_is_the_sum_over_its_N_steps():
    # one copy, decisions at steps 0 and 3 (N = 3); rewards at steps 1 and 5
    decide = np.array([[1], [0], [0], [1], [0], [0]], bool)
    rew = np.array([[0.0], [1.0], [0.0], [0.0], [0.0], [1.0]])
    t, i, adv, ret = mlsh.master_transitions(_rollout(decide, rew), _zero_value_net(1, 2), 1, 0.5, 1.0)
    assert list(t) == [0, 3] and list(i) == [0, 0]
    # macro rewards are 1 and 1; with V = 0, gamma = 0.5 per decision: A = [1 + 0.5 * 1, 1]
    assert np.allclose(adv, [1.5, 1.0])


def test_master_transitions_end_with_the_episode():
    # the episode terminates at step 1 (inside the first decision); step 2 starts a new one
    decide = np.array([[1], [0], [1], [0]], bool)
    rew = np.array([[0.0], [1.0], [0.0], [1.0]])
    term = np.array([[0], [1], [0], [0]], bool)
    t, i, adv, ret = mlsh.master_transitions(_rollout(decide, rew, term=term), _zero_value_net(1, 2), 1, 0.5, 1.0)
    assert list(t) == [0, 2]
    assert np.allclose(adv, [1.0, 1.0])      # no credit flows across the episode end


def test_group_and_by_learner_round_trip():
    rng = np.random.default_rng(4)
    key = rng.integers(0, 3, 20)
    x = rng.standard_normal((20, 2))
    (g,), valid = mlsh.group(key, 3, x)
    assert valid.sum() == 20 and np.allclose(np.sort(g[valid], axis=0), np.sort(x, axis=0))
    for k in range(3):
        assert np.allclose(g[k][valid[k]], x[key == k])
    y = rng.standard_normal((5, 6, 2))           # S=5 steps, n=6 copies, 3 learners
    assert np.allclose(mlsh.from_learner(mlsh.by_learner(y, 3), 5), y)
    # rows already sorted into equal groups (a flat learner's) take the reshape; a fourth, empty group
    # sends the same rows down the general path, which must agree with it
    key, x = np.repeat(np.arange(3), 4), rng.standard_normal((12, 2))
    (fast, none), valid = mlsh.group(key, 3, x, None)
    (general,), valid4 = mlsh.group(key, 4, x)
    assert none is None and valid.all() and fast.shape == (3, 4, 2) and np.shares_memory(fast, x)
    assert np.array_equal(general[:3], fast) and valid4[:3].all() and not valid4[3].any()


# ---------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------

def _bfs(maze, src, blocked=None):
    dist = {src: 0}
    q = deque([src])
    while q:
        c = q.popleft()
        for a in range(4):
            d = int(maze.next_cell[c, a])
            if d not in dist and d != blocked:
                dist[d] = dist[c] + 1
                q.append(d)
    return dist


def test_four_rooms_layout():
    m = envs.Maze(envs.FOUR_ROOMS)
    assert m.n_cells == 104
    assert (m.dist >= 0).all()                    # one connected maze
    assert len(_doorways(m)) == 4                 # free cells joining two rooms


def _doorways(m):
    """Free cells with walls on two opposite sides."""
    return [c for c in range(m.n_cells)
            if (m.next_cell[c, 0] == c and m.next_cell[c, 2] == c) or (m.next_cell[c, 1] == c and m.next_cell[c, 3] == c)]


@pytest.mark.parametrize("R", [2, 3, 4])
def test_room_mazes_have_a_centred_doorway_between_every_two_neighbours(R):
    m = envs.Maze(envs.room_maze(R))
    assert (m.height, m.width) == (6 * R + 1, 6 * R + 1) and (m.dist >= 0).all()
    doors = _doorways(m)
    assert m.n_cells == 25 * R * R + len(doors) and len(doors) == 2 * R * (R - 1)
    for c in doors:
        r, col = m.cells[c]
        assert (r % 6, col % 6) in [(3, 0), (0, 3)]         # in the middle of a wall between two rooms
    assert m.start == 0 and tuple(m.cells[0]) == (1, 1)
    if R == 2:                                              # as Four Rooms: 104 cells, four doorways
        assert m.n_cells == 104 and len(doors) == 4


def test_room_tasks_hold_out_goals_far_from_the_corner():
    for R in (2, 3, 4):
        fam = envs.RoomTasks(R)
        train, val, test = set(fam.train_tasks), set(fam.val_tasks), set(fam.test_tasks)
        assert not train & test and not train & val and not val & test and len(test) == len(val) == 16
        for held in (fam.test_tasks, fam.val_tasks):
            assert (fam.maze.dist[fam.maze.start, held] >= 5 * R).all()
        assert (fam.maze.dist[fam.maze.start, fam.train_tasks] < 5 * R).any()   # near goals stay for training
    with pytest.raises(ValueError, match="at least 2 x 2 rooms"):
        envs.RoomTasks(1)


def test_rooms_preset_scales_the_episode_with_the_maze():
    for R, T, S in [(2, 50, 64), (3, 112, 128), (4, 200, 256), (5, 312, 320)]:
        cfg, _ = mlsh.parse_args(["--env", "rooms", "--rooms", str(R)])
        assert (cfg.preset, cfg.rooms, cfg.max_steps, cfg.steps, cfg.macro) == ("rooms", R, T, S, 5)
        assert mlsh.make_family(cfg).maze.n_cells == envs.RoomTasks(R).maze.n_cells
    cfg, _ = mlsh.parse_args(["--env", "rooms", "--rooms", "4", "--max-steps", "100"])
    assert (cfg.max_steps, cfg.steps) == (100, 256)            # a flag given wins over the rule


def test_bfs_distances_match_a_plain_breadth_first_search():
    m = envs.Maze(envs.FOUR_ROOMS)
    for src in [0, 17, 50, 103]:
        ref = _bfs(m, src)
        assert all(m.dist[src, d] == ref[d] for d in range(m.n_cells))


def test_walls_stop_moves():
    env = envs.GoalMaze(tasks=[103], seed=0)
    env.reset()
    start = env.pos[0]
    obs, *_ = env.step(np.array([0]))            # up, from the top-left corner: a wall
    assert env.pos[0] == start
    obs, *_ = env.step(np.array([3]))            # left: a wall
    assert env.pos[0] == start
    obs, *_ = env.step(np.array([1]))            # right: free
    assert env.pos[0] == start + 1 and obs[0].argmax() == start + 1


def test_slip_replaces_the_move_by_one_of_the_other_three():
    maze = envs.Maze(envs.OPEN_8X8)
    centre = int(maze.index[4, 4])
    env = envs.GoalMaze(tasks=np.full(30000, int(maze.index[1, 1])), start=centre, slip=1 / 3, seed=5,
                         rows=envs.OPEN_8X8)
    env.reset()
    env.step(np.zeros(30000, dtype=int))          # everyone asks for "up"
    moved = env.pos - centre
    frac = {name: np.mean(moved == d) for name, d in [("up", -8), ("right", 1), ("down", 8), ("left", -1)]}
    assert abs(frac["up"] - 2 / 3) < 0.015
    for name in ["right", "down", "left"]:
        assert abs(frac[name] - 1 / 9) < 0.01


def test_terminated_and_truncated_are_kept_apart():
    env = envs.GoalMaze(tasks=[1, 103], max_steps=3, seed=0)    # copy 0: goal next to the start
    env.reset()
    obs, rew, term, trunc, info = env.step(np.array([1, 1]))
    assert term[0] and not trunc[0] and rew[0] == 1.0 and info["success"][0]
    assert info["score"][0] == 1.0                                  # shortest path: optimal
    assert info["final_obs"][0].argmax() == 1 and obs[0].argmax() == 0   # auto-reset to the start
    env.step(np.array([0, 0]))
    obs, rew, term, trunc, info = env.step(np.array([0, 0]))
    assert trunc[1] and not term[1] and rew[1] == 0.0 and info["score"][1] == 0.0


def test_same_seed_gives_the_same_trajectory_in_lockstep():
    rng = np.random.default_rng(6)
    a = envs.GoalMaze(tasks=np.arange(1, 9), start=None, slip=0.3, seed=11)
    b = envs.GoalMaze(tasks=np.arange(1, 9), start=None, slip=0.3, seed=11)
    oa, _ = a.reset()
    ob, _ = b.reset()
    for _ in range(200):
        assert np.array_equal(oa, ob)
        act = rng.integers(0, 4, 8)
        oa, ra, ta, ua, _ = a.step(act)
        ob, rb, tb, ub, _ = b.step(act)
        assert np.array_equal(ra, rb) and np.array_equal(ta, tb) and np.array_equal(ua, ub)


def test_single_env_has_the_gymnasium_shape():
    env = envs.SingleEnv(envs.GoalMaze(tasks=[5], seed=0))
    obs, info = env.reset(seed=3, options={"task": 2})
    assert obs.shape == env.observation_shape == (104,) and obs.dtype == np.float32
    assert env.action_space.n == 4
    obs, r, term, trunc, info = env.step(1)        # goal 2 is two cells right of the start 'S' (cell 0)
    assert isinstance(r, float) and isinstance(term, bool) and isinstance(trunc, bool)
    assert not term and r == 0.0
    obs, r, term, trunc, info = env.step(1)
    assert term and r == 1.0 and obs.argmax() == 2   # no auto-reset in the single env
    with pytest.raises(RuntimeError):
        env.step(1)
    env.reset()
    with pytest.raises(ValueError):
        env.step(4)


def test_bandits_wrong_mark_ends_the_episode_unpaid():
    fam = envs.BanditTasks()
    env = fam.make(np.zeros(2000, dtype=int), "train", seed=0)
    env.reset()
    assert not (env.marks[:, 0] == env.marks[:, 1]).any() and not (env.marks == env.pos[:, None]).any()
    env.pos[:] = env.marks[:, 1]                  # put every copy on the unpaid mark
    ended, paid = env._outcome()
    assert ended.all() and not paid.any()
    # observation: position, then offsets to mark 0 and mark 1
    obs = env._observe()
    rc = env.maze.cells / np.array([10, 10])
    assert np.allclose(obs[:, 4:6], rc[env.marks[:, 1]] - rc[env.pos], atol=1e-6)


def test_bandit_layouts_are_split_and_best_paths_avoid_the_other_mark():
    fam = envs.BanditTasks()
    train, val, test = ({tuple(p) for p in fam.pairs[k]} for k in ("train", "validation", "test"))
    assert train and val and test and not train & test and not train & val and not val & test
    env = fam.make(np.ones(300, dtype=int), "test", seed=1)
    env.reset()
    assert all(tuple(sorted(m)) in test for m in env.marks)
    for i in range(300):
        ref = _bfs(env.maze, int(env.pos[i]), blocked=int(env.marks[i, 0]))
        assert env.best[i] == ref[int(env.marks[i, 1])]


def test_four_rooms_split_is_fixed_and_disjoint():
    a, b = envs.GoalTasks(), envs.GoalTasks()
    assert np.array_equal(a.test_tasks, b.test_tasks) and np.array_equal(a.val_tasks, b.val_tasks)
    train, val, test = set(a.train_tasks), set(a.val_tasks), set(a.test_tasks)
    assert not train & test and not train & val and not val & test
    assert len(val) == len(test) == 16 and len(train) + len(val) + len(test) == 103     # every cell but the start
    for held in (a.test_tasks, a.val_tasks):
        assert (a.maze.dist[a.maze.start, held] >= 10).all()
    assert a.test_tasks.tolist() == [16, 18, 19, 28, 39, 40, 48, 50, 70, 87, 88, 89, 90, 100, 102, 103]  # as before


def test_a_small_maze_still_gets_a_validation_split():
    fam = envs.GoalTasks(rows=envs.read_maze(Path(__file__).resolve().parent / "mazes" / "example.txt"))
    assert len(fam.val_tasks) == len(fam.test_tasks) == 12 and not set(fam.val_tasks) & set(fam.test_tasks)
    assert len(fam.train_tasks) == fam.maze.n_cells - 1 - 24


# ---------------------------------------------------------------------------
# Learning (fixed seeds)
# ---------------------------------------------------------------------------

def test_flat_ppo_solves_a_four_rooms_goal():
    cfg = mlsh.Config(eval_iters=12, seeds=1)
    fam = envs.GoalTasks()
    fam.test_tasks = fam.test_tasks[:2]
    score, success, _ = mlsh.fine_tune(cfg, fam, lambda rng, L: mlsh.new_agent(rng, L, fam.obs_dim, 4, cfg, 0.03), 1)
    assert success[:, :2].mean() < 0.5              # it did not start out solved
    assert success[:, -3:].mean() > 0.9 and score[:, -3:].mean() > 0.7


def test_mlsh_beats_flat_on_bandits():
    cfg, _ = mlsh.parse_args(["--env", "bandits", "--rounds", "6", "--seeds", "2", "--eval-iters", "10"])
    fam = mlsh.make_family(cfg)
    subs, history = mlsh.meta_train(cfg, fam, np.random.default_rng([cfg.seed, 1]), log=lambda s: None)
    assert history[-1]["warmup_success"] > 0.8      # a fresh master is good after the warmup alone
    alone = mlsh.skills_alone(cfg, fam, subs)       # (K, 2): each sub-policy alone on task 0 and task 1
    assert alone.max(axis=0).min() > 0.8 and alone.argmax(axis=0).tolist() in ([0, 1], [1, 0])   # one per mark
    D, A, K = fam.obs_dim, fam.n_actions, cfg.subpolicies
    mlsh_curve, _, _ = mlsh.fine_tune(cfg, fam, lambda rng, L: mlsh.new_agent(rng, L, D, K, cfg, cfg.master_lr,
                                                                          cfg.macro, subs=subs), 2)
    flat_curve, _, _ = mlsh.fine_tune(cfg, fam, lambda rng, L: mlsh.new_agent(rng, L, D, A, cfg, 0.03), 2)
    assert mlsh_curve.mean() > 1.3 * flat_curve.mean()


def _fixed_skills(fam, actions, hidden=8):
    """Sub-policies that always take one action each, whatever they see (a huge bias on that action)."""
    p = mlsh.mlp_init(np.random.default_rng(0), len(actions), [fam.obs_dim, hidden, 4], dtype=np.float64)
    p["W1"][:] = 0.0
    p["b1"][:] = -50.0
    p["b1"][np.arange(len(actions)), 0, actions] = 50.0
    return mlsh.Net.from_params(p, 0.0)


def test_reach_is_the_best_over_every_sequence_of_choices():
    # deterministic skills from a fixed start: the best master is the best sequence of K^(T/N) choices
    cfg = mlsh.Config(max_steps=12, macro=4)
    fam = mlsh.make_family(cfg)
    maze = fam.maze
    subs = _fixed_skills(fam, [1, 2, 0])                          # right, down, up
    got = mlsh.reach(cfg, fam, subs, rollouts=1)
    best_score, best_success, visit = np.zeros(maze.n_cells), np.zeros(maze.n_cells), np.zeros(maze.n_cells)
    sequences = list(__import__("itertools").product(range(3), repeat=3))
    for seq in sequences:
        cell, first = maze.start, {}
        for t in range(12):
            cell = maze.next_cell[cell, [1, 2, 0][seq[t // 4]]]
            first.setdefault(cell, t + 1)
        for g, t in first.items():
            if g != maze.start:
                best_score[g] = max(best_score[g], maze.dist[maze.start, g] / t)
                best_success[g] = 1.0
                visit[g] += 1 / len(sequences)
    others = np.arange(maze.n_cells) != maze.start
    assert np.allclose(got["best_score"][others], best_score[others])
    assert np.allclose(got["best_success"][others], best_success[others])
    assert np.allclose(got["master_visit"][others], visit[others])
    assert best_success.sum() >= 10 and np.isnan(got["best_score"][maze.start])
    walk = got["walk_visit"]                                      # a random walk meets near cells more often
    assert walk[maze.next_cell[maze.start, 1]] > 0.9 > 0.1 > np.nanmax(walk[fam.test_tasks])


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def test_quick_run_writes_results(tmp_path):
    mlsh.main(["--quick", "--env", "bandits", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["env"] == "bandits"
    for name in ["mlsh", "flat", "shared", "random_subs"]:
        r = res["methods"][name]
        assert set(r) >= {"auc", "auc_ci", "curve", "iters_to_80"}
        assert r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1]
        assert len(r["curve"]) == res["config"]["eval_iters"]
    assert np.array(res["skills_alone"]["success"]).shape == (res["config"]["subpolicies"], 2)


def test_methods_and_the_validation_split(tmp_path):
    mlsh.main(["--quick", "--methods", "mlsh", "random_subs", "--eval-split", "validation", "--quiet",
               "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["methods"]) == {"mlsh", "random_subs"}
    assert res["skills_alone"]["tasks"] == envs.GoalTasks().val_tasks.tolist()
    assert (tmp_path / "curves.png").exists() and (tmp_path / "episode.png").exists()


def test_presets_set_the_task_and_flags_still_win():
    cfg, _ = mlsh.parse_args(["--preset", "paper"])
    assert (cfg.env, cfg.max_steps, cfg.macro, cfg.subpolicies, cfg.warmup, cfg.joint, cfg.layers) == \
        ("fourrooms", 100, 25, 4, 20, 30, 2) and cfg.envs * cfg.steps == 2048
    assert mlsh.parse_args(["--preset", "paper", "--macro", "10"])[0].macro == 10
    assert mlsh.parse_args(["--env", "bandits"])[0].preset == "bandits"


def test_help_lists_every_config_field(capsys):
    with pytest.raises(SystemExit):
        mlsh.parse_args(["--help"])
    text = capsys.readouterr().out
    for f in mlsh.dataclasses.fields(mlsh.Config):
        assert "--" + f.name.replace("_", "-") in text


# ---------------------------------------------------------------------------
# Checkpoints, your own maze, figures
# ---------------------------------------------------------------------------

QUICK_BANDITS = ["--quick", "--env", "bandits", "--quiet", "--no-plots"]


def test_checkpoint_round_trip_gives_the_same_sub_policies(tmp_path):
    cfg, _ = mlsh.parse_args(QUICK_BANDITS)
    fam = mlsh.make_family(cfg)
    rng = np.random.default_rng(0)
    subs = mlsh.Net(rng, cfg.subpolicies, fam.obs_dim, 4, cfg, cfg.sub_lr)
    subs.opt.t = 7
    path = str(tmp_path / "c.npz")
    mlsh.save_checkpoint(path, cfg, fam, {"subs": subs, "history": [{"round": 1}], "rng": rng,
                                          "env_rng": np.random.default_rng(1)})
    saved_state = rng.bit_generator.state
    loaded = mlsh.load_checkpoint(path, cfg, fam, resume=True)
    x = rng.standard_normal((1, 20, fam.obs_dim))
    assert np.array_equal(mlsh.mlp_forward(loaded["subs"], x)[0], subs(x))
    assert loaded["opt"].t == 7 and loaded["history"] == [{"round": 1}]
    assert loaded["rng"] == saved_state
    assert not list(tmp_path.glob("*.tmp"))                # written through a temporary file, then renamed


def test_a_checkpoint_from_another_config_is_refused(tmp_path):
    mlsh.main(QUICK_BANDITS + ["--out", str(tmp_path)])
    ckpt = str(tmp_path / "checkpoint.npz")
    with pytest.raises(SystemExit) as e:
        mlsh.main(QUICK_BANDITS + ["--subpolicies", "3", "--load", ckpt, "--eval-only", "--out", str(tmp_path)])
    assert e.value.code == 2
    cfg, _ = mlsh.parse_args(QUICK_BANDITS + ["--hidden", "32"])
    with pytest.raises(ValueError, match="hidden is 64 there, 32 here"):
        mlsh.load_checkpoint(ckpt, cfg, mlsh.make_family(cfg), resume=False)
    cfg, _ = mlsh.parse_args(["--quick"])                   # Four Rooms: another env, another maze
    with pytest.raises(ValueError, match="env is 'bandits' there, 'fourrooms' here"):
        mlsh.load_checkpoint(ckpt, cfg, mlsh.make_family(cfg), resume=False)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    mlsh.main(QUICK_BANDITS + ["--rounds", "3", "--out", str(tmp_path / "full")])
    mlsh.main(QUICK_BANDITS + ["--rounds", "1", "--out", str(tmp_path / "part")])
    mlsh.main(QUICK_BANDITS + ["--rounds", "3", "--out", str(tmp_path / "part"),
                               "--load", str(tmp_path / "part" / "checkpoint.npz")])
    with np.load(tmp_path / "full" / "checkpoint.npz") as a, np.load(tmp_path / "part" / "checkpoint.npz") as b:
        for k in a.files:
            if k.startswith("subs."):
                assert np.array_equal(a[k], b[k])


def test_ctrl_c_keeps_the_last_complete_round(tmp_path, monkeypatch, capsys):
    real_save = mlsh.save_checkpoint

    def save_then_interrupt(path, cfg, family, state):
        real_save(path, cfg, family, state)
        if len(state["history"]) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(mlsh, "save_checkpoint", save_then_interrupt)
    with pytest.raises(SystemExit) as e:
        mlsh.main(QUICK_BANDITS + ["--rounds", "4", "--out", str(tmp_path)])
    assert e.value.code == 130
    ckpt = str(tmp_path / "checkpoint.npz")
    assert "resume with: python mlsh.py" in capsys.readouterr().out
    cfg, _ = mlsh.parse_args(QUICK_BANDITS + ["--rounds", "4"])
    assert len(mlsh.load_checkpoint(ckpt, cfg, mlsh.make_family(cfg), resume=True)["history"]) == 2
    monkeypatch.setattr(mlsh, "save_checkpoint", real_save)
    mlsh.main(QUICK_BANDITS + ["--rounds", "4", "--out", str(tmp_path), "--load", ckpt])
    res = json.loads((tmp_path / "results.json").read_text())
    assert [h["round"] for h in res["meta_training"]] == [1, 2, 3, 4]


def test_eval_only_reproduces_the_evaluation(tmp_path):
    mlsh.main(QUICK_BANDITS + ["--out", str(tmp_path / "a")])
    mlsh.main(QUICK_BANDITS + ["--out", str(tmp_path / "b"), "--eval-only",
                               "--load", str(tmp_path / "a" / "checkpoint.npz")])
    a = json.loads((tmp_path / "a" / "results.json").read_text())["methods"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["methods"]
    assert a == b


MY_MAZE = """\
###########
#S....#...#
#.###.#.#.#
#...#...#.#
###.#####.#
#.........#
###########
"""


def test_maze_file_parsing(tmp_path):
    f = tmp_path / "maze.txt"
    f.write_text(MY_MAZE)
    rows = envs.read_maze(str(f))
    assert len(rows) == 7 and envs.Maze(rows).start == 0
    f.write_text(MY_MAZE.replace("#S...", "#S.x."))
    with pytest.raises(ValueError, match="line 2, column 4: 'x'"):
        envs.read_maze(str(f))
    f.write_text(MY_MAZE.replace("#...#...#.#", "#...#...#.##"))
    with pytest.raises(ValueError, match="line 4 has 12 characters"):
        envs.read_maze(str(f))


def test_your_own_maze_runs_end_to_end_with_figures(tmp_path):
    f = tmp_path / "maze.txt"
    f.write_text(MY_MAZE)
    mlsh.main(["--quick", "--quiet", "--maze", str(f), "--out", str(tmp_path), "--render"])
    res = json.loads((tmp_path / "results.json").read_text())
    fam = mlsh.make_family(mlsh.Config(maze=str(f)))
    assert len(fam.test_tasks) >= 1 and not set(fam.test_tasks) & set(fam.train_tasks)
    assert res["config"]["maze"] == str(f)
    for name in ["curves", "subpolicies", "episode", "meta_training"]:   # written with no display
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# Bad input and faults: one clear sentence, exit code 2, nothing lost
# ---------------------------------------------------------------------------

def _maze_error(tmp_path, content, mode="w"):
    f = tmp_path / "m.txt"
    if mode == "w":
        f.write_text(content)
    else:
        f.write_bytes(content)
    with pytest.raises(ValueError) as e:
        mlsh.make_family(mlsh.Config(maze=str(f)))
    return str(e.value)


@pytest.mark.parametrize("content, expected", [
    ("#####\n#S.x#\n#####\n", "line 2, column 4: 'x' is not in the legend"),
    ("#####\n#S..#\n####\n", "line 3 has 4 characters, line 1 has 5"),
    ("#####\n#####\n", "no free cell"),
    ("#####\n#S..#\n#####\n", "2 goal cell(s)"),
    ("#######\n#S.#..#\n#######\n", "line 2, column 5: this free cell cannot be reached from the start"),
    ("", "the maze is empty"),
    ("\n\n", "the maze is empty"),
    ("#####\n#S.S#\n#####\n", "line 2, column 4: a second start 'S'"),
    ("#####\n#...#\n#...#\n#####\n", "no start cell 'S'"),
])
def test_bad_maze_files_are_refused_with_the_place(tmp_path, content, expected):
    assert expected in _maze_error(tmp_path, content)


def test_a_maze_file_that_is_not_text_is_refused(tmp_path):
    assert "not a text file" in _maze_error(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", mode="b")
    with pytest.raises(ValueError, match="No such file"):
        mlsh.make_family(mlsh.Config(maze=str(tmp_path / "none.txt")))


@pytest.mark.parametrize("flags, expected", [
    (["--subpolicies", "0"], "--subpolicies is 0; it must be at least 1"),
    (["--macro", "-1"], "--macro is -1"),
    (["--warmup", "-2"], "--warmup is -2"),
    (["--joint", "0"], "--joint is 0"),
    (["--seeds", "0"], "--seeds is 0"),
    (["--eval-iters", "0"], "--eval-iters is 0"),
    (["--slip", "1"], "--slip is 1.0; it is a probability in [0, 1)"),
    (["--slip", "-0.1"], "--slip is -0.1"),
    (["--env", "mujoco"], "--env 'mujoco' is not a task family"),
    (["--eval-only"], "--eval-only evaluates a trained checkpoint: give it with --load FILE"),
    (["--seeds", "three"], "invalid int value: 'three'"),
    (["--max-steps", "100"], "--steps 64 is shorter than --max-steps 100"),
    (["--preset", "paper", "--env", "bandits"], "--preset paper is for --env fourrooms"),
    (["--preset", "large"], "--preset 'large' is not a preset here"),
    (["--methods", "mlsh", "ppo"], "--methods mlsh ppo: choose one or more of mlsh, flat, shared, random_subs"),
    (["--methods", "shared"], "shared needs flat too"),
    (["--eval-split", "train"], "--eval-split 'train': choose test or validation"),
    (["--env", "rooms", "--rooms", "1"], "--rooms is 1; a room maze has at least 2 x 2 rooms"),
    (["--env", "rooms", "--maze", "mazes/example.txt"], "use it with --env fourrooms, not rooms"),
])
def test_bad_flags_are_refused_before_training(capsys, flags, expected):
    with pytest.raises(SystemExit) as e:
        mlsh.main(flags)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1          # one line, no usage block, no traceback


def test_meta_round_trains_the_sub_policies_only_after_the_warmup(monkeypatch):
    cfg = mlsh.Config(env="bandits", subpolicies=2, tasks=2, envs=4, warmup=2, joint=3, hidden=8)
    fam = mlsh.make_family(cfg)
    rng = np.random.default_rng(0)
    subs = mlsh.Net(rng, 2, fam.obs_dim, fam.n_actions, cfg, cfg.sub_lr)
    runner = mlsh.Runner(fam.make(np.zeros(cfg.tasks * cfg.envs, dtype=int), seed=1), cfg.tasks)
    seen, masters, real_update = [], [], mlsh.update

    def spy(agent, ro, cfg, rng, train_subs=False):
        before = {k: v.copy() for k, v in subs.p.items()}
        real_update(agent, ro, cfg, rng, train_subs=train_subs)
        changed = any(not np.array_equal(before[k], subs.p[k]) for k in before)
        seen.append((train_subs, changed, agent.subs is subs))
        masters.append(agent.master)

    monkeypatch.setattr(mlsh, "update", spy)
    for _ in range(2):
        rec = mlsh.meta_round(cfg, fam, runner, subs, rng)
    # per round: W iterations that leave φ alone, then U that train it; always the shared φ
    assert seen == 2 * ([(False, False, True)] * 2 + [(True, True, True)] * 3)
    # θ is new at every round, and the same within one
    assert masters[0] is masters[4] and masters[5] is not masters[4]
    assert set(rec) == {"warmup_success", "joint_success", "usage"} and np.isclose(sum(rec["usage"]), 1)


def test_zero_warmup_is_allowed():                          # W = 0 is the paper's ablation
    cfg, _ = mlsh.parse_args(["--warmup", "0"])
    assert cfg.warmup == 0


def test_an_output_folder_that_cannot_be_written_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        mlsh.main(QUICK_BANDITS + ["--out", str(blocker / "sub")])
    assert e.value.code == 2 and "cannot write into the output folder" in capsys.readouterr().err


def test_bad_checkpoints_are_refused(tmp_path, capsys):
    mlsh.main(QUICK_BANDITS + ["--out", str(tmp_path)])
    good = (tmp_path / "checkpoint.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(good[:len(good) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"not a checkpoint at all")
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"evil": 1}], dtype=object), adam_t=np.array(1))
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    cases = {"missing.npz": "no such file", "truncated.npz": "damaged or not a checkpoint",
             "garbage.npz": "is not a checkpoint (.npz) file", "pickled.npz": "pickled objects, which are never loaded",
             "other.npz": "damaged or not a checkpoint"}
    for name, expected in cases.items():
        with pytest.raises(SystemExit) as e:
            mlsh.main(QUICK_BANDITS + ["--out", str(tmp_path / "o"), "--eval-only", "--load", str(tmp_path / name)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1


def test_non_finite_values_stop_training_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real_step = envs.GridEnv.step
    calls = {"n": 0}
    per_round = (2 + 2) * 64                                  # quick: (W + U) iterations of 64 steps

    def poisoned_step(self, actions):
        out = list(real_step(self, actions))
        calls["n"] += 1
        if calls["n"] > 1.5 * per_round:                       # in the second round
            out[1] = out[1] * np.nan
        return tuple(out)

    monkeypatch.setattr(envs.GridEnv, "step", poisoned_step)
    with pytest.raises(SystemExit) as e:
        mlsh.main(QUICK_BANDITS + ["--rounds", "3", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "advantages became NaN or infinite" in err and "last good checkpoint is intact" in err
    monkeypatch.setattr(envs.GridEnv, "step", real_step)
    cfg, _ = mlsh.parse_args(QUICK_BANDITS + ["--rounds", "3"])
    ck = mlsh.load_checkpoint(str(tmp_path / "checkpoint.npz"), cfg, mlsh.make_family(cfg), resume=True)
    assert len(ck["history"]) == 1 and all(np.isfinite(v).all() for v in ck["subs"].values())


def test_environments_pass_the_conformance_check():
    envs.check_env(envs.SingleEnv(envs.GoalMaze(tasks=[50], seed=0)))
    envs.check_env(envs.SingleEnv(envs.GoalMaze(tasks=[50], start=None, slip=1 / 3, seed=0)))
    envs.check_env(envs.SingleEnv(envs.BanditTasks().make([1], "test", seed=0)))
    rooms = envs.RoomTasks(3)
    envs.check_env(envs.SingleEnv(rooms.make(rooms.test_tasks[:1], "test", seed=0)))


def test_the_conformance_check_can_fail(monkeypatch):
    monkeypatch.setattr(envs.GoalMaze, "_observe", lambda self: self._eye[self.pos].astype(np.float64))
    with pytest.raises(AssertionError, match="float32"):
        envs.check_env(envs.SingleEnv(envs.GoalMaze(tasks=[50], seed=0)))


def test_same_seed_same_checkpoint_and_results(tmp_path):
    for run in "ab":
        mlsh.main(QUICK_BANDITS + ["--out", str(tmp_path / run)])
    strip = lambda r: {**{k: v for k, v in r.items() if k != "seconds"}, "config": {**r["config"], "out": ""}}
    a, b = (json.loads((tmp_path / run / "results.json").read_text()) for run in "ab")
    assert strip(a) == strip(b)
    with np.load(tmp_path / "a" / "checkpoint.npz") as x, np.load(tmp_path / "b" / "checkpoint.npz") as y:
        assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files if k != "meta")
        mx, my = json.loads(str(x["meta"])), json.loads(str(y["meta"]))
        assert mx["config"].pop("out") != my["config"].pop("out") and mx == my   # all but the folder


def test_randomness_only_from_explicit_generators():
    import re
    for path in ["mlsh.py", "envs.py", "sweep.py"]:
        src = open(path).read()
        calls = set(re.findall(r"np\.random\.(\w+)", src))
        assert calls <= {"default_rng", "Generator"}, f"{path} uses np.random.{calls}"
        assert "import random" not in src


# ---------------------------------------------------------------------------
# sweep.py: many meta-training seeds, one table
# ---------------------------------------------------------------------------

QUICK_SWEEP = ["--quick", "--no-plots"]


def _sweep(*argv):
    """sweep.py as a user runs it: (exit code, stdout, stderr)."""
    r = subprocess.run([sys.executable, "sweep.py", *argv], cwd=Path(__file__).resolve().parent,
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Seeds 0 and 1 of the quick budget, two at a time, and the same two runs of mlsh.py by hand."""
    root = tmp_path_factory.mktemp("sweep")
    code, out, err = _sweep("--seeds", "0-1", "--jobs", "2", *QUICK_SWEEP, "--out", str(root / "jobs2"))
    assert code == 0, out + err
    for s in (0, 1):
        mlsh.main(QUICK_SWEEP + ["--quiet", "--seed", str(s), "--out", str(root / f"hand-{s}")])
    return root


def _numbers(res):
    return {m: {k: r[k] for k in ("auc", "auc_ci", "success_auc", "curve", "iters_to_80")}
            for m, r in res["methods"].items()}, res["skills_alone"]


def test_sweep_gives_the_numbers_of_mlsh_run_by_hand(swept):
    for s in (0, 1):
        by_sweep = json.loads((swept / "jobs2" / f"seed-{s}" / "results.json").read_text())
        by_hand = json.loads((swept / f"hand-{s}" / "results.json").read_text())
        assert by_sweep["config"]["seed"] == s
        assert _numbers(by_sweep) == _numbers(by_hand)
    summary = json.loads((swept / "jobs2" / "sweep.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [0, 1] and summary["summary"]["n"] == 2
    assert summary["flags"] == QUICK_SWEEP and summary["config"]["rounds"] == mlsh.QUICK["rounds"]
    assert "| seed | MLSH |" in (swept / "jobs2" / "sweep.md").read_text()
    assert (swept / "jobs2" / "sweep.png").stat().st_size > 1000


def test_sweep_jobs_1_and_jobs_2_agree(swept, tmp_path):
    code, out, err = _sweep("--seeds", "0,1", "--jobs", "1", *QUICK_SWEEP, "--out", str(tmp_path))
    assert code == 0, out + err
    one, two = (json.loads((d / "sweep.json").read_text()) for d in (tmp_path, swept / "jobs2"))
    assert one["runs"] == two["runs"] and one["summary"] == two["summary"]


def test_a_second_sweep_skips_finished_seeds(swept):
    results = [swept / "jobs2" / f"seed-{s}" / "results.json" for s in (0, 1)]
    before = [p.stat().st_mtime_ns for p in results]
    code, out, err = _sweep("--seeds", "0-1", *QUICK_SWEEP, "--out", str(swept / "jobs2"))
    assert code == 0, out + err
    assert "seed 0: already done" in out and "seed 1: already done" in out and "0 of 2 seeds to run" in out
    assert [p.stat().st_mtime_ns for p in results] == before


def test_summarise_of_run_folders_gives_the_sweeps_summary(swept, tmp_path):
    code, out, err = _sweep("--summarise", str(swept / "hand-0"), str(swept / "hand-1"), "--out", str(tmp_path))
    assert code == 0, out + err
    made, swept_json = (json.loads((d / "sweep.json").read_text()) for d in (tmp_path, swept / "jobs2"))
    assert made["summary"] == swept_json["summary"] and made["runs"] == swept_json["runs"]
    assert made["config"] == swept_json["config"]
    import sweep                      # the flags --summarise writes give the folders' settings back
    assert sweep.settings(dataclasses.asdict(mlsh.parse_args(made["flags"])[0])) == made["config"]


def test_summary_counts_intervals_and_bootstraps_the_difference_over_seeds():
    import sweep

    def run(seed, mlsh_ci, flat_ci, other_ci):
        m = lambda ci: {"auc": sum(ci) / 2, "auc_ci": ci, "success_auc": 0.5, "iters_to_80": None}
        return {"seed": seed, "methods": {"mlsh": m(mlsh_ci), "flat": {**m(flat_ci), "lr": 0.01},
                                          "shared": m(other_ci), "random_subs": m([0.0, 0.1])}, "best_alone": 1.0}
    rows = [run(0, [0.6, 0.8], [0.3, 0.5], [0.1, 0.2]),    # above flat and above all
            run(1, [0.6, 0.8], [0.3, 0.5], [0.5, 0.7]),    # above flat, not above shared
            run(2, [0.4, 0.6], [0.3, 0.5], [0.1, 0.2]),    # overlaps flat
            {"seed": 3, "error": "exit code 2: mlsh: meta-training stopped"}]
    s = sweep.summary(rows)
    assert (s["n"], s["failed"], s["above_flat"], s["above_all"]) == (3, 1, 2, 1)
    assert s["mean_diff"] == pytest.approx((0.3 + 0.3 + 0.1) / 3)
    assert s["mean_diff_ci"][0] <= s["mean_diff"] <= s["mean_diff_ci"][1] and s["mean_diff_ci"][1] <= 0.3 + 1e-12
    text = sweep.table(rows, s)
    assert "| 0 | **0.700 [0.600, 0.800]** |" in text and "| 2 | 0.500 [0.400, 0.600] |" in text
    assert "| 3 | failed: exit code 2" in text and "1 seed(s) failed" in text
    assert s["ratio"] == pytest.approx((0.7 + 0.7 + 0.5) / 3 / 0.4) and s["twice_flat"] == 0
    twice = sweep.summary([run(0, [0.8, 0.9], [0.3, 0.5], [0.1, 0.2]), run(1, [0.6, 0.9], [0.3, 0.5], [0.1, 0.2])])
    assert twice["twice_flat"] == 1                        # 0.85 >= 2 x 0.4; 0.75 is not
    assert "at least twice flat PPO with the intervals apart on 1 of 2 seeds" in sweep.table(rows[:1], twice)


@pytest.mark.parametrize("argv, flags", [
    ([], []),
    (["--env", "rooms", "--rooms", "4", "--random-start"], ["--env", "rooms", "--rooms", "4", "--random-start"]),
    (["--preset", "rooms", "--rooms", "2", "--max-steps", "60"], ["--env", "rooms", "--rooms", "2", "--max-steps", "60"]),
    (["--env", "bandits", "--macro", "1"], ["--env", "bandits", "--macro", "1"]),
    (["--preset", "paper", "--sub-ent", "0.1"], ["--preset", "paper", "--sub-ent", "0.1"]),
])
def test_the_flags_a_sweep_prints_give_its_settings_back(argv, flags):
    import sweep
    config = dataclasses.asdict(mlsh.parse_args(argv)[0])
    assert sweep.flags_of(config) == flags           # only what differs from the preset (T and S follow --rooms)
    assert sweep.settings(dataclasses.asdict(mlsh.parse_args(flags)[0])) == sweep.settings(config)


def test_seed_lists():
    import sweep
    assert sweep.parse_seeds("0-9") == list(range(10))
    assert sweep.parse_seeds("0,3,7") == [0, 3, 7]
    assert sweep.parse_seeds("7, 0-2,1") == [0, 1, 2, 7]


def test_a_failed_seed_is_a_row_and_the_others_go_on(tmp_path):
    code, out, err = _sweep("--seeds", "0-1", *QUICK_SWEEP, "--value-lr", "1e30", "--out", str(tmp_path))
    assert code == 1, out + err
    rows = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert [r["seed"] for r in rows] == [0, 1]
    assert all("NaN or infinite" in r["error"] for r in rows)
    assert "| 0 | failed: exit code 2: mlsh: meta-training stopped" in out


@pytest.mark.parametrize("how", ["ctrl-c", "kill in the background"])
def test_ctrl_c_keeps_finished_seeds_and_says_how_to_carry_on(tmp_path, how):
    argv = ["--seeds", "0-1", "--jobs", "1", *QUICK_SWEEP, "--env", "bandits", "--rounds", "30", "--out", str(tmp_path)]
    # a shell starts a background job with Ctrl-C ignored; kill (SIGTERM) must still stop it, workers included
    background = how != "ctrl-c"
    p = subprocess.Popen([sys.executable, "sweep.py", *argv], cwd=Path(__file__).resolve().parent,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None)
    while not (tmp_path / "seed-0" / "results.json").exists() and p.poll() is None:
        time.sleep(0.05)
    while not (tmp_path / "seed-1" / "checkpoint.npz").exists() and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM if background else signal.SIGINT)   # seed 1 is in round 2 of 30: seconds to go
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 130, out
    assert "interrupted: 1 of 2 seeds are finished" in out and "carry on with: python sweep.py --seeds 0-1" in out
    assert not (tmp_path / "seed-1" / "results.json").exists()
    assert "interrupted: the last complete round is saved" in (tmp_path / "seed-1" / "log.txt").read_text()
    code, out, err = _sweep(*argv)
    assert code == 0, out + err
    assert "seed 0: already done" in out and "1 of 2 seeds to run" in out


def test_a_grid_runs_a_sweep_per_combination(swept, tmp_path):
    code, out, err = _sweep("--seeds", "0", *QUICK_SWEEP, "--grid", "macro=3,5", "--out", str(tmp_path))
    assert code == 0, out + err
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert [c["values"] for c in grid["cells"]] == [{"macro": "3"}, {"macro": "5"}]
    five = json.loads((tmp_path / "macro-5" / "seed-0" / "results.json").read_text())
    assert _numbers(five) == _numbers(json.loads((swept / "hand-0" / "results.json").read_text()))  # --macro 5 is the default
    assert json.loads((tmp_path / "macro-3" / "seed-0" / "results.json").read_text())["config"]["macro"] == 3
    assert "| macro | MLSH | flat PPO |" in (tmp_path / "grid.md").read_text() and (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--seeds", "0-x"], "'0-x' is not a seed or a range"),
    (["--seeds", "3,,4"], "'' is not a seed or a range"),
    (["--seeds", ""], "'' is not a seed or a range"),
    (["--seeds", "5-3"], "the range 5-3 is reversed (empty); write it low-high, as 3-5"),
    (["--seeds", "0-1", "--jobs", "0"], "--jobs is 0; it must be at least 1"),
    (["--seeds", "0-1", "--macro", "0"], "--macro is 0; it must be at least 1"),
    (["--seeds", "0-1", "--env", "mujoco"], "--env 'mujoco' is not a task family"),
    (["--seeds", "0-1", "--maze", "no-such-maze.txt"], "maze file no-such-maze.txt: No such file"),
    (["--seeds", "0-1", "--seed", "3"], "--seed is not for a sweep: give the seeds with --seeds"),
    (["--seeds", "0-1", "--eval-only"], "--eval-only is not for a sweep"),
    ([], "give --seeds to run a sweep, or --summarise DIR"),
    (["--summarise", "nowhere"], "nowhere holds no results.json"),
    (["--seeds", "0", "--grid", "macro"], "--grid 'macro': write NAME=V1,V2"),
    (["--seeds", "0", "--grid", "macro=1,,5"], "--grid 'macro=1,,5'"),
    (["--seeds", "0", "--macro", "5", "--grid", "macro=1,5"], "--macro is given both as a flag and in --grid"),
    (["--seeds", "0", "--grid", "macro=1,0"], "--macro is 0; it must be at least 1"),
])
def test_sweep_refuses_bad_input_in_one_line_before_any_worker(argv, expected, tmp_path, capsys):
    import sweep
    with pytest.raises(SystemExit) as e:
        sweep.main(argv + (["--out", str(tmp_path / "out")] if "--summarise" not in argv else []))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sweep: ") and expected in err and err.count("\n") == 1, err
    assert not list(tmp_path.glob("out/seed-*"))


def test_summarise_refuses_folders_of_different_settings(swept, tmp_path, capsys):
    import sweep
    mlsh.main(QUICK_SWEEP + ["--quiet", "--macro", "3", "--out", str(tmp_path / "other")])
    with pytest.raises(SystemExit) as e:
        sweep.main(["--summarise", str(swept / "hand-0"), str(tmp_path / "other"), "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "are runs of different settings (macro is 3 there, 5 here)" in err and err.count("\n") == 1


def test_a_sweep_refuses_a_folder_of_other_settings(swept, tmp_path, capsys):
    import sweep
    with pytest.raises(SystemExit) as e:
        sweep.main(["--seeds", "0", *QUICK_SWEEP, "--macro", "3", "--out", str(swept / "jobs2")])
    assert e.value.code == 2
    assert "holds a run of other settings (macro is 5 there, 3 here)" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The README's algorithm box names code that exists
# ---------------------------------------------------------------------------

def _exists(name):
    """A name from the box: a function or class of mlsh.py or envs.py, or Class.attribute / Class.field."""
    head, _, attr = name.partition(".")
    obj = getattr(mlsh, head, None) or getattr(envs, head, None)
    if obj is None or not attr:
        return obj is not None
    fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
    return hasattr(obj, attr) or attr in fields


def test_every_name_in_the_readme_box_exists():
    text = (Path(__file__).resolve().parent / "README.md").read_text()
    box = text.split("<!-- algorithm box -->")[1].split("```")[1]
    names = []
    for line in box.strip().splitlines()[1:]:
        right = re.split(r"\s{2,}", line.strip())[-1]                 # the column of code names
        names += [re.sub(r"\(.*\)", "", n).strip() for n in right.split(",")]
    assert len(names) >= 15
    missing = [n for n in names if not _exists(n)]
    assert not missing, f"the README's box names what mlsh.py and envs.py do not have: {missing}"


# ---------------------------------------------------------------------------
# Exercises (README, "Exercises"): each check fails when its function is blanked
# ---------------------------------------------------------------------------

EXERCISES = {  # function -> the file it is in; its check is `python -m pytest -k <function>`
    "mlp_backward": "mlsh.py", "ppo_loss": "mlsh.py", "gae_loop": "mlsh.py",
    "master_transitions": "mlsh.py", "meta_round": "mlsh.py", "bfs_distances": "envs.py",
}


def blank(source, name):
    """The source with function `name`'s body, all but its docstring, replaced by a raise: a student's start."""
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    lines = source.splitlines(keepends=True)
    indent = " " * body[0].col_offset
    stub = f"{indent}raise NotImplementedError('exercise: write {name}')\n"
    return "".join(lines[:body[0].lineno - 1] + [stub] + lines[fn.end_lineno:])


@pytest.mark.skipif(bool(os.environ.get("MLSH_BLANKED")), reason="already inside an exercise check")
@pytest.mark.parametrize("name", list(EXERCISES), ids=[f"exercise{i + 1}" for i in range(len(EXERCISES))])
def test_each_exercise_check_fails_when_its_function_is_blanked(name, tmp_path):
    here = Path(__file__).resolve().parent
    for f in ["mlsh.py", "envs.py", "sweep.py", "test_mlsh.py"]:
        (tmp_path / f).write_text((here / f).read_text())
    target = tmp_path / EXERCISES[name]
    target.write_text(blank(target.read_text(), name))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", name, "test_mlsh.py"],
                       cwd=tmp_path, env={**os.environ, "MLSH_BLANKED": "1"}, capture_output=True, text=True,
                       timeout=600)
    # exit code 1: tests were selected and failed (5 would mean the check selects no test at all)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "NotImplementedError: exercise: write " + name in r.stdout
