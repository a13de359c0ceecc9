"""Tests for mlsh.py and envs.py: gradients, advantages, environment semantics, learning.

Run: python -m pytest -q
"""
import ast
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import check_grad

import envs
import mlsh


# ---------------------------------------------------------------------------
# Exercise 1, mlp_backward: hand-written backprop against finite differences (float64)
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
    out, hs = mlsh.mlp_forward(p, x)
    grads = mlsh.mlp_backward(p, hs, out - target)
    assert sorted(grads) == sorted(p), \
        f"mlp_backward returned gradients for {sorted(grads)}; the network has {sorted(p)}: one per weight"
    for k in p:
        assert np.shape(grads[k]) == p[k].shape, \
            f"mlp_backward's gradient {k} has shape {np.shape(grads[k])}; the weight {k} has {p[k].shape}"

    def f(v):
        out, _ = mlsh.mlp_forward(_unflat(v, p), x)
        return 0.5 * ((out - target) ** 2).sum()

    def g(v):
        q = _unflat(v, p)
        out, hs = mlsh.mlp_forward(q, x)
        return _flat(mlsh.mlp_backward(q, hs, out - target))

    for k in p:                                  # layer by layer first, to say where it goes wrong
        one = lambda v, k=k: {**p, k: v.reshape(p[k].shape)}
        fk = lambda v: 0.5 * ((mlsh.mlp_forward(one(v), x)[0] - target) ** 2).sum()
        gk = lambda v: mlsh.mlp_backward(one(v), mlsh.mlp_forward(one(v), x)[1],
                                         mlsh.mlp_forward(one(v), x)[0] - target)[k].ravel()
        err = check_grad(fk, gk, p[k].ravel(), epsilon=1e-7) / np.linalg.norm(gk(p[k].ravel()))
        assert err < 1e-6, (f"mlp_backward's gradient is off for {k}: relative error {err:.2g} against "
                            f"finite differences (layers are W0, b0 first; the last layer is W2, b2)")
    err = _rel_err(f, g, p)
    assert err < 1e-6, f"mlp_backward's gradient is off: relative error {err:.2g} against finite differences"



def test_mlp_backward_takes_one_hot_cells():
    # a maze's one-hot rows come as their cells (integers): layer 0 looks its row up (mlp_forward),
    # and mlp_backward must give the gradients the one-hot rows would have given
    rng = np.random.default_rng(2)
    G, B, D = 3, 12, 6
    p = mlsh.mlp_init(rng, G, [D, 7, 5, 4], out_scale=0.7, dtype=np.float64)
    cells = rng.integers(D, size=(G, B))
    cells[:, :3] = 2                                       # a cell met more than once in a batch
    out, hs = mlsh.mlp_forward(p, np.eye(D)[cells])
    out_c, hs_c = mlsh.mlp_forward(p, cells)
    assert np.array_equal(out, out_c), "mlp_forward's lookup of cells differs from the one-hot rows' matmul"
    dout = rng.standard_normal(out.shape)
    dense = mlsh.mlp_backward(p, hs, dout)
    try:
        given = mlsh.mlp_backward(p, hs_c, dout)
    except Exception as e:
        raise AssertionError(f"mlp_backward fails when layer 0's input comes as cells (hs[0] integers (G, B), "
                             f"a maze's one-hot rows; their W0 gradient is one_hot_T): {type(e).__name__}: {e}"
                             ) from None
    for k in p:
        assert np.shape(given[k]) == p[k].shape and np.allclose(given[k], dense[k], rtol=1e-10, atol=1e-12), \
            (f"mlp_backward's gradient {k} for an input given as cells is not the one the one-hot rows give "
             f"(their W0 gradient is one_hot_T)")

def test_value_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    vf = mlsh.mlp_init(rng, 2, [6, 8, 1], dtype=np.float64)
    x, ret, w = rng.standard_normal((2, 40, 6)), rng.standard_normal((2, 40)), rng.random((2, 40))
    w /= w.sum(1, keepdims=True)
    f = lambda v: mlsh.value_loss(mlsh.mlp_forward(_unflat(v, vf), x)[0], ret, w)[0].sum()

    def g(v):
        out, hs = mlsh.mlp_forward(_unflat(v, vf), x)
        return _flat(mlsh.mlp_backward(_unflat(v, vf), hs, mlsh.value_loss(out, ret, w)[1]))

    assert _rel_err(f, g, vf) < 1e-6


# ---------------------------------------------------------------------------
# Exercise 2, ppo_loss: the clipped surrogate, the entropy bonus and their gradient
# ---------------------------------------------------------------------------

