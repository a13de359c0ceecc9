"""Tests of the algorithm (mlsh.py) and the tasks (envs.py): gradients, advantages, the rollout,
meta-training, environment semantics, learning, and python mlsh.py itself. They need only mlsh.py,
envs.py and this file, so a course that copies the three can run them:

    python -m pytest -q test_mlsh.py
    python -m pytest test_mlsh.py -k gae          # one exercise's check (README, "Exercises")

An exercise's check is every test whose name holds the function's name: worked examples with their
numbers, and properties any right answer has (never a copy of the answer); each check ends by running
a tiny step of the real pipeline (test_<name>_runs_in_the_pipeline).
"""
import contextlib
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import check_grad

import envs
import mlsh


def _call(fn, what, *args):
    """fn(*args), an exercise's function; where it fails, a sentence saying on what, and how."""
    try:
        return fn(*args)
    except Exception as e:
        raise AssertionError(f"{fn.__name__} fails on {what}: {type(e).__name__}: {e}") from None


def _shape(fn, got, want, what):
    assert np.shape(got) == want, f"{fn.__name__} returns {what} of shape {want}; got shape {np.shape(got)}"


# ---- Exercise 1, mlp_backward: hand-written backprop against finite differences (float64) --------

def test_mlp_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    p = mlsh.mlp_init(rng, 3, [5, 7, 6, 4], out_scale=0.7, dtype=np.float64)   # two tanh layers, G=3
    x, target = rng.standard_normal((3, 9, 5)), rng.standard_normal((3, 9, 4))
    out, hs = mlsh.mlp_forward(p, x)
    grads = _call(mlsh.mlp_backward, "two tanh layers, G = 3 networks", p, hs, out - target)
    assert isinstance(grads, dict) and sorted(grads) == sorted(p) and \
        all(np.shape(grads[k]) == p[k].shape for k in p), \
        (f"mlp_backward returns a dict with a gradient of each weight's shape, one per weight "
         f"{ {k: v.shape for k, v in p.items()} }; got { {k: np.shape(g) for k, g in dict(grads).items()} }")
    for k in p:                             # weight by weight, to say where it goes wrong
        one = lambda v: {**p, k: v.reshape(p[k].shape)}
        f = lambda v: 0.5 * ((mlsh.mlp_forward(one(v), x)[0] - target) ** 2).sum()

        def g(v):
            out, hs = mlsh.mlp_forward(one(v), x)
            return mlsh.mlp_backward(one(v), hs, out - target)[k].ravel()
        err = check_grad(f, g, p[k].ravel(), epsilon=1e-7) / np.linalg.norm(g(p[k].ravel()))
        assert err < 1e-6, (f"mlp_backward's gradient is off for {k}: relative error {err:.2g} against "
                            f"finite differences (layers are W0, b0 first; the last layer is W2, b2)")


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
    dense = _call(mlsh.mlp_backward, "one-hot rows", p, hs, dout)
    given = _call(mlsh.mlp_backward, "layer 0's input given as cells (hs[0] integers (G, B), a maze's one-hot "
                  "rows; their W0 gradient is one_hot_T)", p, hs_c, dout)
    for k in p:
        assert np.shape(given[k]) == p[k].shape and np.allclose(given[k], dense[k], rtol=1e-10, atol=1e-12), \
            (f"mlp_backward's gradient {k} for an input given as cells is not the one the one-hot rows give "
             f"(their W0 gradient is one_hot_T)")


def test_value_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    v, ret, w = rng.standard_normal((2, 40, 1)), rng.standard_normal((2, 40)), rng.random((2, 40))
    w /= w.sum(1, keepdims=True)
    f = lambda z: mlsh.value_loss(z.reshape(v.shape), ret, w)[0].sum()
    g = lambda z: mlsh.value_loss(z.reshape(v.shape), ret, w)[1].ravel()
    assert check_grad(f, g, v.ravel(), epsilon=1e-7) < 1e-6


# ---- Exercise 2, ppo_loss: the clipped surrogate, the entropy bonus and their gradient -----------

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


def _ppo(what, logits, act, old_logp, adv, w, clip, ent_coef):
    """ppo_loss on these inputs, its outputs' shapes checked: (loss (G,), dL/dlogits (G, B, A))."""
    out = _call(mlsh.ppo_loss, what, logits, act, old_logp, adv, w, clip, ent_coef)
    assert isinstance(out, tuple) and len(out) == 2, "ppo_loss returns two things: (loss, dL/dlogits)"
    _shape(mlsh.ppo_loss, out[0], logits.shape[:1], "the loss, one per network,")
    _shape(mlsh.ppo_loss, out[1], logits.shape, "dL/dlogits, like the logits,")
    return out


def test_ppo_loss_by_hand():
    # two actions, pi = (0.5, 0.5) (logits 0), action 0 taken; L = -(min(r A, clip(r, 0.8, 1.2) A) + c H)
    cases = [  # (its old probability, A, c, what it tests, the loss, dL/dlogits)
        (0.25, 1.0, 0.0, "r = 2 > 1 + clip, A = +1: the smaller term is the clipped 1.2 A, which has no gradient",
         -1.2, [0.0, 0.0]),
        (0.25, -1.0, 0.0, "r = 2, A = -1: min(-2, -1.2) is the unclipped r A; dL/dz = -r A (onehot - pi)",
         2.0, [1.0, -1.0]),
        (0.5 / 1.1, 1.0, 0.0, "r = 1.1, inside the clip range: the surrogate is r A and its gradient flows",
         -1.1, [-0.55, 0.55]),
        (0.5, 0.0, 0.1, "the entropy of a uniform policy over 2 actions is log 2, a bonus, at its maximum",
         -0.1 * np.log(2), [0.0, 0.0]),
    ]
    for old, a, c, what, by_hand, grad in cases:
        loss, dlogits = _ppo(what, np.zeros((1, 1, 2)), np.array([[0]]), np.log([[old]]), np.array([[a]]),
                             np.ones((1, 1)), 0.2, c)
        assert np.allclose(loss, [by_hand]) and np.allclose(dlogits, [[grad]]), \
            (f"ppo_loss: {what}: the loss (minimised) is {by_hand:.4f} and dL/dlogits {grad}; got {loss}, "
             f"{np.ravel(dlogits)}")
    # an entropy bonus pushes a peaked policy towards uniform: a descent step must lower the top logit
    _, dlogits = _ppo("a peaked policy", np.array([[[2.0, 0.0]]]), np.array([[0]]), np.log([[0.5]]),
                      np.array([[0.0]]), np.ones((1, 1)), 0.2, 0.1)
    assert dlogits[0, 0, 0] > 0 > dlogits[0, 0, 1], \
        (f"ppo_loss: an entropy bonus rewards uncertainty, so dL/dz is positive for the likelier action "
         f"and descent lowers it; got {np.ravel(dlogits)}")