def _ppo_case(seed=1, G=2, B=40, A=4):
    """Logits, actions, old log probs spread around the current ones (so that some ratios are clipped
    and some not), advantages and weights."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((G, B, A))
    act = rng.integers(0, A, (G, B))
    logp = np.take_along_axis(mlsh.log_softmax(logits), act[..., None], -1)[..., 0]
    old_logp = logp + rng.normal(0, 0.3, (G, B))
    w = rng.random((G, B))
    return logits, act, old_logp, rng.standard_normal((G, B)), w / w.sum(1, keepdims=True)


def test_ppo_loss_gradient_matches_finite_differences():
    logits, act, old_logp, adv, w = _ppo_case()
    ratio = np.exp(np.take_along_axis(mlsh.log_softmax(logits), act[..., None], -1)[..., 0] - old_logp)
    clipped = np.abs(ratio - 1) > 0.2
    assert 0.1 < clipped.mean() < 0.9            # both branches of the clip are exercised
    f = lambda z: mlsh.ppo_loss(z.reshape(logits.shape), act, old_logp, adv, w, 0.2, 0.05)[0].sum()
    g = lambda z: mlsh.ppo_loss(z.reshape(logits.shape), act, old_logp, adv, w, 0.2, 0.05)[1].ravel()
    loss, dlogits = mlsh.ppo_loss(logits, act, old_logp, adv, w, 0.2, 0.05)
    assert np.shape(loss) == (2,) and np.shape(dlogits) == logits.shape, \
        f"ppo_loss returns a loss per network (2,) and dL/dlogits {logits.shape}; got {np.shape(loss)} " \
        f"and {np.shape(dlogits)}"
    for name, ent, keep in [("the surrogate alone (ent_coef = 0)", 0.0, ~clipped),
                            ("the surrogate where the ratio is clipped", 0.0, clipped),
                            ("the entropy bonus alone (advantages 0)", 0.05, None)]:
        a = adv * keep if keep is not None else 0 * adv
        fk = lambda z: mlsh.ppo_loss(z.reshape(logits.shape), act, old_logp, a, w, 0.2, ent)[0].sum()
        gk = lambda z: mlsh.ppo_loss(z.reshape(logits.shape), act, old_logp, a, w, 0.2, ent)[1].ravel()
        num = np.array([(fk(logits.ravel() + e) - fk(logits.ravel() - e)) / 2e-6
                        for e in 1e-6 * np.eye(logits.size)])
        err = np.linalg.norm(num - gk(logits.ravel())) / max(np.linalg.norm(num), 1e-12)
        assert err < 1e-5 or np.linalg.norm(num - gk(logits.ravel())) < 1e-8, \
            f"ppo_loss's gradient of {name} is off: relative error {err:.2g} against finite differences"
    err = check_grad(f, g, logits.ravel(), epsilon=1e-7) / np.linalg.norm(g(logits.ravel()))
    assert err < 1e-6, f"ppo_loss's gradient is off: relative error {err:.2g} against finite differences"


def test_ppo_loss_by_hand():
    # two actions, pi = (0.5, 0.5), action 0 taken with old probability 0.25: the ratio r = 2
    logits, act, old_logp, w = np.zeros((1, 1, 2)), np.array([[0]]), np.log([[0.25]]), np.ones((1, 1))
    cases = [  # (A, what it tests, loss, dL/dlogits)
        (1.0, "A = +1, r = 2 > 1 + clip: min(r A, 1.2 A) is the clipped term 1.2, which has no gradient",
         [-1.2], [[[0.0, 0.0]]]),
        (-1.0, "A = -1, r = 2: min(-2, -1.2) = -2 is the unclipped term; dL/dz = -r A (onehot - pi)",
         [2.0], [[[1.0, -1.0]]]),
    ]
    for a, what, loss_by_hand, grad_by_hand in cases:
        loss, dlogits = mlsh.ppo_loss(logits, act, old_logp, np.array([[a]]), w, clip=0.2, ent_coef=0.0)
        assert np.allclose(loss, loss_by_hand), \
            f"ppo_loss: {what}; the loss (minimised: minus the surrogate) is {loss_by_hand[0]}, got {loss}"
        assert np.allclose(dlogits, grad_by_hand), \
            f"ppo_loss: {what}: dL/dlogits is {grad_by_hand[0][0]}, got {np.ravel(dlogits)}"
    # the ratio inside [1 - clip, 1 + clip] (r = 1.1): both terms are equal and the gradient is r A (onehot - pi)
    loss, dlogits = mlsh.ppo_loss(logits, act, np.log([[0.5 / 1.1]]), np.array([[1.0]]), w, 0.2, 0.0)
    assert np.allclose(loss, [-1.1]) and np.allclose(dlogits, [[[-0.55, 0.55]]]), \
        (f"ppo_loss: with r = 1.1 inside the clip range the surrogate is r A = 1.1 and its gradient must "
         f"flow: dL/dz = -r A (onehot - pi) = (-0.55, 0.55); got loss {loss}, gradient {np.ravel(dlogits)}")
    # the entropy bonus of a uniform policy is log 2 and is maximal there: the loss is -ent_coef log 2
    loss, dlogits = mlsh.ppo_loss(logits, act, np.log([[0.5]]), np.array([[0.0]]), w, clip=0.2, ent_coef=0.1)
    assert np.allclose(loss, [-0.1 * np.log(2)]) and np.allclose(dlogits, 0.0), \
        (f"ppo_loss: the entropy of a uniform policy over 2 actions is log 2, a bonus, so the loss is "
         f"-0.1 log 2 = {-0.1 * np.log(2):.4f} with zero gradient; got {loss}, {np.ravel(dlogits)}")
    # an entropy bonus pushes a peaked policy towards uniform: a descent step must lower the top logit
    _, dlogits = mlsh.ppo_loss(np.array([[[2.0, 0.0]]]), act, np.log([[0.5]]), np.array([[0.0]]), w, 0.2, 0.1)
    assert dlogits[0, 0, 0] > 0 > dlogits[0, 0, 1], \
        (f"ppo_loss: an entropy bonus rewards uncertainty, so dL/dz is positive for the likelier action "
         f"and descent lowers it; got {np.ravel(dlogits)}")
    # the weights w: the loss is the w-weighted sum over the batch, not the plain mean
    two = np.zeros((1, 2, 2))
    loss, dlogits = mlsh.ppo_loss(two, np.array([[0, 0]]), np.log([[0.5, 0.5]]), np.array([[1.0, -1.0]]),
                                  np.array([[0.25, 0.75]]), 0.2, 0.0)
    assert np.allclose(loss, [-(0.25 * 1 - 0.75 * 1)]) and np.allclose(dlogits[0, 1], [0.375, -0.375]), \
        (f"ppo_loss: samples count by their weights w (summing to 1): with r = 1, A = (1, -1) and "
         f"w = (0.25, 0.75) the loss is 0.5 and the second sample's dL/dz (0.375, -0.375); got {loss}, "
         f"{dlogits[0, 1]}")


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
# Exercise 3, gae: advantages backwards through time
# ---------------------------------------------------------------------------

def _gae_case(S=60, n=5, seed=3):
    rng = np.random.default_rng(seed)
    rew, val, next_val = rng.random((S, n)), rng.standard_normal((S, n)), rng.standard_normal((S, n))
    term = rng.random((S, n)) < 0.08
    trunc = ~term & (rng.random((S, n)) < 0.08)
    return rew, val, next_val, term, term | trunc


def test_gae_by_hand():
    # one stream of 4 steps: the goal is reached at step 2 (terminated), the step limit hits at 3 (truncated)
    rew = np.array([[0.0], [0.0], [1.0], [0.0]])
    val = next_val = np.full((4, 1), 0.5)
    term = np.array([[0], [0], [1], [0]], bool)
    end = np.array([[0], [0], [1], [1]], bool)
    # delta = r + 0.9 (1 - term) V' - V = (-0.05, -0.05, 0.5, -0.05); A_t = delta_t + 0.45 (1 - end_t) A_t+1
    expected = np.array([[-0.05 + 0.45 * 0.175], [-0.05 + 0.45 * 0.5], [0.5], [-0.05]])
    got = mlsh.gae(rew, val, next_val, term, end, 0.9, 0.5)
    assert np.shape(got) == (4, 1), f"gae returns one advantage per step and stream, (4, 1); got {np.shape(got)}"
    assert np.allclose(got, expected), \
        f"gae on the worked example (the comments of test_gae_by_hand) gives {np.ravel(got)}, not {np.ravel(expected)}"


def test_gae_does_not_flow_across_an_episode_end():
    rew, val, next_val, _, _ = (a[:, :1] for a in _gae_case(S=8, n=1))
    later = rew.copy()
    later[4:] += 10.0                                     # after step 3 comes another episode
    for kind, is_term in [("truncation (end, not term)", False), ("termination (term and end)", True)]:
        term, end = np.zeros((8, 1), bool), np.zeros((8, 1), bool)
        end[3], term[3] = True, is_term                   # the episode ends at step 3
        a = mlsh.gae(rew, val, next_val, term, end, 0.99, 0.95)
        b = mlsh.gae(later, val, next_val, term, end, 0.99, 0.95)
        assert np.allclose(a[:4], b[:4]), \
            (f"gae: the advantage flows back across a {kind} at step 3: A_t for t <= 3 changed when only the "
             f"rewards after step 3 did. The sum must stop at every episode end (end[t]), not only at term")


def test_gae_bootstraps_through_a_truncation_and_never_through_a_termination():
    rew, val, next_val, _, _ = (a[:, :1] for a in _gae_case(S=6, n=1))
    term, end = np.zeros((6, 1), bool), np.zeros((6, 1), bool)
    change = lambda t: (mlsh.gae(rew, val, next_val + (np.arange(6) == t)[:, None], term, end, 0.9, 0.5)
                        - mlsh.gae(rew, val, next_val, term, end, 0.9, 0.5))[:, 0]
    assert np.allclose(change(0), [0.9, 0, 0, 0, 0, 0]), \
        (f"gae: delta_t = r_t + gamma V(s_(t+1)) - V(s_t) takes V(s_(t+1)) from next_val[t]: raising "
         f"next_val[0] by 1 must raise A_0 by gamma = 0.9 and nothing else; the advantages changed by "
         f"{change(0).round(3)}")
    end[2] = True                                         # truncated at step 2: the final observation's value counts
    assert np.allclose(change(2), [0.9 * 0.45 ** 2, 0.9 * 0.45, 0.9, 0, 0, 0]), \
        (f"gae: at a truncation (end without term) the episode was cut short, so delta bootstraps from "
         f"next_val: raising next_val[2] by 1 must raise A_2 by gamma = 0.9 (and A_1, A_0 by gamma lam "
         f"times that); the advantages changed by {change(2).round(3)}")
    term[2] = True                                        # terminated at step 2: no value after it
    assert np.allclose(change(2), 0.0), \
        (f"gae: after a termination there is no next state, so next_val[2] must not count (1 - term); "
         f"raising it changed the advantages by {change(2).round(3)}")


def test_gae_is_the_recursion_on_many_streams():
    rew, val, next_val, term, end = _gae_case()
    gamma, lam = 0.97, 0.9
    before = [a.copy() for a in (rew, val, next_val, term, end)]
    adv = mlsh.gae(rew, val, next_val, term, end, gamma, lam)
    assert all(np.array_equal(a, b) for a, b in zip(before, (rew, val, next_val, term, end))), \
        "gae must not change its inputs"
    assert np.shape(adv) == rew.shape, f"gae returns an (S, n) array like rew, {rew.shape}; got {np.shape(adv)}"
    delta = rew + gamma * (1.0 - term) * next_val - val
    back = adv.copy()
    back[:-1] -= gamma * lam * (1.0 - end[:-1]) * adv[1:]          # A_t - gamma lam (1 - end_t) A_{t+1}
    bad = np.argwhere(~np.isclose(back, delta, atol=1e-9))
    assert len(bad) == 0, \
        (f"gae breaks A_t = delta_t + gamma lam (1 - end_t) A_(t+1) (with A_S = 0) at step {bad[0][0]} of "
         f"stream {bad[0][1]} (of {rew.shape[1]}, over {rew.shape[0]} steps): is every stream, every step and "
         f"the last step done, with gamma lam (not gamma alone) and the mask of step t itself?")


# ---------------------------------------------------------------------------
# Exercise 4, master_transitions: the master's own MDP
# ---------------------------------------------------------------------------

def _value_net(G, D):
    """G linear value functions (no hidden layer): network g's value of obs is (g + 1) * obs[0]."""
    p = mlsh.mlp_init(np.random.default_rng(0), G, [D, 1], dtype=np.float64)
    p["W0"][:] = 0.0
    p["W0"][:, 0, 0] = np.arange(1, G + 1)
    p["b0"][:] = 0.0
    return mlsh.Net(p, 1e-3)


def _rollout(decide, rew, term=None, trunc=None, obs=None, next_obs=None):
    S, n = rew.shape
    z = np.zeros((S, n))
    none = np.zeros((S, n), bool)
    return mlsh.Rollout(obs=np.zeros((S, n, 2)) if obs is None else obs,
                        next_obs=np.zeros((S, n, 2)) if next_obs is None else next_obs, decide=decide,
                        choice=z.astype(int), choice_logp=z, act=z.astype(int), act_logp=z, rew=rew,
                        term=none if term is None else term, trunc=none if trunc is None else trunc,
                        score=None, success=None, usage=None)


def _transitions(ro, E, gamma, lam, G, smdp=False):
    """master_transitions' result as {(step, copy): (advantage, return)}, whatever its order."""
    t, i, adv, ret = mlsh.master_transitions(ro, _value_net(G, 2), E, gamma, lam, smdp=smdp)
    assert len(t) == len(i) == len(adv) == len(ret), \
        "master_transitions returns t, i, adv, ret with one entry per decision each"
    return {(int(a), int(b)): (float(c), float(d)) for a, b, c, d in zip(t, i, adv, ret)}


def _check_decisions(got, expected, why):
    assert set(got) == set(expected), \
        (f"master_transitions: one transition per decision, at the (step, copy) where ro.decide is True: "
         f"expected {sorted(expected)}, got {sorted(got)}")
    for key, (adv, ret) in expected.items():
        assert np.isclose(got[key][0], adv), (f"master_transitions: the decision at step {key[0]} of copy "
                                              f"{key[1]} ({why[key]}) has advantage {got[key][0]:.4f}, "
                                              f"expected {adv:.4f}")
        assert np.isclose(got[key][1], ret), (f"master_transitions: the decision at step {key[0]} of copy "
                                              f"{key[1]} has return {got[key][1]:.4f}, expected {ret:.4f}: "
                                              f"the return is the advantage plus V(obs)")


def test_master_transitions_reward_is_the_sum_over_its_N_steps():
    # one copy, decisions at steps 0 and 3 (N = 3); rewards at steps 1 and 5
    decide = np.array([[1], [0], [0], [1], [0], [0]], bool)
    rew = np.array([[0.0], [1.0], [0.0], [0.0], [0.0], [1.0]])
    got = _transitions(_rollout(decide, rew), 1, 0.5, 1.0, 1)
    # macro rewards are 1 and 1; with V = 0, gamma = 0.5 per decision: A = [1 + 0.5 * 1, 1]
    _check_decisions(got, {(0, 0): (1.5, 1.5), (3, 0): (1.0, 1.0)},
                     {(0, 0): "its reward is the sum of rew over steps 0-2, then gamma per decision",
                      (3, 0): "its reward is the sum over steps 3-5"})


def test_master_transitions_end_with_the_episode():
    # the episode terminates at step 1 (inside the first decision); step 2 starts a new one
    decide = np.array([[1], [0], [1], [0]], bool)
    rew = np.array([[0.0], [1.0], [0.0], [1.0]])
    term = np.array([[0], [1], [0], [0]], bool)
    got = _transitions(_rollout(decide, rew, term=term), 1, 0.5, 1.0, 1)
    _check_decisions(got, {(0, 0): (1.0, 1.0), (2, 0): (1.0, 1.0)},
                     {(0, 0): "the episode terminates at step 1: nothing after it counts",
                      (2, 0): "a new episode"})


def test_master_transitions_with_values_truncations_and_two_learners():
    # n = 4 copies, E = 2 per learner: copies 0, 1 are learner 0 (V = obs[0]), copies 2, 3 learner 1
    # (V = 2 obs[0]). gamma = 0.5, lam = 0.5 (gamma lam = 0.25), S = 6 steps. obs[t, i, 0] = t / 10 and
    # next_obs[t, i, 0] = (t + 1) / 10, except where an episode ended: there next_obs is the final one.
    S, n = 6, 4
    decide, rew = np.zeros((S, n), bool), np.zeros((S, n))
    term, trunc = np.zeros((S, n), bool), np.zeros((S, n), bool)
    obs = np.zeros((S, n, 2))
    obs[..., 0] = np.arange(S)[:, None] / 10
    next_obs = obs + 0.1 * np.array([1.0, 0.0])
    # copy 0: decisions at 0, 2, 4; truncated at step 3 (final observation 0.9); reward 1 at step 5
    decide[[0, 2, 4], 0] = True
    trunc[3, 0], next_obs[3, 0, 0], rew[5, 0] = True, 0.9, 1.0
    # copy 2: decisions at 0, 2, 3, 5; 0.5 at step 1, 1 at step 2 where the episode terminates (final
    # observation 0.7, never valued), 0.25 at step 3
    decide[[0, 2, 3, 5], 2] = True
    rew[[1, 2, 3], 2] = [0.5, 1.0, 0.25]
    term[2, 2], next_obs[2, 2, 0] = True, 0.7
    # copies 1 and 3: one decision at step 0 that lasts the whole rollout, no reward
    decide[0, [1, 3]] = True
    got = _transitions(_rollout(decide, rew, term, trunc, obs, next_obs), 2, 0.5, 0.5, 2)
    # by hand: delta = R + gamma (1 - term) V(next_obs of the decision's last step) - V(obs); then
    # A = delta + gamma lam (1 - end) A_next, where end is the episode's end or the rollout's
    expected = {
        (4, 0): (1 + 0.5 * 0.6 - 0.4, 0.9 + 0.4),          # R 1; the rollout ends: bootstrap V(0.6)
        (2, 0): (0.5 * 0.9 - 0.2, 0.25 + 0.2),             # truncated at 3: bootstrap V(final 0.9), stop
        (0, 0): (0.5 * 0.2 - 0.0 + 0.25 * 0.25, 0.1625),   # then gamma lam times the next decision's A
        (0, 1): (0.5 * 0.6, 0.3),                          # one decision over all 6 steps
        (5, 2): (0.5 * 1.2 - 1.0, -0.4 + 1.0),             # learner 1: V = 2 obs[0]
        (3, 2): (0.25 + 0.5 * 1.0 - 0.6 + 0.25 * -0.4, 0.05 + 0.6),    # R = 0.25 over steps 3-4
        (2, 2): (1.0 - 0.4, 1.0),                          # terminated: no value after it, and stop
        (0, 2): (0.5 + 0.5 * 0.4 - 0.0 + 0.25 * 0.6, 0.85),  # R = 0 + 0.5 over steps 0-1
        (0, 3): (0.5 * 1.2, 0.6),
    }
    why = {(4, 0): "the rollout ends inside it: bootstrap from next_obs of its last step, not a termination",
           (2, 0): "truncated at step 3: bootstrap from the final observation's value, and A stops there",
           (0, 0): "its successor's advantage comes back through gamma lam",
           (0, 1): "one decision for the whole rollout",
           (5, 2): "learner 1's value network: copy i belongs to learner i // E",
           (3, 2): "a new episode; its reward is summed over its own steps 3-4",
           (2, 2): "the episode terminates at its one step: no value after it",
           (0, 2): "its reward is summed over steps 0-1, and it ends where the next decision starts",
           (0, 3): "learner 1's value network, one decision"}
    _check_decisions(got, expected, why)


# ---------------------------------------------------------------------------
# Rows and networks: the layout converters
# ---------------------------------------------------------------------------

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


@contextlib.contextmanager
def _time_limit(seconds=20):
    """Stop what runs inside with a message if it has not ended within `seconds` (bfs_distances' loop)."""
    def too_long(*_):
        raise TimeoutError(f"bfs_distances did not finish within {seconds} s: does the frontier keep "
                           f"cells already seen, so that it never empties?")
    old = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _bfs_in_time(adjacency):
    with _time_limit():
        return envs.bfs_distances(adjacency)