def test_ppo_loss_gradient_matches_finite_differences():
    logits, act, old_logp, adv, w = _ppo_case()
    ratio = np.exp(np.take_along_axis(mlsh.log_softmax(logits), act[..., None], -1)[..., 0] - old_logp)
    clipped = np.abs(ratio - 1) > 0.2
    assert 0.1 < clipped.mean() < 0.9            # both branches of the clip are exercised
    _ppo("two networks of 40 rows", logits, act, old_logp, adv, w, 0.2, 0.05)
    for name, ent, keep in [("the surrogate alone (ent_coef = 0)", 0.0, ~clipped),   # the three add up
                            ("the surrogate where the ratio is clipped", 0.0, clipped),  # to the whole loss
                            ("the entropy bonus alone (advantages 0)", 0.05, 0.0)]:
        f = lambda z: mlsh.ppo_loss(z.reshape(logits.shape), act, old_logp, adv * keep, w, 0.2, ent)[0].sum()
        g = lambda z: mlsh.ppo_loss(z.reshape(logits.shape), act, old_logp, adv * keep, w, 0.2, ent)[1].ravel()
        err = check_grad(f, g, logits.ravel(), epsilon=1e-7) / max(np.linalg.norm(g(logits.ravel())), 1e-3)
        assert err < 1e-5, f"ppo_loss's gradient of {name} is off: relative error {err:.2g} against finite differences"


def test_ppo_loss_weights_every_term_the_entropy_too():
    # a property of any right answer: the loss is the w-weighted sum of each row's loss alone (weight 1),
    # and each row's gradient is its weight times its gradient alone; so a row of weight 0 (padding, as
    # group() makes it) adds nothing and gets no gradient. The entropy bonus is a term of the loss too.
    logits, act, old_logp, adv, w = _ppo_case(seed=4, G=2, B=12)
    w[:, :4] = 0.0
    w /= w.sum(1, keepdims=True)
    for ent in (0.0, 0.3):
        loss, dlogits = _ppo("weighted rows", logits, act, old_logp, adv, w, 0.2, ent)
        alone = [_ppo("a row alone", logits[:, i:i + 1], act[:, i:i + 1], old_logp[:, i:i + 1], adv[:, i:i + 1],
                      np.ones((2, 1)), 0.2, ent) for i in range(12)]
        by_rows = sum(w[:, i] * alone[i][0] for i in range(12))
        grad_rows = np.concatenate([w[:, i, None, None] * alone[i][1] for i in range(12)], axis=1)
        bonus = f"with an entropy bonus ({ent}) " if ent else ""
        assert np.allclose(loss, by_rows, atol=1e-10), \
            (f"ppo_loss {bonus}is not the weighted sum of its rows' losses, sum_i w_i L_i: every term of the "
             f"loss{', the entropy bonus too,' if ent else ''} is weighted by the sample weights w")
        assert np.allclose(dlogits, grad_rows, atol=1e-10) and np.abs(dlogits[:, :4]).max() == 0, \
            (f"ppo_loss {bonus}: row i's gradient must be w_i times its gradient alone (a row of weight 0 "
             f"gets none){': the entropy bonus gradient is weighted too' if ent else ''}")


def test_ppo_loss_stays_finite_for_a_confident_policy():
    # a master that is sure of itself has logits hundreds apart; the loss and gradient must stay finite
    rng = np.random.default_rng(5)
    logits = 300.0 * rng.standard_normal((2, 16, 6))
    act = rng.integers(0, 6, (2, 16))
    old_logp = np.take_along_axis(mlsh.log_softmax(logits), act[..., None], -1)[..., 0]   # ratio 1
    loss, dlogits = _ppo("logits hundreds apart", logits, act, old_logp, rng.standard_normal((2, 16)),
                         np.full((2, 16), 1 / 16), 0.2, 0.01)
    assert np.isfinite(loss).all() and np.isfinite(dlogits).all(), \
        ("ppo_loss gives NaN or inf for logits hundreds apart (a confident policy, which a master becomes): "
         "exp of a large logit overflows; take the probabilities from log_softmax, which subtracts the largest")


def test_log_softmax_and_sample():
    z = np.array([[1000.0, 0.0, -1000.0], [5e5, 5e5, 0.0]])
    lp = mlsh.log_softmax(z)                                  # stable for large logits
    assert np.all(np.isfinite(lp)) and np.allclose(np.exp(lp).sum(-1), 1.0) and np.allclose(lp[1, :2], np.log(0.5))
    logits = np.log(np.array([[0.1, 0.2, 0.7]]).repeat(60000, axis=0))
    counts = np.bincount(mlsh.sample(np.random.default_rng(2), logits), minlength=3) / 60000
    assert np.allclose(counts, [0.1, 0.2, 0.7], atol=0.01)


# ---- Exercise 3, gae: advantages backwards through time ------------------------------------------

def _gae(what, *args):
    rew = args[0]
    adv = _call(mlsh.gae, what, *args)
    _shape(mlsh.gae, adv, rew.shape, "one advantage per step and stream,")
    return np.asarray(adv)


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
    got = _gae("the worked example of test_gae_by_hand", rew, val, next_val, term, end, 0.9, 0.5)
    assert np.allclose(got, expected), \
        f"gae on the worked example (the comments of test_gae_by_hand) gives {np.ravel(got)}, not {np.ravel(expected)}"