def _graph(n, edges):
    a = np.zeros((n, n), bool)
    for i, j in edges:
        a[i, j] = True
    return a


def test_bfs_distances_by_hand():
    cases = [  # (what, adjacency, distances by hand)
        ("a one-way path 0 -> 1 -> 2 and a cell 3 on its own", _graph(4, [(0, 1), (1, 2)]),
         [[0, 1, 2, -1], [-1, 0, 1, -1], [-1, -1, 0, -1], [-1, -1, -1, 0]]),
        ("a one-way cycle 0 -> 1 -> 2 -> 3 -> 0", _graph(4, [(0, 1), (1, 2), (2, 3), (3, 0)]),
         [[0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1], [1, 2, 3, 0]]),
        ("two ways from 0 to 3, of 1 and 3 moves, and self-loops (moves into a wall)",
         _graph(4, [(0, 1), (1, 2), (2, 3), (0, 3), (0, 0), (2, 2)]),
         [[0, 1, 2, 1], [-1, 0, 1, 2], [-1, -1, 0, 1], [-1, -1, -1, 0]]),
    ]
    for what, a, by_hand in cases:
        got = _bfs_in_time(a)
        assert np.shape(got) == a.shape, f"bfs_distances returns an (n, n) array like adjacency; got {np.shape(got)}"
        assert np.issubdtype(np.asarray(got).dtype, np.integer), \
            f"bfs_distances returns whole numbers of moves (an int array); got dtype {np.asarray(got).dtype}"
        assert np.array_equal(got, by_hand), \
            (f"bfs_distances on {what}: dist[i, j], the fewest moves from i to j (-1 if j cannot be reached, "
             f"0 from a cell to itself), should be\n{np.array(by_hand)}\ngot\n{got}")
    batch = np.stack([cases[0][1], cases[1][1]])
    got = _bfs_in_time(batch)
    assert np.shape(got) == batch.shape and np.array_equal(got, [cases[0][2], cases[1][2]]), \
        "bfs_distances on a batch (2, n, n) of graphs must give each graph's own distances, (2, n, n)"


def test_bfs_distances_are_the_fewest_moves():
    """On Four Rooms, a random one-way graph and two mazes side by side (unreachable from each other):
    dist[i, i] = 0, dist[i, j] = 1 + the least dist[k, j] over the cells k one move from i, and -1
    exactly where no such k reaches j. These equations have one solution: the shortest paths."""
    rng = np.random.default_rng(5)
    with _time_limit():                                   # a Maze computes its distances
        four, small = envs.Maze(envs.FOUR_ROOMS).adjacency, envs.Maze(envs.room_maze(2, size=2)).adjacency
    two = np.zeros((len(four) + len(small),) * 2, bool)
    two[:len(four), :len(four)], two[len(four):, len(four):] = four, small
    for what, a in [("Four Rooms", four), ("a random one-way graph", rng.random((40, 40)) < 0.06),
                    ("two mazes with no way between them", two)]:
        d = np.asarray(_bfs_in_time(a))
        assert d.shape == a.shape, f"bfs_distances on {what}: shape {d.shape}, not {a.shape}"
        assert (np.diag(d) == 0).all(), f"bfs_distances on {what}: a cell is 0 moves from itself"
        far = np.where(d < 0, np.inf, d).astype(float)
        via = np.where(a[:, :, None], far[None, :, :], np.inf).min(axis=1) + 1   # 1 + min_k dist[k, j]
        np.fill_diagonal(via, 0)
        bad = np.argwhere(far != via)
        if len(bad):
            i, j = bad[0]
            raise AssertionError(
                f"bfs_distances on {what}: dist[{i}, {j}] is {d[i, j]}, but the fewest moves from {i} to {j} "
                f"is {'none: -1' if via[i, j] == np.inf else int(via[i, j])} (one move from {i} to a "
                f"neighbour k, then dist[k, {j}]; -1 marks a cell that cannot be reached)")


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
    # on the open grid the shortest way round the unpaid mark is the Manhattan distance, plus 2 when
    # the mark lies on the one straight line between the agent and the paying mark
    (r, c), (br, bc), (gr, gc) = (env.maze.cells[x].T for x in (env.pos, env.marks[:, 0], env.marks[:, 1]))
    between = lambda x, lo, hi: (np.minimum(lo, hi) < x) & (x < np.maximum(lo, hi))
    blocked = ((r == gr) & (br == r) & between(bc, c, gc)) | ((c == gc) & (bc == c) & between(br, r, gr))
    assert np.array_equal(env.best, np.abs(r - gr) + np.abs(c - gc) + 2 * blocked) and blocked.any()


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
    cfg = mlsh.Config(eval_iters=12, eval_seeds=1)
    fam = envs.GoalTasks()
    fam.test_tasks = fam.test_tasks[:2]
    score, success, _ = mlsh.fine_tune(cfg, fam, lambda rng, L: mlsh.new_agent(rng, L, fam.obs_dim, 4, cfg, 0.03), 1)
    assert success[:, :2].mean() < 0.5              # it did not start out solved
    assert success[:, -3:].mean() > 0.9 and score[:, -3:].mean() > 0.7


def test_mlsh_beats_flat_on_bandits():
    cfg, _ = mlsh.parse_args(["--env", "bandits", "--rounds", "6", "--eval-seeds", "2", "--eval-iters", "10"])
    fam = mlsh.make_family(cfg)
    subs, history = mlsh.meta_train(cfg, fam, np.random.default_rng([cfg.seed, 1]))
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
    return mlsh.Net(p, 0.0)


def test_a_primitive_choice_lasts_one_step_and_trains_no_sub_policy():
    cfg = mlsh.Config(hidden=8, macro=3)
    fam = envs.GoalTasks()
    rng = np.random.default_rng(0)
    K, A = 2, fam.n_actions
    subs = mlsh.Net.new(rng, K, fam.obs_dim, A, cfg, cfg.sub_lr, 0.01)
    agent = mlsh.new_agent(rng, 1, fam.obs_dim, K + A, cfg, cfg.master_lr, cfg.macro, subs, critic=True,
                           primitives=True)
    out = f"b{cfg.layers}"
    runner = mlsh.Runner(fam.make(np.repeat(fam.train_tasks[:1], 4), seed=1), 1)
    agent.master.p[out][:] = -50.0
    agent.master.p[out][0, 0, K + 1] = 50.0                    # the master always takes primitive 1 (right)
    ro = runner.run(agent, 12, rng)
    assert ro.decide.all() and (ro.choice == K + 1).all() and (ro.act == 1).all() and ro.usage.sum() == 0
    before = {k: v.copy() for k, v in subs.p.items()}
    mlsh.update(agent, ro, cfg, rng, train_subs=True)
    assert all(np.array_equal(before[k], subs.p[k]) for k in before)     # no step was a sub-policy's
    agent.master.p[out][:] = -50.0
    agent.master.p[out][0, 0, 1] = 50.0                        # now always sub-policy 1, for N = 3 steps
    runner.set_tasks(np.repeat(fam.train_tasks[:1], 4))
    ro = runner.run(agent, 12, rng)
    episode_start = np.r_[np.ones((1, 4), bool), (ro.term | ro.trunc)[:-1]]
    assert (ro.choice == 1).all()
    for c in range(4):                                         # decisions 3 steps apart, or at a new episode
        d = np.flatnonzero(ro.decide[:, c])
        assert d[0] == 0 and all(b - a == 3 or episode_start[b, c] for a, b in zip(d[:-1], d[1:]))
        assert all(episode_start[t, c] <= ro.decide[t, c] for t in range(12))
    mlsh.update(agent, ro, cfg, rng, train_subs=True)
    assert any(not np.array_equal(before[k], subs.p[k]) for k in before)


def test_interruption_stops_a_skill_the_master_no_longer_wants():
    fam = envs.GoalTasks()
    rng = np.random.default_rng(0)
    K, A, start = 2, fam.n_actions, fam.maze.start
    for interrupt, lasts in [(0.0, 3), (0.5, 1)]:
        cfg = mlsh.Config(hidden=8, layers=0, macro=3, interrupt=interrupt)   # a linear master
        subs = _fixed_skills(fam, [1, 1])                          # both always go right: off the start
        agent = mlsh.new_agent(rng, 1, fam.obs_dim, K + A, cfg, cfg.master_lr, cfg.macro, subs, primitives=True)
        agent.master.p["W0"][:] = 0.0
        agent.master.p["W0"][0, :, K + 2] = 50.0                   # everywhere: primitive 2 (down) ...
        agent.master.p["W0"][0, start, 1] = 100.0                  # ... but skill 1 at the start
        runner = mlsh.Runner(fam.make(fam.train_tasks[-1:], seed=1), 1)    # a goal far away
        ro = runner.run(agent, 6, rng)
        assert (ro.choice[:lasts, 0] == 1).all() and ro.choice[lasts, 0] == K + 2 and ro.decide[lasts, 0]


def test_master_transitions_discount_per_env_step_with_smdp():
    # one copy, decisions at 0 (3 steps) and 3 (1 step); reward 1 at step 2 and at step 3; V = 0
    decide = np.array([[1], [0], [0], [1]], bool)
    rew = np.array([[0.0], [0.0], [1.0], [1.0]])
    # per env step: R_0 = 0.5^2 * 1 = 0.25, then gamma^3 = 0.125 times A_1 = 1: A_0 = 0.375
    _check_decisions(_transitions(_rollout(decide, rew), 1, 0.5, 1.0, 1, smdp=True),
                     {(0, 0): (0.25 + 0.125 * 1.0, 0.375), (3, 0): (1.0, 1.0)},
                     {(0, 0): "smdp: rewards discounted per env step within it, gamma^3 after its 3 steps",
                      (3, 0): "smdp: a decision of one step"})
    # per decision: 1 + 0.5 * 1
    _check_decisions(_transitions(_rollout(decide, rew), 1, 0.5, 1.0, 1),
                     {(0, 0): (1.5, 1.5), (3, 0): (1.0, 1.0)},
                     {(0, 0): "without smdp, gamma once per decision", (3, 0): "one step"})


def test_the_papers_reward_pays_every_step_on_the_goal_and_never_ends_there():
    rows = ["#####", "#S..#", "#####"]                           # a corridor: S, a, goal by the wall
    maze = envs.Maze(rows)
    best = envs.best_returns(maze, 5)
    assert best[0, 2] == 4 and best[0, 1] == 5                   # 2 moves then 3 bumps; 1 move then 4 bumps
    room = envs.Maze(["#######", "#S....#", "#.....#", "#.....#", "#######"])
    centre = room.index[2, 3]                                    # no wall beside it: off and on again
    assert room.dist[0, centre] == 3 and envs.best_returns(room, 7)[0, centre] == 3   # steps 3, 5 and 7
    env = envs.GoalMaze([2], rows=rows, max_steps=5, reward="every_step", seed=0)
    env.reset()
    rewards = []
    for a in [1, 1, 1, 1, 3]:                                    # right, right, bump, bump, left
        obs, r, term, trunc, info = env.step(np.array([a]))
        rewards.append(r[0])
        assert not term[0]
    assert rewards == [0, 1, 1, 1, 0] and trunc[0] and info["success"][0] and info["score"][0] == 3 / 4
    with pytest.raises(ValueError, match="choose one of reach, every_step"):
        envs.GoalMaze([2], rows=rows, reward="stay")


@pytest.mark.parametrize("reward", ["reach", "every_step"])
def test_reach_with_primitives_can_always_do_the_best(reward):
    # primitives alone can take the shortest path (and then stay, bumping, where the reward pays for it)
    cfg = mlsh.Config(max_steps=12, macro=4, reward=reward)
    fam = mlsh.make_family(cfg)
    maze = fam.maze
    got = mlsh.reach(cfg, fam, _fixed_skills(fam, [1, 2, 0]), rollouts=1)
    near = (maze.dist[maze.start] <= 12) & (np.arange(maze.n_cells) != maze.start)
    assert np.allclose(got["best_score"][near], 1.0) and np.allclose(got["best_success"][near], 1.0)
    only = got["skills_only"]["best_score"]
    assert (only[near] <= 1.0 + 1e-12).all() and (only[near] < 1.0).any()