def test_gae_by_hand_with_a_discount_per_step_and_float_masks():
    # two streams of 3 steps, a discount per step (the options master's gamma^duration), masks as floats
    # (master_transitions passes them so); lam = 0.5; V = 0 everywhere, so delta_t = r_t + gamma_t V'_t
    rew = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    next_val = np.array([[0.0, 0.0], [0.0, 0.0], [4.0, 4.0]])
    gamma = np.array([[0.5, 0.9], [0.8, 0.5], [0.25, 0.5]])
    term = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])     # stream 1 terminates at step 1
    end = term.copy()
    # stream 0: delta = (1, 0, 0.25 * 4 = 1); A_2 = 1, A_1 = 0 + 0.8 * 0.5 * 1 = 0.4, A_0 = 1 + 0.5 * 0.5 * 0.4 = 1.1
    # stream 1: delta = (0, 2, 0.5 * 4 = 2); A_2 = 2, A_1 = 2 (the episode ends there), A_0 = 0 + 0.9 * 0.5 * 2 = 0.9
    expected = np.array([[1.1, 0.9], [0.4, 2.0], [1.0, 2.0]])
    got = _gae("gamma an (S, n) array (a discount per step) and float masks", rew, np.zeros((3, 2)), next_val,
               term, end, gamma, 0.5)
    assert np.allclose(got, expected), \
        (f"gae with a discount per step, gamma[t] (S, n), and float masks gives\n{got}\nnot\n{expected}\n(the "
         f"worked example's comments): step t discounts by gamma[t], times lam for the advantage that follows")


def test_gae_does_not_flow_across_an_episode_end():
    rew, val, next_val, _, _ = (a[:, :1] for a in _gae_case(S=8, n=1))
    later = rew.copy()
    later[4:] += 10.0                                     # after step 3 comes another episode
    for kind, is_term in [("truncation (end, not term)", False), ("termination (term and end)", True)]:
        term, end = np.zeros((8, 1), bool), np.zeros((8, 1), bool)
        end[3], term[3] = True, is_term                   # the episode ends at step 3
        a = _gae("an episode that ends at step 3", rew, val, next_val, term, end, 0.99, 0.95)
        b = _gae("an episode that ends at step 3", later, val, next_val, term, end, 0.99, 0.95)
        assert np.allclose(a[:4], b[:4]), \
            (f"gae: the advantage flows back across a {kind} at step 3: A_t for t <= 3 changed when only the "
             f"rewards after step 3 did. The sum must stop at every episode end (end[t]), not only at term")


def test_gae_bootstraps_through_a_truncation_and_never_through_a_termination():
    rew, val, next_val, _, _ = (a[:, :1] for a in _gae_case(S=6, n=1))
    term, end = np.zeros((6, 1), bool), np.zeros((6, 1), bool)
    change = lambda t: (_gae("one stream of 6 steps", rew, val, next_val + (np.arange(6) == t)[:, None], term, end,
                             0.9, 0.5) - _gae("one stream of 6 steps", rew, val, next_val, term, end, 0.9, 0.5))[:, 0]
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


def test_gae_has_the_closed_forms_of_lambda_0_and_1_on_every_stream():
    rew, val, next_val, term, end = _gae_case()
    before = [a.copy() for a in (rew, val, next_val, term, end)]
    # lam = 0: the advantage is the one-step TD error, step by step (the docstring's delta_t)
    got = _gae("lam = 0", rew, val, next_val, term, end, 0.97, 0.0)
    assert np.allclose(got, rew + 0.97 * (1 - term) * next_val - val), \
        "gae with lam = 0 must give the one-step TD error delta_t at every step: is the sum weighted by gamma lam?"
    assert all(np.array_equal(a, b) for a, b in zip(before, (rew, val, next_val, term, end))), \
        "gae must not change its inputs"
    # lam = 1, gamma = 1, no episode end, and next_val[t] = val[t + 1]: the sum telescopes, and every
    # stream's A_t is the rewards from t on, plus the last next_val, minus V_t
    nxt = np.vstack([val[1:], next_val[-1:]])
    none = np.zeros(rew.shape, bool)
    got = _gae("lam = 1 and gamma = 1", rew, val, nxt, none, none, 1.0, 1.0)
    want = np.cumsum(rew[::-1], axis=0)[::-1] + nxt[-1] - val
    bad = np.argwhere(~np.isclose(got, want))
    assert len(bad) == 0, \
        (f"gae with lam = 1 and gamma = 1 must give the rewards from step t on, plus the bootstrap, minus V_t, on "
         f"every stream; step {bad[0][0]} of stream {bad[0][1]} (of {rew.shape[1]}) differs: is every step and "
         f"every stream done, backwards from the last?")
    # boolean or float masks give the same advantages
    assert np.allclose(_gae("float masks", rew, val, next_val, 1.0 * term, 1.0 * end, 0.97, 0.9),
                       _gae("boolean masks", rew, val, next_val, term, end, 0.97, 0.9)), \
        "gae gives other advantages for float masks than for the same boolean masks"


# ---- Exercise 4, master_transitions: the master's own MDP ----------------------------------------

def _value_net(G, D):
    """G linear value functions (no hidden layer): network g's value of obs is (g + 1) * obs[0]."""
    W = np.zeros((G, D, 1))
    W[:, 0, 0] = np.arange(1, G + 1)
    return mlsh.Net({"W0": W, "b0": np.zeros((G, 1, 1))}, 1e-3)


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


def test_master_transitions_reward_is_the_sum_over_its_N_steps_discounted_per_decision_or_per_step():
    # one copy, decisions at steps 0 and 3 (N = 3); rewards at steps 2 and 5; V = 0, gamma = 0.5
    decide = np.array([[1], [0], [0], [1], [0], [0]], bool)
    rew = np.array([[0.0], [0.0], [1.0], [0.0], [0.0], [1.0]])
    # per decision: macro rewards 1 and 1, so A = [1 + 0.5 * 1, 1]
    _check_decisions(_transitions(_rollout(decide, rew), 1, 0.5, 1.0, 1), {(0, 0): (1.5, 1.5), (3, 0): (1.0, 1.0)},
                     {(0, 0): "its reward is the sum of rew over steps 0-2, then gamma once per decision",
                      (3, 0): "its reward is the sum over steps 3-5"})
    # smdp, per env step: R_0 = 0.5^2 * 1 = 0.25, then gamma^3 = 0.125 times A_1 = 0.5^2 * 1: A_0 = 0.28125
    _check_decisions(_transitions(_rollout(decide, rew), 1, 0.5, 1.0, 1, smdp=True),
                     {(0, 0): (0.25 + 0.125 * 0.25, 0.28125), (3, 0): (0.25, 0.25)},
                     {(0, 0): "smdp: rewards discounted per env step within it, gamma^3 after its 3 steps",
                      (3, 0): "smdp: its reward 2 steps in, discounted by gamma^2"})


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
           (0, 1): "one decision for the whole rollout, valued by learner 0's network: copy i is learner i // E's",
           (5, 2): "learner 1's value network: copy i belongs to learner i // E",
           (3, 2): "a new episode; its reward is summed over its own steps 3-4",
           (2, 2): "the episode terminates at its one step: no value after it",
           (0, 2): "its reward is summed over steps 0-1, and it ends where the next decision starts",
           (0, 3): "learner 1's value network, one decision"}
    _check_decisions(got, expected, why)


# ---- Exercise 5, meta_round: one round of the paper's Algorithm 1 --------------------------------

def _watch_meta_round(monkeypatch, cfg, rounds=2):
    """meta_round run `rounds` times on Four Rooms, with spies on the runner and on update: what it did,
    as a list of events per round, and the sub-policies."""
    fam = envs.GoalTasks()
    rng = np.random.default_rng(0)
    subs = mlsh.Net.new(rng, cfg.subpolicies, fam, fam.n_actions, cfg, cfg.sub_lr, 0.01)
    runner = mlsh.Runner(fam.make(np.zeros(cfg.tasks * cfg.copies, dtype=int), seed=1), cfg.tasks)
    events, real_run, real_set, real_update = [], runner.run, runner.set_tasks, mlsh.update

    def set_tasks(tasks):
        events.append(("tasks", np.array(tasks)))
        real_set(tasks)

    def run(agent, S, rng):
        weights = {k: v.copy() for k, v in agent.master.p.items()}    # the master as this rollout found it
        ro = real_run(agent, S, rng)
        events.append(("run", agent, S, agent.master.opt.t, ro, weights))
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


def test_meta_round_samples_tasks_resets_the_master_and_trains_the_sub_policies_after_the_warmup(monkeypatch):
    for W, U in [(2, 3), (0, 2)]:
        cfg = mlsh.Config(tasks=3, copies=2, warmup=W, joint=U, hidden=8)
        fam, subs, rounds = _watch_meta_round(monkeypatch, cfg)
        M, E, K = cfg.tasks, cfg.copies, cfg.subpolicies
        agents, drawn = [], []
        for events, rec in rounds:
            tasks = [e[1] for e in events if e[0] == "tasks"]
            assert len(tasks) == 1 and events[0][0] == "tasks", \
                "meta_round: a round starts by giving the runner new tasks, once (runner.set_tasks)"
            t = tasks[0]
            assert t.shape == (M * E,) and (t.reshape(M, E) == t[::E, None]).all(), \
                (f"meta_round: cfg.tasks = {M} tasks, each on cfg.copies = {E} neighbouring copies "
                 f"(copy i runs task i // E, learner i // E's): the runner got {t.tolist()}")
            assert set(t) <= set(fam.train_tasks), "meta_round: tasks come from the training tasks (family.sample)"
            drawn.append(t[::E].tolist())
            runs, updates = [e for e in events if e[0] == "run"], [e for e in events if e[0] == "update"]
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
        assert agents[0] is not agents[1], "meta_round: θ is reset every round: a new agent, not the last round's"
        assert drawn[0] != drawn[1], "meta_round: every round draws new tasks"
        first = [[e[5] for e in events if e[0] == "run"][0] for events, _ in rounds]
        assert any(not np.array_equal(first[0][k], first[1][k]) for k in first[0]), \
            ("meta_round: every round's fresh masters start from new random weights, drawn from the generator it "
             "is given; rounds 1 and 2 started from the same weights (a generator made anew each round?)")


def _meta_round_from(seed):
    """A fresh setup whose randomness all comes from one generator, and one meta_round on it."""
    cfg = mlsh.Config(tasks=3, copies=2, warmup=1, joint=2, steps=16, hidden=8)
    fam = envs.GoalTasks(max_steps=16)
    rng = np.random.default_rng(seed)
    subs = mlsh.Net.new(rng, cfg.subpolicies, fam, fam.n_actions, cfg, cfg.sub_lr, 0.01)
    runner = mlsh.Runner(fam.make(np.zeros(cfg.tasks * cfg.copies, dtype=int), seed=mlsh.child_seed(rng)),
                         cfg.tasks)
    masters, real_run = [], runner.run
    runner.run = lambda agent, S, rng: masters.append(agent.master.p["W0"].copy()) or real_run(agent, S, rng)
    rec = mlsh.meta_round(cfg, fam, runner, subs, rng)
    return rec, subs, runner.env.tasks.copy(), masters[0]


def test_meta_round_draws_its_randomness_from_its_generator():
    (rec_a, subs_a, tasks_a, master_a), (rec_b, subs_b, _, _) = _meta_round_from(7), _meta_round_from(7)
    assert rec_a == rec_b and all(np.array_equal(subs_a.p[k], subs_b.p[k]) for k in subs_a.p), \
        ("meta_round from the same generator twice gives two results: draw every random number from the "
         "generator it is given (and the env's), never from a new or the global one")
    _, subs_c, tasks_c, master_c = _meta_round_from(8)
    assert not np.array_equal(tasks_a, tasks_c), \
        "meta_round drew the same tasks from two different generators: sample them with the rng it is given"
    assert not np.array_equal(master_a, master_c), \
        ("meta_round made the same fresh masters from two different generators: draw their weights from the rng "
         "it is given (new_agent(rng, ...))")


# ---- Exercise 6, bfs_distances: every shortest path of a maze at once ----------------------------

@contextlib.contextmanager
def _time_limit(seconds=3):
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


def _bfs_in_time(adjacency, what):
    with _time_limit():
        return _call(envs.bfs_distances, what, adjacency)