def test_reach_is_the_best_over_every_sequence_of_choices():
    # deterministic skills from a fixed start: the best master is the best sequence of K^(T/N) choices
    cfg = mlsh.Config(max_steps=12, macro=4, master="paper")
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
    # the paper's reward: every step on g pays; the best sequence collects the most steps on g
    cfg = mlsh.Config(max_steps=12, macro=4, reward="every_step", master="paper")
    fam = mlsh.make_family(cfg)
    got = mlsh.reach(cfg, fam, subs, rollouts=1)
    most = np.zeros(maze.n_cells)
    for seq in sequences:
        cell, on = maze.start, np.zeros(maze.n_cells)
        for t in range(12):
            cell = maze.next_cell[cell, [1, 2, 0][seq[t // 4]]]
            on[cell] += 1
        most = np.maximum(most, on)
    best = envs.best_returns(maze, 12)[maze.start]
    assert np.allclose(got["best_score"][others], (most / np.maximum(best, 1e-9))[others])
    assert (most[others] > 1).any() and np.allclose(got["best_success"][others], best_success[others])


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
    assert set(res["methods"]) == {"mlsh", "mlsh_paper", "random_subs"}      # the paper's master beside MLSH's
    assert res["skills_alone"]["tasks"] == envs.GoalTasks().val_tasks.tolist()
    assert (tmp_path / "curves.png").exists() and (tmp_path / "episode.png").exists()
    assert not list(tmp_path.glob("*.tmp"))      # each figure written through a temporary file


def test_presets_set_the_task_and_flags_still_win():
    cfg, _ = mlsh.parse_args(["--preset", "paper"])
    assert (cfg.env, cfg.max_steps, cfg.macro, cfg.subpolicies, cfg.warmup, cfg.joint, cfg.layers) == \
        ("fourrooms", 100, 25, 4, 20, 30, 2) and cfg.envs * cfg.steps == 2048
    assert mlsh.parse_args(["--preset", "paper", "--macro", "10"])[0].macro == 10
    assert mlsh.parse_args(["--env", "bandits"])[0].preset == "bandits"
    # the default run: MLSH and flat PPO at its validated rate; the flags give the sweeps' full test
    cfg, _ = mlsh.parse_args([])
    assert (cfg.methods, cfg.flat_lrs) == (("mlsh", "flat"), (0.03,))
    cfg, _ = mlsh.parse_args(["--methods", "mlsh", "flat", "shared", "random_subs", "--flat-lrs", "0.003", "0.01"])
    assert (cfg.methods, cfg.flat_lrs) == (("mlsh", "flat", "shared", "random_subs"), (0.003, 0.01))
    assert mlsh.parse_args(["--preset", "rooms"])[0].methods == mlsh.Config().methods   # every baseline


def test_help_lists_every_config_field(capsys):
    with pytest.raises(SystemExit):
        mlsh.parse_args(["--help"])
    text = capsys.readouterr().out
    for f in mlsh.dataclasses.fields(mlsh.Config):
        assert "--" + f.name.replace("_", "-") in text
    # every preset's default where they differ, Four Rooms' among them; one default for --out
    flat = " ".join(text.split())
    assert "--sub-lr SUB_LR Adam step for φ (the paper's 3e-4 was too slow: RESULTS.md) (default: fourrooms 0.001, " \
           "bandits 0.003, paper 0.003, rooms 0.001*)" in flat
    assert "(default: fourrooms 50, bandits 50, paper 100, rooms 112 (follows --rooms)*)" in flat
    assert "--hidden HIDDEN units per hidden layer (tanh) (default: 64)" in flat
    out_help = flat[flat.index("--out OUT folder"):flat.index("--quick a tiny")]
    assert out_help.count("default") == 1 and "runs/<preset>" in out_help


# ---------------------------------------------------------------------------
# Checkpoints, your own maze, figures
# ---------------------------------------------------------------------------

QUICK_BANDITS = ["--quick", "--env", "bandits", "--quiet", "--no-plots"]


def test_checkpoint_round_trip_gives_the_same_sub_policies(tmp_path):
    cfg, _ = mlsh.parse_args(QUICK_BANDITS)
    fam = mlsh.make_family(cfg)
    rng = np.random.default_rng(0)
    subs = mlsh.Net.new(rng, cfg.subpolicies, fam.obs_dim, 4, cfg, cfg.sub_lr)
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
        mlsh.main(QUICK_BANDITS + ["--subpolicies", "3", "--load", ckpt, "--eval-only", "--out", str(tmp_path / "b")])
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


def test_an_interrupted_evaluation_carries_on_where_it_stopped(tmp_path, monkeypatch, capsys):
    argv = QUICK_BANDITS + ["--methods", "mlsh", "random_subs", "flat", "--flat-lrs", "0.01", "0.03",
                            "--render"]
    mlsh.main(argv + ["--out", str(tmp_path / "full")])
    full = capsys.readouterr().out
    real, calls, stop_at = mlsh.fine_tune, [], [3]

    def counted(*args):
        calls.append(1)
        if len(calls) == stop_at[0]:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(mlsh, "fine_tune", counted)
    part = tmp_path / "part"
    again = argv + ["--eval-only", "--load", str(tmp_path / "full" / "checkpoint.npz"), "--out", str(part)]
    with pytest.raises(SystemExit) as e:
        mlsh.main(again)
    out = capsys.readouterr().out
    assert e.value.code == 130 and f"the evaluations that finished are kept in {part}" in out
    assert f"resume with: python mlsh.py {' '.join(again)}" in out
    assert sorted(os.listdir(part)) == [mlsh.KEPT] and len(mlsh.read_kept(part / mlsh.KEPT)[1]) == 2
    # a run of other settings does not replace what was kept
    kept = (part / mlsh.KEPT).read_bytes()
    with pytest.raises(SystemExit) as e:
        mlsh.main(again + ["--seed", "1"])
    assert e.value.code == 2 and "seed is 0 there, 1 here" in capsys.readouterr().err
    assert (part / mlsh.KEPT).read_bytes() == kept
    # the same command carries on: only the two evaluations not kept run, and the numbers (and
    # the episode of learner 0's master, from the kept MLSH evaluation) are the uninterrupted run's
    calls.clear()
    stop_at[0] = 0
    mlsh.main(again)
    assert len(calls) == 2 and not (part / mlsh.KEPT).exists()
    resumed = capsys.readouterr().out
    assert "sub-policy acting" in full and resumed[:resumed.index("AUC =")] == full[:full.index("AUC =")]
    a, b = (json.loads((tmp_path / f / "results.json").read_text())["methods"] for f in ("full", "part"))
    assert a == b


def _kept(folder):
    """A run's results and checkpoint, byte for byte."""
    return {f: (folder / f).read_bytes() for f in ("results.json", "checkpoint.npz")}


def test_a_run_of_other_settings_never_replaces_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    mlsh.main(QUICK_BANDITS + ["--out", str(out)])
    kept = _kept(out)
    others = {"seed is 0 there, 1 here": QUICK_BANDITS + ["--seed", "1"],
              "env is 'bandits' there, 'fourrooms' here": ["--quick", "--quiet", "--no-plots"],
              "methods is": QUICK_BANDITS + ["--eval-only", "--load", str(out / "checkpoint.npz"), "--methods", "mlsh"]}
    for said, argv in others.items():
        with pytest.raises(SystemExit) as e:
            mlsh.main(argv + ["--out", str(out)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert f"{out} holds a run of other settings" in err and said in err and "give --replace" in err, err
        assert _kept(out) == kept, f"{argv} changed the earlier run's files"
    # a run that stopped (its checkpoint, no results yet) is kept the same way, and resumes
    (out / "results.json").unlink()
    with pytest.raises(SystemExit) as e:
        mlsh.main(QUICK_BANDITS + ["--macro", "3", "--out", str(out)])
    assert e.value.code == 2 and "macro is 10 there, 3 here" in capsys.readouterr().err
    mlsh.main(QUICK_BANDITS + ["--rounds", "3", "--out", str(out), "--load", str(out / "checkpoint.npz")])
    # a folder whose run cannot be read is kept too
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "results.json").write_text("{not json")
    with pytest.raises(SystemExit) as e:
        mlsh.main(QUICK_BANDITS + ["--out", str(tmp_path / "damaged")])
    assert e.value.code == 2 and "holds a run that cannot be read" in capsys.readouterr().err
    assert (tmp_path / "damaged" / "results.json").read_text() == "{not json"
    # the same settings again replace the run, as does --replace
    mlsh.main(QUICK_BANDITS + ["--rounds", "3", "--out", str(out)])
    mlsh.main(QUICK_BANDITS + ["--seed", "1", "--replace", "--out", str(out)])
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 1


def test_quick_and_maze_runs_have_folders_of_their_own(tmp_path):
    for f in ["mlsh.py", "envs.py"]:
        (tmp_path / f).write_text((Path(__file__).resolve().parent / f).read_text())
    (tmp_path / "my.txt").write_text(MY_MAZE)
    run = lambda *argv: subprocess.run([sys.executable, "mlsh.py", *argv, "--quiet", "--no-plots"], cwd=tmp_path,
                                       capture_output=True, text=True, timeout=600)
    default = tmp_path / "runs" / "fourrooms"
    assert run("--quick", "--out", str(default)).returncode == 0     # a run in the default run's folder
    kept = _kept(default)
    assert run("--quick").returncode == 0
    assert run("--quick", "--maze", "my.txt").returncode == 0
    assert _kept(default) == kept
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["fourrooms", "fourrooms-quick", "maze-my-quick"]
    for argv, folder in [([], "fourrooms"), (["--maze", "my.txt"], "maze-my"), (["--env", "bandits"], "bandits"),
                         (["--preset", "paper"], "paper")]:
        cfg, _ = mlsh.parse_args(argv)
        assert mlsh.default_out(cfg, quick=False).endswith(os.path.join("runs", folder))


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
    (["--eval-seeds", "0"], "--eval-seeds is 0"),
    (["--eval-iters", "0"], "--eval-iters is 0"),
    (["--slip", "1"], "--slip is 1.0; it is a probability in [0, 1)"),
    (["--slip", "-0.1"], "--slip is -0.1"),
    (["--env", "mujoco"], "--env 'mujoco' is not a task family"),
    (["--eval-only"], "--eval-only evaluates a trained checkpoint: give it with --load FILE"),
    (["--eval-seeds", "three"], "invalid int value: 'three'"),
    (["--max-steps", "100"], "--steps 64 is shorter than --max-steps 100"),
    (["--preset", "paper", "--env", "bandits"], "--preset paper is for --env fourrooms"),
    (["--preset", "large"], "--preset 'large' is not a preset here"),
    (["--methods", "mlsh", "ppo"], "--methods mlsh ppo: choose one or more of mlsh, flat, shared, random_subs"),
    (["--methods", "shared"], "shared needs flat too"),
    (["--eval-split", "train"], "--eval-split 'train': choose test or validation"),
    (["--env", "rooms", "--rooms", "1"], "--rooms is 1; a room maze has at least 2 x 2 rooms"),
    (["--env", "rooms", "--maze", "mazes/example.txt"], "use it with --env fourrooms, not rooms"),
    (["--reward", "stay"], "--reward 'stay': choose reach"),
    (["--env", "bandits", "--reward", "every_step"], "--reward every_step is for goal mazes"),
    (["--master", "flat"], "--master 'flat': choose options"),
])
def test_bad_flags_are_refused_before_training(capsys, flags, expected):
    with pytest.raises(SystemExit) as e:
        mlsh.main(flags)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1          # one line, no usage block, no traceback


def _watch_meta_round(monkeypatch, cfg, rounds=2):
    """meta_round run `rounds` times on Four Rooms, with spies on the runner and on update: what it did,
    as a list of events per round, and the sub-policies."""
    fam = mlsh.make_family(cfg)
    rng = np.random.default_rng(0)
    subs = mlsh.Net.new(rng, cfg.subpolicies, fam.obs_dim, fam.n_actions, cfg, cfg.sub_lr, 0.01)
    runner = mlsh.Runner(fam.make(np.zeros(cfg.tasks * cfg.envs, dtype=int), seed=1), cfg.tasks)
    events, real_run, real_set, real_update = [], runner.run, runner.set_tasks, mlsh.update

    def set_tasks(tasks):
        events.append(("tasks", np.array(tasks)))
        real_set(tasks)

    def run(agent, S, rng):
        ro = real_run(agent, S, rng)
        events.append(("run", agent, S, agent.master.opt.t, ro))
        return ro

    def update(agent, ro, cfg, rng, train_subs=False):
        before = {k: v.copy() for k, v in subs.p.items()}
        real_update(agent, ro, cfg, rng, train_subs=train_subs)
        events.append(("update", agent, ro, train_subs,
                       any(not np.array_equal(before[k], subs.p[k]) for k in before)))

    runner.set_tasks, runner.run = set_tasks, run
    monkeypatch.setattr(mlsh, "update", update)
    out = []
    for _ in range(rounds):
        events.clear()
        rec = mlsh.meta_round(cfg, fam, runner, subs, rng)
        out.append((list(events), rec))
    return fam, subs, out


def test_meta_round_samples_tasks_and_resets_the_master(monkeypatch):
    cfg = mlsh.Config(tasks=3, envs=2, warmup=2, joint=3, hidden=8)
    fam, subs, rounds = _watch_meta_round(monkeypatch, cfg)
    M, E, K = cfg.tasks, cfg.envs, cfg.subpolicies
    agents, drawn = [], []
    for events, _ in rounds:
        tasks = [e[1] for e in events if e[0] == "tasks"]
        assert len(tasks) == 1 and events[0][0] == "tasks", \
            "meta_round: a round starts by giving the runner new tasks, once (runner.set_tasks)"
        t = tasks[0]
        assert t.shape == (M * E,) and (t.reshape(M, E) == t[::E, None]).all(), \
            (f"meta_round: cfg.tasks = {M} tasks, each on cfg.envs = {E} neighbouring copies "
             f"(copy i runs task i // E, learner i // E's): the runner got {t.tolist()}")
        assert set(t) <= set(fam.train_tasks), "meta_round: tasks come from the training tasks (family.sample)"
        drawn.append(t[::E].tolist())
        runs = [e for e in events if e[0] == "run"]
        agent = runs[0][1]
        assert all(e[1] is agent for e in runs), "meta_round: one agent (one master per task) for the whole round"
        agents.append(agent)
        assert runs[0][3] == 0 and agent.master.G == M and agent.master.p[f"b{cfg.layers}"].shape[-1] == K, \
            (f"meta_round: each round starts a fresh master θ (new weights and a new optimiser): "
             f"{M} networks, one per task, over K = {K} choices")
        assert agent.subs is subs, "meta_round: the masters choose among the shared sub-policies `subs`, φ itself"
        assert agent.macro == cfg.macro, \
            f"meta_round: a master decision lasts N = cfg.macro = {cfg.macro} steps; the agent has {agent.macro}"
        assert agent.critic is not None, "meta_round: φ is trained, so the agent needs its per-task critics"
        assert agent.master.opt.lr == cfg.master_lr, \
            f"meta_round: θ learns at cfg.master_lr = {cfg.master_lr}; its Adam step is {agent.master.opt.lr}"
        assert all(e[2] == cfg.steps for e in runs), "meta_round: every iteration runs S = cfg.steps steps"
    assert agents[0] is not agents[1], "meta_round: θ is reset every round: a new agent, not the last round's"
    assert drawn[0] != drawn[1], "meta_round: every round draws new tasks"


def test_meta_round_trains_the_sub_policies_only_after_the_warmup(monkeypatch):
    for W, U in [(2, 3), (0, 2)]:
        cfg = mlsh.Config(tasks=3, envs=2, warmup=W, joint=U, hidden=8)
        _, _, rounds = _watch_meta_round(monkeypatch, cfg)
        for events, rec in rounds:
            runs = [e for e in events if e[0] == "run"]
            updates = [e for e in events if e[0] == "update"]
            assert len(runs) == len(updates) == W + U, \
                (f"meta_round: W + U = {W} + {U} iterations, each a rollout then an update; got "
                 f"{len(runs)} rollouts and {len(updates)} updates")
            assert all(u[2] is r[4] for r, u in zip(runs, updates)), \
                "meta_round: each update learns from the rollout just run"
            phases = [u[3] for u in updates]
            assert phases == [False] * W + [True] * U, \
                (f"meta_round: the first W = {W} iterations update θ alone (train_subs=False), the next "
                 f"U = {U} θ and φ (train_subs=True); got train_subs {phases}")
            assert all(u[4] == u[3] for u in updates), "meta_round: φ changes in the joint iterations only"
            success = [float(r[4].success.mean()) for r in runs]
            assert rec["warmup_success"] == (success[W - 1] if W else None), \
                (f"meta_round: warmup_success is the mean success of the last warmup iteration "
                 f"(None when W = 0): {success[W - 1] if W else None}, got {rec['warmup_success']}")
            assert rec["joint_success"] == success[-1], \
                f"meta_round: joint_success is the last iteration's mean success, {success[-1]}"
            usage = np.mean([r[4].usage for r in runs], axis=0).round(3).tolist()
            assert rec["usage"] == usage, \
                f"meta_round: usage is each sub-policy's share of the steps over the round's iterations: {usage}"


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
    assert "weights in round 2 became NaN or infinite" in err and "last good checkpoint is intact" in err
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
    (["--eval-seeds", "3"], ["--eval-seeds", "3"]),                 # the evaluation seeds pass through
])
def test_the_flags_a_sweep_prints_give_its_settings_back(argv, flags):
    import sweep
    config = dataclasses.asdict(mlsh.parse_args(argv)[0])
    assert sweep.flags_of(config) == flags           # only what differs from the preset (T and S follow --rooms)
    assert sweep.settings(dataclasses.asdict(mlsh.parse_args(flags)[0])) == sweep.settings(config)