def _graph(n, edges):
    a = np.zeros((n, n), bool)
    for i, j in edges:
        a[i, j] = True
    return a


def test_bfs_distances_are_the_fewest_moves():
    """By hand on small graphs, as a batch too; then, on Four Rooms, a random one-way graph and two mazes side
    by side (unreachable from each other), the equations dist[i, i] = 0, dist[i, j] = 1 + the least dist[k, j]
    over the cells k one move from i, and -1 exactly where no such k reaches j: their one solution is the
    shortest paths."""
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
        got = _bfs_in_time(a, what)
        assert np.shape(got) == a.shape, f"bfs_distances returns an (n, n) array like adjacency; got {np.shape(got)}"
        assert np.issubdtype(np.asarray(got).dtype, np.integer), \
            f"bfs_distances returns whole numbers of moves (an int array); got dtype {np.asarray(got).dtype}"
        assert np.array_equal(got, by_hand), \
            (f"bfs_distances on {what}: dist[i, j], the fewest moves from i to j (-1 if j cannot be reached, "
             f"0 from a cell to itself), should be\n{np.array(by_hand)}\ngot\n{got}")
    batch = np.stack([cases[0][1], cases[1][1]])
    got = _bfs_in_time(batch, "a batch (2, n, n) of graphs")
    assert np.shape(got) == batch.shape and np.array_equal(got, [cases[0][2], cases[1][2]]), \
        "bfs_distances on a batch (2, n, n) of graphs must give each graph's own distances, (2, n, n)"
    with _time_limit():                                   # a Maze computes its distances
        four, small = envs.Maze(envs.FOUR_ROOMS).adjacency, envs.Maze(envs.room_maze(2, size=2)).adjacency
    two = np.zeros((len(four) + len(small),) * 2, bool)
    two[:len(four), :len(four)], two[len(four):, len(four):] = four, small
    for what, a in [("Four Rooms", four), ("a random one-way graph", np.random.default_rng(5).random((40, 40)) < 0.06),
                    ("two mazes with no way between them", two)]:
        d = np.asarray(_bfs_in_time(a, what))
        assert d.shape == a.shape and (np.diag(d) == 0).all(), \
            f"bfs_distances on {what}: shape {d.shape}, not {a.shape}, or a cell not 0 moves from itself"
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


# ---- The rest of the algorithm: initial weights, layouts, the rollout's decision rule ------------

def test_mlp_init_is_orthogonal_with_its_gains():
    # wide, square and narrow layers: orthonormal columns (or rows, where fewer), times sqrt 2 in the
    # hidden layers and out_scale in the last; zero biases; each of the G networks its own draw
    p = mlsh.mlp_init(np.random.default_rng(0), 3, [10, 6, 6, 9, 4], out_scale=0.01, dtype=np.float64)
    for i, gain in enumerate([np.sqrt(2)] * 3 + [0.01]):
        W = p[f"W{i}"] / gain
        gram = W.transpose(0, 2, 1) @ W if W.shape[1] >= W.shape[2] else W @ W.transpose(0, 2, 1)
        assert np.allclose(gram, np.eye(min(W.shape[1:]))), f"W{i} is not orthogonal times {gain:.3g}"
        assert not np.allclose(W[0], W[1]) and (p[f"b{i}"] == 0).all()
    signs = np.sign(mlsh.mlp_init(np.random.default_rng(1), 2000, [2, 2])["W0"][:, 0, 0])
    assert abs(signs.mean()) < 0.1, "orthogonal weights should be uniformly random: as often + as -"


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


def test_a_primitive_choice_lasts_one_step_and_trains_no_sub_policy():
    cfg = mlsh.Config(hidden=8, macro=3)
    fam = envs.GoalTasks()
    rng = np.random.default_rng(0)
    K, A = 2, fam.n_actions
    subs = mlsh.Net.new(rng, K, fam, A, cfg, cfg.sub_lr, 0.01)
    agent = mlsh.new_agent(rng, 1, fam, K + A, cfg, cfg.master_lr, cfg.macro, subs, critic=True, smdp=True)
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
    K, start = 2, fam.maze.start
    for interrupt, lasts in [(0.0, 3), (0.5, 1)]:
        cfg = mlsh.Config(hidden=8, layers=0, macro=3, interrupt=interrupt)   # a linear master
        subs = mlsh.Net.new(rng, K, fam, 4, cfg, 0.0)              # both always go right: off the start
        subs.p["W0"][:], subs.p["b0"][:] = 0.0, -50.0
        subs.p["b0"][:, 0, 1] = 50.0
        agent = mlsh.masters(cfg, fam, subs, mlsh.OPTIONS)(rng, 1)
        agent.master.p["W0"][:] = 0.0
        agent.master.p["W0"][0, :, K + 2] = 50.0                   # everywhere: primitive 2 (down) ...
        agent.master.p["W0"][0, start, 1] = 100.0                  # ... but skill 1 at the start
        runner = mlsh.Runner(fam.make(fam.train_tasks[-1:], seed=1), 1)    # a goal far away
        ro = runner.run(agent, 6, rng)
        assert (ro.choice[:lasts, 0] == 1).all() and ro.choice[lasts, 0] == K + 2 and ro.decide[lasts, 0]


# ---- The tasks -----------------------------------------------------------------------------------

def _doorways(m):
    """Free cells with walls on two opposite sides."""
    return [c for c in range(m.n_cells)
            if (m.next_cell[c, 0] == c and m.next_cell[c, 2] == c) or
            (m.next_cell[c, 1] == c and m.next_cell[c, 3] == c)]


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


def test_four_rooms_and_room_tasks_hold_out_far_goals_in_a_fixed_disjoint_split():
    four = envs.GoalTasks()
    assert four.maze.n_cells == 104 and (four.maze.dist >= 0).all() and len(_doorways(four.maze)) == 4
    for fam, far in [(four, 10)] + [(envs.RoomTasks(R), 5 * R) for R in (2, 3, 4)]:
        train, val, test = set(fam.train_tasks), set(fam.val_tasks), set(fam.test_tasks)
        assert not train & test and not train & val and not val & test and len(test) == len(val) == 16
        for held in (fam.test_tasks, fam.val_tasks):
            assert (fam.maze.dist[fam.maze.start, held] >= far).all()
        assert (fam.maze.dist[fam.maze.start, fam.train_tasks] < far).any()   # near goals stay for training
    assert len(four.train_tasks) + 32 == 103                                   # every cell but the start
    assert four.test_tasks.tolist() == [16, 18, 19, 28, 39, 40, 48, 50, 70, 87, 88, 89, 90, 100, 102, 103]  # as before
    assert np.array_equal(envs.GoalTasks().val_tasks, four.val_tasks)         # the same split every time
    with pytest.raises(ValueError, match="at least 2 x 2 rooms"):
        envs.RoomTasks(1)


def test_walls_stop_moves_and_terminated_and_truncated_are_kept_apart():
    env = envs.GoalMaze(tasks=[103], seed=0)
    env.reset()
    start = env.pos[0]
    for a, moved in [(0, 0), (3, 0), (1, 1)]:       # up and left from the top-left corner: walls; right: free
        obs, *_ = env.step(np.array([a]))
        assert env.pos[0] == start + moved and obs[0].argmax() == start + moved
    env = envs.GoalMaze(tasks=[1, 103], max_steps=3, seed=0)    # copy 0: goal next to the start
    env.reset()
    obs, rew, term, trunc, info = env.step(np.array([1, 1]))
    assert term[0] and not trunc[0] and rew[0] == 1.0 and info["success"][0]
    assert info["score"][0] == 1.0                                  # shortest path: optimal
    assert info["final_obs"][0].argmax() == 1 and obs[0].argmax() == 0   # auto-reset to the start
    env.step(np.array([0, 0]))
    obs, rew, term, trunc, info = env.step(np.array([0, 0]))
    assert trunc[1] and not term[1] and rew[1] == 0.0 and info["score"][1] == 0.0


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


# The paper's released code (openai/mlsh, test_envs/envs/fourrooms.py), written out as it runs: its
# grid, its step (a move into a wall stays; one that succeeds is followed, with chance 1/3, by a move
# to a random free neighbour of the new cell), its cell numbers (free cells row by row).
CODE_LAYOUT = [row.replace("S", ".") for row in envs.FOUR_ROOMS]
CODE_DIRECTIONS = [(-1, 0), (1, 0), (0, -1), (0, 1)]            # the code's order: up, down, left, right


def code_step_distribution(cell, action):
    """{next cell: probability} of one step of the code's env, by its own rules."""
    free = lambda rc: CODE_LAYOUT[rc[0]][rc[1]] != "#"
    move = lambda rc, d: (rc[0] + d[0], rc[1] + d[1])
    d = CODE_DIRECTIONS[[0, 3, 1, 2][action]]                   # this project's up, right, down, left
    nxt = move(cell, d)
    if not free(nxt):
        return {cell: 1.0}
    around = [move(nxt, e) for e in CODE_DIRECTIONS if free(move(nxt, e))]
    out = {nxt: 2 / 3}
    for c in around:
        out[c] = out.get(c, 0.0) + 1 / 3 / len(around)
    return out


def test_the_papers_code_task_starts_in_the_doorway_and_pays_every_step_on_cell_103():
    fam = envs.GoalTasks(start=62, goals=([103], [103]), reward="every_step", max_steps=100, second_move=1 / 3)
    maze = fam.maze
    assert tuple(maze.cells[62]) == (7, 9) and tuple(maze.cells[103]) == (11, 11) and maze.dist[62, 103] == 6
    assert fam.train_tasks.tolist() == fam.test_tasks.tolist() == [103]          # nothing held out, by design
    with pytest.raises(ValueError, match="no validation split"):
        fam.held_out("validation")
    env = fam.make([103] * 3, seed=0)
    obs, _ = env.reset()
    assert (obs.argmax(axis=1) == 62).all()
    total, ended = np.zeros(3), 0
    for t in range(1, 201):                                      # right, down: into the corner, then stay
        a = np.array([1 if maze.cells[c][1] < 11 else 2 for c in env.pos])
        obs, rew, term, trunc, info = env.step(a)
        assert not term.any() and set(rew) <= {0.0, 1.0}
        total += rew
        if trunc.any():
            assert trunc.all() and t % 100 == 0                  # cut at 100 steps, every copy at once
            assert np.allclose(info["score"], total / env.best_return[62, 103])
            ended, total = ended + 1, np.zeros(3)
            assert (obs.argmax(axis=1) == 62).all()
    assert ended == 2 and 88 < env.best_return[62, 103] < 95     # 6 moves, and the slips on the way


def test_the_second_move_follows_the_papers_code_after_a_move_that_succeeds():
    maze = envs.Maze(envs.FOUR_ROOMS)
    n = 40000
    for cell, action in [(62, 2), (62, 1), (62, 0), (0, 1), (103, 1), (8, 2)]:  # doorway down / into a wall /
        env = envs.GoalMaze(np.full(n, 103), start=cell, second_move=1 / 3, seed=cell + action)  # up; a corner
        env.reset()
        env.step(np.full(n, action))
        want = {int(maze.index[rc]): p for rc, p in code_step_distribution(tuple(maze.cells[cell]), action).items()}
        got = np.bincount(env.pos, minlength=maze.n_cells) / n
        assert set(np.flatnonzero(got)) == set(want)
        for c, p in want.items():
            assert abs(got[c] - p) < 0.012, (cell, action, c)
    env = envs.GoalMaze(np.full(n, 103), start=62, second_move=0.0, seed=0)     # none without it
    env.reset()
    env.step(np.full(n, 2))
    assert (env.pos == maze.next_cell[62, 2]).all()