def test_a_sweep_has_a_folder_of_its_own_per_kind_of_run():
    import sweep
    for argv, grid, folder in [([], False, "sweep-fourrooms"), (["--maze", "mazes/example.txt"], False,
                               "sweep-maze-example"), (["--env", "bandits"], True, "grid-bandits")]:
        assert sweep.default_folder(mlsh.parse_args(argv)[0], grid).endswith(os.path.join("runs", folder))


def test_settings_of_older_runs_read_as_they_are_now():
    old = {k: v for k, v in mlsh.dataclasses.asdict(mlsh.Config(eval_seeds=3)).items() if k not in ("eval_seeds", "reward")}
    now = mlsh.run_settings({**old, "seeds": 3})           # --seeds was renamed; --reward came later
    assert now["eval_seeds"] == 3 and "seeds" not in now and now["reward"] == "reach" and "out" not in now


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
                         # Ctrl-C reaches a job in the foreground, whatever pytest itself inherited
                         # (pytest run from a script in the background ignores it, and so would the sweep)
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN if background else signal.SIG_DFL))
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
    assert "| macro | MLSH | MLSH (paper's master) | flat PPO |" in (tmp_path / "grid.md").read_text() and (tmp_path / "grid.png").exists()


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
    (["--seeds", "0", "--eval-seeds", "0"], "--eval-seeds is 0; it must be at least 1"),
    (["--seeds", "0", "--replace"], "--replace is not for a sweep"),
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
# Exercises (README, "Exercises"): each check fails on a blanked function, and on wrong answers
# ---------------------------------------------------------------------------

EXERCISES = {  # function -> the file it is in; its check is `python -m pytest -k <function>`
    "mlp_backward": "mlsh.py", "ppo_loss": "mlsh.py", "gae": "mlsh.py",
    "master_transitions": "mlsh.py", "meta_round": "mlsh.py", "bfs_distances": "envs.py",
}