def test_best_returns_with_the_second_move_match_a_plain_dynamic_program():
    rows = ["######", "#S...#", "#.##.#", "#....#", "######"]
    maze = envs.Maze(rows)
    steps, p, goal = 6, 1 / 3, int(maze.index[3, 4])
    value = {c: 0.0 for c in range(maze.n_cells)}
    for _ in range(steps):                                       # by the code's rules, one cell at a time
        new = {}
        for c in range(maze.n_cells):
            best = -1.0
            for a in range(4):
                nxt = int(maze.next_cell[c, a])
                if nxt == c:
                    outcomes = {c: 1.0}
                else:
                    around = [int(m) for m in maze.next_cell[nxt] if m != nxt]
                    outcomes = {nxt: 1 - p}
                    for m in around:
                        outcomes[m] = outcomes.get(m, 0.0) + p / len(around)
                best = max(best, sum(q * ((m == goal) + value[m]) for m, q in outcomes.items()))
            new[c] = best
        value = new
    got = envs.best_returns(maze, steps, second_move=p)[:, goal]
    assert np.allclose(got, [value[c] for c in range(maze.n_cells)])
    assert np.array_equal(envs.best_returns(maze, steps)[:, goal] > 0, maze.dist[:, goal] <= steps)


def test_given_goals_replace_the_split_and_are_held_out_or_the_same():
    fam = envs.GoalTasks(start=62, goals=([68, 80, 90], [103]))
    assert fam.train_tasks.tolist() == [68, 80, 90] and fam.test_tasks.tolist() == [103]
    assert not set(fam.train_tasks) & set(fam.test_tasks) and fam.val_tasks.size == 0
    assert set(fam.sample(np.random.default_rng(0), 300)) == {68, 80, 90}
    for goals, says in [(([68, 103], [103, 90]), "share some"), (([62], [103]), "other than the start cell 62"),
                        (([68], [104]), "numbered 0 to 103"), (([], [103]), "one or more")]:
        with pytest.raises(ValueError, match=says):
            envs.GoalTasks(start=62, goals=goals)
    with pytest.raises(ValueError, match="numbered 0 to 103"):
        envs.GoalTasks(start=104)
    far = envs.GoalTasks(start=62)                               # far goals, counted from the doorway
    assert (far.maze.dist[62, np.r_[far.test_tasks, far.val_tasks]] >= 10).all() and 62 not in far.train_tasks


def test_single_env_has_the_gymnasium_shape_and_passes_the_conformance_check(monkeypatch):
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
    rooms = envs.RoomTasks(3)
    for env in [envs.GoalMaze(tasks=[50], seed=0), envs.GoalMaze(tasks=[50], start=None, slip=1 / 3, seed=0),
                envs.BanditTasks().make([1], "test", seed=0), rooms.make(rooms.test_tasks[:1], "test", seed=0)]:
        envs.check_env(envs.SingleEnv(env))
    monkeypatch.setattr(envs.GoalMaze, "_observe", lambda self: self._eye[self.pos].astype(np.float64))
    with pytest.raises(AssertionError, match="float32"):                       # and the check can fail
        envs.check_env(envs.SingleEnv(envs.GoalMaze(tasks=[50], seed=0)))


def test_bandits_split_pay_the_right_mark_and_best_paths_avoid_the_other():
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


def test_maze_file_parsing(tmp_path):
    f, maze = tmp_path / "maze.txt", "#####\n#S..#\n#.#.#\n#...#\n#####\n"
    f.write_text(maze)
    rows = envs.read_maze(str(f))
    assert len(rows) == 5 and envs.Maze(rows).start == 0 and envs.Maze(rows).n_cells == 8
    for bad, says in [(maze.replace("#S..", "#S.x"), "line 2, column 4: 'x'"),
                      (maze.replace("#.#.#", "#.#.##"), "line 3 has 6 characters")]:
        f.write_text(bad)
        with pytest.raises(ValueError, match=says):
            envs.read_maze(str(f))


def test_randomness_only_from_explicit_generators():
    for path in [mlsh.__file__, envs.__file__]:
        src = open(path).read()
        calls = set(re.findall(r"np\.random\.(\w+)", src))
        assert calls <= {"default_rng", "Generator"}, f"{path} uses np.random.{calls}"
        assert "import random" not in src


# ---- Learning, and every exercise inside the real pipeline ----------------------------------------

SEEDS = [int(x) for x in os.environ.get("MLSH_LEARNING_SEEDS", "0,1").split(",")]   # 0,1,2,3,... to try more


@pytest.mark.parametrize("seed", SEEDS)
def test_flat_ppo_solves_a_four_rooms_goal(seed):
    cfg = mlsh.Config(eval_iters=16, eval_seeds=1, seed=seed)   # 16 iterations: enough on every seed 0-9
    fam = envs.GoalTasks()
    fam.test_tasks = fam.test_tasks[:2]
    score, success, _ = mlsh.fine_tune(cfg, fam, mlsh.flat(cfg, fam, 0.01), mlsh.stream(cfg.seed, "fine_tune"))
    assert success[:, :2].mean() < 0.5              # it did not start out solved
    assert success[:, -3:].mean() > 0.9 and score[:, -3:].mean() > 0.7


@pytest.mark.parametrize("seed", SEEDS)
def test_learned_skills_let_a_fresh_master_learn_new_bandit_layouts_fast(seed):
    # three rounds of meta-training on Moving Bandits (its own settings, envs.BanditTasks), a few seconds:
    # on held-out mark layouts a fresh master over the learned skills learns faster than one over untrained
    # skills and than flat PPO from scratch, five iterations each
    cfg = mlsh.Config(**{**envs.BanditTasks.settings, "rounds": 3, "eval_seeds": 1, "eval_iters": 5,
                         "eval_split": "validation", "seed": seed})
    fam = envs.BanditTasks()
    rounds = list(mlsh.meta_train(cfg, fam, mlsh.stream(seed, "meta_train")))
    assert [rec["round"] for _, _, rec in rounds] == [1, 2, 3]
    subs = rounds[-1][0]
    untrained = mlsh.Net.new(np.random.default_rng([seed, 99]), cfg.subpolicies, fam, 4, cfg, cfg.sub_lr, 0.01)
    auc = {name: mlsh.fine_tune(cfg, fam, make, mlsh.stream(seed, "fine_tune"))[0].mean() for name, make in
           [("learned", mlsh.masters(cfg, fam, subs)), ("untrained", mlsh.masters(cfg, fam, untrained)),
            ("flat", mlsh.flat(cfg, fam, cfg.flat_lr))]}
    assert auc["learned"] > 2 * auc["untrained"] and auc["learned"] > 1.5 * auc["flat"], auc


def _pipeline_step():
    """One tiny step of the real pipeline, as python mlsh.py runs it: tasks built (bfs_distances), a round of
    meta-training (meta_round, the rollout, master_transitions, gae, ppo_loss, mlp_backward), then an
    iteration of fine-tuning for each method."""
    cfg = mlsh.Config(rounds=1, tasks=2, copies=2, warmup=1, joint=1, steps=16, hidden=8, eval_iters=1,
                      eval_seeds=1)
    with _time_limit():                                   # a Maze computes its distances
        families = (envs.GoalTasks(max_steps=16), envs.BanditTasks(max_steps=16))
    for fam in families:
        fam.test_tasks = fam.test_tasks[:2]
        try:
            (subs, _, rec), = mlsh.meta_train(cfg, fam, mlsh.stream(0, "meta_train"))
            results = list(mlsh.evaluate(cfg, fam, mlsh.learners(cfg, fam, subs)))
        except Exception as e:
            raise AssertionError(f"the pipeline breaks ({type(fam).__name__}, one round of meta-training and "
                                 f"an iteration of fine-tuning): {type(e).__name__}: {e}") from None
        assert [r[0] for r in results] == list(mlsh.METHODS) == ["mlsh", "mlsh_options", "flat"]
        assert all(np.isfinite(v).all() for v in subs.p.values()) and all(
            np.isfinite(v).all() for r in results for v in r[4].master.p.values()), \
            "the pipeline's weights became NaN or infinite after one round and one iteration"


# each exercise's check (-k <name>) runs one tiny step of the pipeline: an answer that breaks the program fails it
for _name in ("mlp_backward", "ppo_loss", "gae", "master_transitions", "meta_round", "bfs_distances"):
    globals()[f"test_{_name}_runs_in_the_pipeline"] = _pipeline_step


# ---- python mlsh.py: the lesson's command line ---------------------------------------------------

def _mlsh(*argv, cwd=None):
    """python mlsh.py as a student runs it: (exit code, stdout, stderr)."""
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, os.path.join(here, "mlsh.py"), *argv], capture_output=True, text=True,
                       cwd=cwd or here, timeout=600)
    return r.returncode, r.stdout, r.stderr


def test_python_mlsh_py_quick_prints_the_test_of_both_masters_and_flat_ppo(tmp_path):
    code, out, err = _mlsh("--quick", "--env", "bandits", cwd=tmp_path)
    assert code == 0, err
    assert out.startswith("MLSH on bandits: K=2, N=10, T=50, W=2, U=2, 2 rounds of 2 tasks")   # the family's own K, N
    assert re.search(r"^round   2/2  warmup-success \d\.\d\d  joint-success \d\.\d\d  usage \d\.\d\d \d\.\d\d", out,
                     re.M)
    rows = re.findall(r"^(\w+) +(\d\.\d{3})  \[(-?\d\.\d{3}), (-?\d\.\d{3})\]  (iteration \d+|never)$", out, re.M)
    assert [r[0] for r in rows] == ["mlsh", "mlsh_options", "flat"], out
    assert all(float(lo) <= float(auc) <= float(hi) for _, auc, lo, hi, _ in rows)
    assert "--quick: a smoke test" in out and not list(tmp_path.iterdir())      # it keeps nothing


def test_python_mlsh_py_runs_in_a_maze_file_of_ones_own(tmp_path):
    (tmp_path / "corridors.txt").write_text("###########\n#S....#...#\n#.###.#.#.#\n#...#...#.#\n###.#####.#\n"
                                           "#.........#\n###########\n")
    code, out, err = _mlsh("--quick", "--env", "corridors.txt", cwd=tmp_path)
    assert code == 0 and out.startswith("MLSH on corridors.txt: K=4, N=5, T=50") and "\nflat " in out, out + err
    (tmp_path / "corridors.txt").write_text("#####\n#S.x#\n#####\n")
    code, out, err = _mlsh("--quick", "--env", "corridors.txt", cwd=tmp_path)
    assert code == 2 and "--env corridors.txt: line 2, column 4: 'x' is not in the legend" in err


def test_python_mlsh_py_help_lists_every_setting_with_its_comment():
    code, out, _ = _mlsh("--help")
    flat = " ".join(out.split())
    assert code == 0 and "--env ENV" in flat and "--quick" in flat
    for name in [f.name for f in mlsh.dataclasses.fields(mlsh.Config)]:
        assert f"--{name.replace('_', '-')} " in flat, f"--help lacks --{name}"
    assert "N: steps each master decision lasts (default: 5;" in flat


@pytest.mark.parametrize("argv, says", [
    (["--subpolicies", "0"], "--subpolicies is 0; it must be at least 1"),
    (["--macro", "60"], "--macro is 60; it must be at most an episode's length, T = 50"),
    (["--eval-split", "train"], "--eval-split train: choose test or validation"),
    (["--env", "nowhere.txt"], "--env nowhere.txt: No such file or directory"),
    (["--sub-lr", "-1"], "--sub-lr is -1.0; it must be a positive number"),
    (["--eval-seeds", "three"], "argument --eval-seeds: invalid int value: 'three'"),
])
def test_python_mlsh_py_refuses_bad_input_in_one_line(argv, says):
    code, out, err = _mlsh(*argv)
    assert code == 2 and err.startswith("mlsh: ") and says in err and err.count("\n") == 1 and not out, err


def test_every_family_declares_what_its_callers_read_and_its_settings_are_config_fields():
    declared = [k for k in vars(envs.TaskFamily) if not k.startswith("_") and not callable(getattr(envs.TaskFamily, k))]
    assert {"name", "settings", "obs_dim", "n_actions", "one_hot", "goal_cells", "maze", "max_steps", "start_cell",
            "reward", "slip", "second_move", "train_tasks", "val_tasks", "test_tasks"} <= set(declared)
    fields = {f.name for f in mlsh.dataclasses.fields(mlsh.Config)}
    for name, cls in envs.FAMILIES.items():
        fam = cls()
        assert set(fam.settings) <= fields and mlsh.check(mlsh.Config(**fam.settings), fam) == [], name
        assert isinstance(fam.maze, envs.Maze) and fam.max_steps >= 1 and len(fam.held_out("test")), name