# Answers a student might plausibly hand in, each written as edits of the function: (what is wrong,
# [(text of the function, what the student wrote instead)]). Only fragments, so that no complete answer
# sits in a file a course copies.
WRONG_ANSWERS = {
    "mlp_backward": [
        ("the tanh derivative left out", [("d = dh * (1.0 - hs[i] ** 2)", "d = dh")]),
        ("the tanh derivative taken as 1 - h", [("(1.0 - hs[i] ** 2)", "(1.0 - hs[i])")]),
        ("the bias gradient averaged over the batch", [("d.sum(axis=1, keepdims=True)",
                                                        "d.mean(axis=1, keepdims=True)")]),
        ("the first layer forgotten", [("reversed(range(n_layers))", "reversed(range(1, n_layers))")]),
        ("backprop into h through W untransposed", [('d @ p[f"W{i}"].transpose(0, 2, 1)', 'd @ p[f"W{i}"]')]),
        ("an input given as cells treated as dense rows", [('if i == 0 and hs[0].dtype.kind == "i":', "if False:")]),
    ],
    "ppo_loss": [
        ("the gradient flows through the clipped term", [("np.where(unclipped > clipped, 0.0, unclipped)",
                                                          "unclipped")]),
        (">= where > is meant, which drops the gradient wherever the ratio is inside the clip range",
         [("unclipped > clipped", "unclipped >= clipped")]),
        ("the vanilla policy gradient: no ratio", [("np.where(unclipped > clipped, 0.0, unclipped)",
                                                    "np.where(unclipped > clipped, 0.0, adv)")]),
        ("max instead of min", [("np.minimum(unclipped, clipped)", "np.maximum(unclipped, clipped)")]),
        ("the entropy bonus with the wrong sign, loss and gradient alike",
         [("surrogate + ent_coef * entropy", "surrogate - ent_coef * entropy"),
          ("+ ent_coef * dent_dlogits", "- ent_coef * dent_dlogits")]),
        ("probs - onehot", [("dlogp_dlogits = onehot - probs", "dlogp_dlogits = probs - onehot")]),
        ("the entropy's gradient without the + H", [("(logp_all + entropy[..., None])", "logp_all")]),
        ("the plain mean over the batch, weights ignored, loss and gradient alike",
         [("-(w * (surrogate", "-(np.full_like(w, 1 / w.shape[-1]) * (surrogate"),
          ("-w[..., None] *", "-np.full_like(w, 1 / w.shape[-1])[..., None] *")]),
        ("ascent: the loss not negated, gradient alike", [("loss = -(w", "loss = (w"),
                                                          ("dlogits = -w", "dlogits = w")]),
    ],
    "gae": [
        ("the advantage flows back across a truncation (cut at term, not end)",
         [("(1.0 - end[t])", "(1.0 - term[t])")]),
        ("a bootstrap through a termination", [("(1.0 - term) * next_val", "next_val")]),
        ("no bootstrap at a truncation", [("(1.0 - term) * next_val", "(1.0 - end) * next_val")]),
        ("V(s_t+1) read from val[t + 1], across episode ends",
         [("* next_val - val", "* np.concatenate([val[1:], next_val[-1:]]) - val")]),
        ("gamma instead of gamma lam", [("gamma[t] * lam * (1.0 - end[t])", "gamma[t] * (1.0 - end[t])")]),
        ("the mask of the step before", [("(1.0 - end[t])", "(1.0 - end[t - 1])")]),
        ("forwards through time", [("reversed(range(len(delta)))", "range(len(delta))")]),
        ("the return, not the advantage", [("return adv", "return adv + val")]),
    ],
    "master_transitions": [
        ("the reward of the decision's own step only", [("R = cum[last + 1, i] - cum[t, i]", "R = ro.rew[t, i]")]),
        ("a bootstrap from the observation at the next decision",
         [("ro.next_obs[last, i]", "ro.obs[np.minimum(last + 1, S - 1), i]")]),
        ("a truncation taken as a termination", [("term = ro.term[last, i]",
                                                  "term = ro.term[last, i] | ro.trunc[last, i]")]),
        ("the advantage flows across episode ends", [("end = term | ro.trunc[last, i] | ~same_next",
                                                      "end = ~same_next")]),
        ("the wrong learner's value network (i % M)", [("i // E)", "i % (n // E))")]),
        ("the rollout's last decision taken as terminal", [("term = ro.term[last, i]",
                                                            "term = ro.term[last, i] | ~same_next")]),
        ("the return equals the advantage", [("adv, adv + val", "adv, adv")]),
    ],
    "meta_round": [
        ("φ trained in the warmup too", [("train_subs=it >= cfg.warmup", "train_subs=True")]),
        ("off by one: the first joint iteration leaves φ alone", [("it >= cfg.warmup", "it > cfg.warmup")]),
        ("no new tasks", [("runner.set_tasks(np.repeat(family.sample(rng, M), E))", "family.sample(rng, M)")]),
        ("each copy its own task", [("np.repeat(family.sample(rng, M), E)", "family.sample(rng, M * E)")]),
        ("masters that decide every step (N = 1)", [("cfg.master_lr, cfg.macro, subs=subs",
                                                     "cfg.master_lr, subs=subs")]),
        ("no critic, so φ never learns", [("critic=True", "critic=False")]),
        ("the warmup success read one iteration late", [("it == cfg.warmup - 1", "it == cfg.warmup")]),
        ("θ at the sub-policies' step", [("cfg.master_lr", "cfg.sub_lr")]),
    ],
    "bfs_distances": [
        ("the frontier keeps cells already seen", [(" & ~seen", "")]),
        ("one move too many", [("d = 0", "d = 1")]),
        ("seen holds the last frontier only", [("seen |= frontier", "seen = frontier")]),
        ("unreachable cells left at 0", [("np.where(eye, 0, -1)", "np.where(eye, 0, 0)")]),
        ("the start not marked as seen", [("seen, frontier = eye.copy(), eye.copy()",
                                           "seen, frontier = np.zeros_like(eye), eye.copy()")]),
        ("distances as floats", [("np.where(eye, 0, -1)", "np.where(eye, 0.0, -1.0)")]),
        ("a single graph only, no batch", [("np.broadcast_to(np.eye(n, dtype=bool), adjacency.shape)",
                                            "np.eye(n, dtype=bool)")]),
    ],
}


def _function(source, name):
    return next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)


def blank(source, name):
    """The source with function `name`'s body, all but its docstring, replaced by a raise: a student's start."""
    fn = _function(source, name)
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    lines = source.splitlines(keepends=True)
    indent = " " * body[0].col_offset
    stub = f"{indent}raise NotImplementedError('exercise: write {name}')\n"
    return "".join(lines[:body[0].lineno - 1] + [stub] + lines[fn.end_lineno:])


def answer(source, name, edits):
    """The source with function `name` edited as a student might have written it."""
    fn = _function(source, name)
    lines = source.splitlines(keepends=True)
    text = "".join(lines[fn.lineno - 1:fn.end_lineno])
    for old, new in edits:
        assert text.count(old) >= 1, f"the wrong answer's edit {old!r} no longer fits {name}: update it"
        text = text.replace(old, new)
    return "".join(lines[:fn.lineno - 1]) + text + "".join(lines[fn.end_lineno:])


def _check(name, edit, tmp_path):
    """Run exercise `name`'s README check on a copy of the files with the function changed by edit."""
    here = Path(__file__).resolve().parent
    for f in ["mlsh.py", "envs.py", "sweep.py", "test_mlsh.py"]:
        (tmp_path / f).write_text((here / f).read_text())
    target = tmp_path / EXERCISES[name]
    target.write_text(edit(target.read_text()))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=line", "-k", name,
                           "test_mlsh.py"], cwd=tmp_path, env={**os.environ, "MLSH_BLANKED": "1"},
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(bool(os.environ.get("MLSH_BLANKED")), reason="already inside an exercise check")
@pytest.mark.parametrize("name", list(EXERCISES), ids=[f"exercise{i + 1}" for i in range(len(EXERCISES))])
def test_each_exercise_check_fails_when_its_function_is_blanked(name, tmp_path):
    r = _check(name, lambda source: blank(source, name), tmp_path)
    # exit code 1: tests were selected and failed (5 would mean the check selects no test at all)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "NotImplementedError: exercise: write " + name in r.stdout


@pytest.fixture(scope="module")
def wrong_answer_checks(tmp_path_factory):
    """Every wrong answer's check, all started side by side (one per core) when the first is asked for."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    checks = {(n, what): pool.submit(_check, n, lambda source, n=n, edits=edits: answer(source, n, edits),
                                     tmp_path_factory.mktemp(n))
              for n in EXERCISES for what, edits in WRONG_ANSWERS[n]}
    yield checks
    pool.shutdown(cancel_futures=True)


@pytest.mark.skipif(bool(os.environ.get("MLSH_BLANKED")), reason="already inside an exercise check")
@pytest.mark.parametrize("name, what", [(n, w) for n in EXERCISES for w, _ in WRONG_ANSWERS[n]],
                         ids=[f"exercise{list(EXERCISES).index(n) + 1}-wrong{k + 1}"
                              for n in EXERCISES for k in range(len(WRONG_ANSWERS[n]))])
def test_each_exercise_check_rejects_wrong_answers(name, what, wrong_answer_checks):
    r = wrong_answer_checks[name, what].result()
    assert r.returncode == 1, f"the check of {name} passes a wrong answer ({what}):\n{r.stdout[-3000:]}"
    # every failure says in words what is wrong: "path:line: SomeError: words", never a bare "assert x == y"
    said = re.findall(r"^\S+\.py:\d+: (.*)$", r.stdout, flags=re.M)
    failed = int(re.search(r"(\d+) failed", r.stdout).group(1))
    assert len(said) == failed and all(re.match(r"\w+: \S", s) and not s.startswith("assert") for s in said), \
        f"a failure of {name}'s check on a wrong answer ({what}) does not say what is wrong:\n{said}"
