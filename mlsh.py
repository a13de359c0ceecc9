"""Meta Learning Shared Hierarchies (Frans et al., ICLR 2018) in plain NumPy.

A hierarchy is a master policy θ and K sub-policies φ_1..φ_K. Every N steps
the master looks at the observation and picks a sub-policy, which then acts
for N steps. Meta-training keeps resetting the master on new tasks, so that
the sub-policies become skills from which a fresh master learns any task of
the distribution quickly:

    repeat for `rounds`:
        sample tasks; reset θ (one fresh master per task, side by side)
        W warmup iterations: PPO on θ only                    (cfg.warmup)
        U joint iterations:  PPO on θ and on φ                (cfg.joint)

At test time φ is frozen and a fresh θ is trained on held-out tasks; the
measure is how fast its return rises. Run `python mlsh.py` (Four Rooms:
meta-train, evaluate, print a table), with `--env bandits` or `--env rooms`
for the other task families, `--quick` for a smoke test, `--help` for the rest.

The algorithm comes first, whole, top to bottom: settings -> tiny MLPs and
their backprop -> GAE -> PPO -> the agent and its rollout -> the master's and
the sub-policies' updates -> meta-training -> fine-tuning on held-out tasks.
After the banner PLUMBING comes what only checks flags, measures, saves,
prints or draws. The algorithm never calls it.

Names
    G        networks in one stack, run as one batched matmul (M masters, or K sub-policies)
    M, E     learners (tasks) side by side, env copies per learner; n = M * E copies
    S        rollout steps per copy per iteration
    J        decisions of the master in one copy's rollout
    D, A, K  observation size, primitive actions, sub-policies
    W0, b0.. weights of layer 0.. ; h hidden activations ; dW0 their gradients

Array layouts (the section "Rows and networks" converts between them)
    (S, n, ...)     a rollout: step t of env copy i; copy i belongs to learner i // E
    (J, n)          the master's decisions: the j-th decision of copy i
    (M, S * E, ...) by learner: each learner's steps together, for its own network
    (rows, ...)     flat rows, and a key naming the network each row trains
    (G, B, ...)     rows grouped by network, zero-padded to B; valid (G, B) marks real rows
"""
import argparse
import dataclasses
import inspect
import json
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass

# Small matrices: BLAS threads cost more than they give, and runs side by side fight over cores.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 (after the thread settings, which must come first)
from scipy.sparse import csr_matrix  # noqa: E402
from scipy.stats import bootstrap  # noqa: E402

import envs  # noqa: E402


# ---- Settings ---------------------------------------------------------------

@dataclass
class Config:
    # environment
    preset: str = "fourrooms"       # named settings (PRESETS): fourrooms, rooms, bandits, paper
    env: str = "fourrooms"          # task family: fourrooms | rooms | bandits
    rooms: int = 3                  # rooms: R, a maze of R x R rooms (T = 25 R^2 / 2 unless given)
    max_steps: int = 50             # T: episode step limit
    slip: float = 0.0               # chance that a move is replaced by one of the other three
    random_start: bool = False      # goal mazes: start anywhere, not at the fixed cell 'S'
    reward: str = "reach"           # goal mazes: reach (+1, ends there) | every_step (+1 per step on it)
    maze: str = ""                  # fourrooms: a maze file of your own instead (legend in envs.py)
    # hierarchy
    subpolicies: int = 4            # K: number of sub-policies
    macro: int = 5                  # N: steps each master decision lasts
    master: str = "options"         # fine-tuning: options (skills and primitive actions) | paper (skills)
    interrupt: float = 0.1          # options: a skill stops where the master's probability of it < this
    hidden: int = 64                # units per hidden layer (tanh)
    layers: int = 1                 # hidden layers per network
    # meta-training schedule
    rounds: int = 20                # how many times tasks are drawn and masters reset
    tasks: int = 8                  # tasks side by side per round, each with its own master
    warmup: int = 10                # W: iterations updating only the masters
    joint: int = 20                 # U: iterations updating masters and sub-policies
    envs: int = 16                  # env copies per task
    steps: int = 64                 # S: rollout steps per copy per iteration
    # PPO (both levels)
    gamma: float = 0.99             # discount per env step (the paper's master: per decision)
    lam: float = 0.95               # GAE lambda
    clip: float = 0.2               # PPO ratio clip
    epochs: int = 4                 # passes over each batch
    minibatches: int = 4            # minibatches per pass
    master_lr: float = 0.01         # Adam step for θ (the paper's value)
    sub_lr: float = 1e-3            # Adam step for φ (the paper's 3e-4 was too slow: RESULTS.md)
    value_lr: float = 3e-3          # Adam step for every value function
    master_ent: float = 0.01        # entropy bonus of the master
    sub_ent: float = 0.01           # entropy bonus of the sub-policies (keeps a skill changeable)
    # evaluation on held-out tasks
    eval_split: str = "test"        # held-out tasks: test (reported) or validation (for choosing)
    methods: tuple = ("mlsh", "flat", "shared", "random_subs")  # methods evaluated
    eval_iters: int = 30            # iterations a fresh learner gets on each held-out task
    eval_seeds: int = 5             # evaluation seeds (each runs every held-out task)
    flat_lrs: tuple = (3e-3, 1e-2, 3e-2, 1e-1)  # flat PPO learning rates tried; the best reported
    # bookkeeping
    seed: int = 0                   # the one seed all randomness comes from
    out: str = ""                   # folder for results, checkpoint, figures


ONE_HOT = ("fourrooms", "rooms")   # task families that observe a one-hot cell: networks look it up


def child_seed(rng):
    """A seed for a child generator (an env's), drawn from the parent so one seed fixes all."""
    return int(rng.integers(2**63))


# ---- Tiny MLPs with hand-written backprop, stacked: G networks at once ------

def mlp_init(rng, G, sizes, out_scale=1.0, dtype=np.float32):
    """G independent tanh MLPs with layer sizes `sizes`, e.g. [D, 64, A].

    W_i: (G, in, out) ~ N(0, 1/in), the last layer times `out_scale` (0.01 for a policy, so that
    it starts near uniform); b_i: (G, 1, out) zeros. float32 by default: NumPy's float64 tanh is
    about 4x slower, and most of the cost. The gradient checks use float64.
    """
    p = {}
    n_layers = len(sizes) - 1
    for i in range(n_layers):
        scale = out_scale if i == n_layers - 1 else 1.0
        W = rng.standard_normal((G, sizes[i], sizes[i + 1])) * scale / np.sqrt(sizes[i])
        p[f"W{i}"] = W.astype(dtype)
        p[f"b{i}"] = np.zeros((G, 1, sizes[i + 1]), dtype=dtype)
    return p


def mlp_forward(p, x):
    """x: (G, B, D), or (1, B, D) to feed the same rows to all G networks. Returns out
    (G, B, out) and the list of layer inputs [x, h1, ...] that mlp_backward needs.

    A maze observes one-hot rows, and x may then be their cells, integers (G, B) or (1, B):
    x @ W0 for a one-hot row is one row of W0, so layer 0 looks it up (exactly the same numbers,
    without a matmul that is mostly zeros)."""
    n_layers = len(p) // 2
    hs = [x if x.dtype.kind == "i" else x.astype(p["W0"].dtype, copy=False)]
    for i in range(n_layers):
        if i == 0 and x.dtype.kind == "i":                # cells: row x[g, b] of W0[g]
            z = p["W0"][np.arange(len(p["W0"]))[:, None], x] + p["b0"]
        else:
            z = hs[-1] @ p[f"W{i}"] + p[f"b{i}"]          # (G, B, out_i)
        if i == n_layers - 1:
            return z, hs
        hs.append(np.tanh(z))


def mlp_backward(p, hs, dout):
    """Gradients of a loss L with respect to every weight, given dout = dL/dout (G, B, out).

    hs: the input of every layer, as mlp_forward returned it (hs[0] may be cells: one_hot_T).
    Returns a dict with a gradient of the same shape for every entry of p."""
    n_layers = len(p) // 2
    grads, d = {}, dout.astype(p["W0"].dtype, copy=False)
    for i in reversed(range(n_layers)):
        if i == 0 and hs[0].dtype.kind == "i":              # the input was given as cells
            grads["W0"] = one_hot_T(hs[0], d, p["W0"].shape[1])
        else:
            grads[f"W{i}"] = hs[i].transpose(0, 2, 1) @ d   # (G, in, out): backprop into W_i
        grads[f"b{i}"] = d.sum(axis=1, keepdims=True)       # (G, 1, out): into b_i
        if i > 0:
            dh = d @ p[f"W{i}"].transpose(0, 2, 1)          # (G, B, in): into the layer's input h_i
            d = dh * (1.0 - hs[i] ** 2)                     # through tanh: dh/dz = 1 - h^2
    return grads


def one_hot_T(cells, d, D):
    """x^T d (G, D, H) for the one-hot rows x (G, B, D) that `cells` (G, B) or (1, B) stand for:
    row b of d is added into row cells[b], as one sparse product (a dense one mostly adds zeros)."""
    G, B, H = d.shape
    rows = (np.arange(G)[:, None] * D + np.broadcast_to(cells, (G, B))).ravel()
    x_T = csr_matrix((np.ones(G * B, d.dtype), (rows, np.arange(G * B))), shape=(G * D, G * B))
    return (x_T @ d.reshape(G * B, H)).reshape(G, D, H)


class Adam:
    """Adam on a dict of (G, ...) arrays, updated in place: one state per network stack."""

    def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads):
        self.t += 1
        for k in params:
            m, v, g = self.m[k], self.v[k], grads[k]
            m *= self.b1                                    # m = b1 m + (1 - b1) g, in place
            m += (1 - self.b1) * g
            v *= self.b2                                    # v = b2 v + (1 - b2) g^2
            v += (1 - self.b2) * g ** 2
            mhat = m / (1 - self.b1 ** self.t)
            vhat = v / (1 - self.b2 ** self.t)
            params[k] -= self.lr * mhat / (np.sqrt(vhat) + self.eps)   # descent on the loss


class Net:
    """A stack of G MLPs (policies or value functions) and its Adam state. one_hot: its inputs
    are one-hot rows (a maze's cells), which it hands to mlp_forward as cells."""

    def __init__(self, params, lr, one_hot=False):
        self.p, self.opt, self.one_hot = params, Adam(params, lr), one_hot

    @classmethod
    def new(cls, rng, G, n_in, n_out, cfg, lr, out_scale=1.0):
        """G fresh networks: n_in -> cfg.layers tanh layers of cfg.hidden units -> n_out."""
        sizes = [n_in] + [cfg.hidden] * cfg.layers + [n_out]
        return cls(mlp_init(rng, G, sizes, out_scale), lr, one_hot=cfg.env in ONE_HOT)

    @property
    def G(self):
        return self.p["W0"].shape[0]

    def inputs(self, x):
        """x as mlp_forward takes it: the cells (argmax) of one-hot rows, else x itself. A zero
        row of padding becomes cell 0; nothing uses its output, and its gradient is zero."""
        return x.argmax(-1) if self.one_hot else x

    def __call__(self, x):
        return mlp_forward(self.p, self.inputs(x))[0]


def log_softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)         # stable for large logits
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def sample(rng, logits):
    """One categorical draw per row of logits (..., A), by inverting the CDF."""
    probs = np.exp(log_softmax(logits))
    u = rng.random(probs.shape[:-1] + (1,))
    return np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)


# ---- Advantages: GAE(gamma, lambda) -----------------------------------------

def gae(rew, val, next_val, term, end, gamma, lam):
    """Generalised advantage estimation, backwards through time.

    Arrays are (S, n): S steps of n independent streams.
      rew[t], val[t]   reward and value at step t
      next_val[t]      value of the state after step t (the final observation's
                       value when the episode was truncated there)
      term[t]          the episode terminated at t: no value after it
      end[t]           the episode ended at t (terminated or truncated): the
                       advantage does not flow back across it
    delta_t = r_t + gamma (1 - term_t) V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma lam (1 - end_t) A_{t+1},    with A_S = 0
    gamma is a number, or an (S, n) array with a discount per step.
    """
    gamma = np.broadcast_to(gamma, rew.shape)
    # easy to get wrong: bootstrap through a truncation (term = 0), never through a termination
    delta = rew + gamma * (1.0 - term) * next_val - val
    adv = np.zeros_like(delta)
    running = np.zeros(delta.shape[1:])                  # A_{t+1}, for every stream at once
    for t in reversed(range(len(delta))):
        running = delta[t] + gamma[t] * lam * (1.0 - end[t]) * running
        adv[t] = running
    return adv


# ---- Rows and networks: moving data between the layouts of the docstring ----

def group(key, G, *arrays):
    """Flat rows -> (G, B, ...): row r goes to network key[r]'s group, zero-padded to one length B.

    Returns each array grouped (None stays None), and valid (G, B).
    """
    counts = np.bincount(key, minlength=G)
    if counts[0] > 0 and (counts == counts[0]).all() and (key[1:] >= key[:-1]).all():
        # already in groups of one size (a flat learner's steps): a reshape, no copy
        return [None if a is None else a.reshape((G, counts[0]) + a.shape[1:]) for a in arrays], \
            np.ones((G, counts[0]), dtype=bool)
    order = np.argsort(key, kind="stable")
    slot = np.arange(len(key)) - np.repeat(np.cumsum(counts) - counts, counts)   # place in group
    gk = key[order]
    valid = np.zeros((G, max(counts.max(), 1)), dtype=bool)
    valid[gk, slot] = True
    out = []
    for a in arrays:
        g = None
        if a is not None:
            g = np.zeros(valid.shape + a.shape[1:], dtype=a.dtype)
            g[gk, slot] = a[order]
        out.append(g)
    return out, valid


def values(net, obs, key):
    """V(obs) for flat rows, each row evaluated by network key[row] of the stack: (rows,)."""
    (x,), valid = group(key, net.G, obs)
    out = np.empty(len(obs))
    out[np.argsort(key, kind="stable")] = net(x)[..., 0][valid]
    return out


def by_learner(x, M):
    """(S, n, ...) -> (M, S * E, ...): each learner's steps together, for its own network."""
    S, n = x.shape[:2]
    y = x.reshape((S, M, n // M) + x.shape[2:])
    return np.moveaxis(y, 1, 0).reshape((M, -1) + x.shape[2:])


def from_learner(y, S):
    """(M, S * E, ...) -> (S, n, ...): the inverse of by_learner."""
    M = y.shape[0]
    x = y.reshape((M, S, -1) + y.shape[2:])
    return np.moveaxis(x, 0, 1).reshape((S, -1) + y.shape[2:])


def by_decision(i, n):
    """Decisions listed copy by copy, in time order within a copy (i: each one's copy), into the
    (J, n) layout: returns j, each one's rank within its copy, and grid(x), which puts row x[d]
    at [j[d], i[d]] of a zero (J, n) array."""
    counts = np.bincount(i, minlength=n)
    j = np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts)

    def grid(x):
        out = np.zeros((max(counts.max(), 1), n))
        out[j, i] = x
        return out
    return j, grid


# ---- PPO: clipped surrogate with entropy bonus, value regression ------------

def ppo_loss(logits, act, old_logp, adv, w, clip, ent_coef):
    """PPO-clip policy loss and its gradient with respect to the logits.

    logits (G, B, A); act, old_logp, adv, w (G, B); w are sample weights
    summing to 1 per network. The loss is minimised (descent):
        L = - sum_i w_i [ min(r_i A_i, clip(r_i, 1-e, 1+e) A_i) + ent_coef H_i ]
        r_i = pi(a_i|s_i) / pi_old(a_i|s_i),   H_i the entropy of pi(.|s_i)
    Returns (loss (G,), dL/dlogits (G, B, A)).
    """
    logp_all = log_softmax(logits)
    probs = np.exp(logp_all)
    onehot = np.eye(logits.shape[-1])[act]                         # (G, B, A)
    logp = (logp_all * onehot).sum(-1)
    ratio = np.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = np.clip(ratio, 1 - clip, 1 + clip) * adv
    surrogate = np.minimum(unclipped, clipped)
    entropy = -(probs * logp_all).sum(-1)
    loss = -(w * (surrogate + ent_coef * entropy)).sum(-1)

    # d surrogate / d logp: r A, but 0 where the clipped term is the smaller (a clipped ratio)
    dsur_dlogp = np.where(unclipped > clipped, 0.0, unclipped)
    dlogp_dlogits = onehot - probs                                 # the softmax identity
    dent_dlogits = -probs * (logp_all + entropy[..., None])        # dH/dz_j = -p_j (log p_j + H)
    # chain rule into the logits z: dL/dz = -w (dsur/dlogp * dlogp/dz + ent_coef * dH/dz)
    dlogits = -w[..., None] * (dsur_dlogp[..., None] * dlogp_dlogits + ent_coef * dent_dlogits)
    return loss, dlogits


def value_loss(v, ret, w):
    """L = 0.5 sum_i w_i (V(s_i) - R_i)^2 for v (G, B, 1); returns (loss (G,), dL/dv)."""
    err = v[..., 0] - ret
    return 0.5 * (w * err ** 2).sum(-1), (w * err)[..., None]     # dL/dv_i = w_i (V(s_i) - R_i)


def train_net(net, x, valid, loss_fn, cfg, rng):
    """Adam steps on `net` over cfg.epochs passes, each in cfg.minibatches shuffled minibatches.

    x: inputs (G, B, D); valid: (G, B) which rows hold data; loss_fn(out, idx, w) -> (loss,
    dL/dout) for the minibatch's rows idx, weighted by w (summing to 1 over a network's rows)."""
    B, x = valid.shape[1], net.inputs(x)
    for _ in range(cfg.epochs):
        for idx in np.array_split(rng.permutation(B), min(cfg.minibatches, B)):
            w = valid[:, idx] / np.maximum(valid[:, idx].sum(axis=1, keepdims=True), 1)
            out, hs = mlp_forward(net.p, x[:, idx])
            _, dout = loss_fn(out, idx, w)
            net.opt.step(net.p, mlp_backward(net.p, hs, dout))


def normalise(adv, valid):
    """Advantages to zero mean, unit spread within each network's valid rows."""
    n = np.maximum(valid.sum(1, keepdims=True), 1)
    mean = (adv * valid).sum(1, keepdims=True) / n
    std = np.sqrt((((adv - mean) * valid) ** 2).sum(1, keepdims=True) / n)
    return np.where(valid, (adv - mean) / (std + 1e-8), 0.0)


def ppo_update(pi, vf, obs, act, logp, adv, ret, key, ent_coef, cfg, rng):
    """One PPO update of the policy stack `pi` and the value stack `vf` (either may be None).

    Rows (obs, act, logp, adv, ret) are flat; key gives each row's network in
    the stack, which is trained on its own rows only."""
    G = (pi or vf).G
    (obs, act, logp, adv, ret), valid = group(key, G, obs, act, logp, adv, ret)
    if pi is not None:
        adv = normalise(adv, valid)
        train_net(pi, obs, valid, lambda out, idx, w: ppo_loss(
            out, act[:, idx], logp[:, idx], adv[:, idx], w, cfg.clip, ent_coef), cfg, rng)
    if vf is not None:
        train_net(vf, obs, valid, lambda out, idx, w: value_loss(out, ret[:, idx], w), cfg, rng)


# ---- The agent: a master over sub-policies, or a flat policy ----------------

@dataclass
class Agent:
    """M learners side by side (one per task), sharing the sub-policies.

    master:  θ, M policies over K choices (over the A primitive actions when subs is None)
    value:   M master value functions, on the master's own timescale
    subs:    φ, K sub-policies over the A primitive actions, shared by all M (None: flat agent)
    critic:  M per-step value functions used only to train φ (None when φ is frozen)
    macro:   N, steps per master decision (1 for a flat agent)
    primitives: choices K..K+A-1 are the primitive actions, for one step each (options; discounted
             per env step, since the master's choices last 1 or N steps)
    interrupt: a skill stops early where the master's probability of it is below this (0: never)

    A flat PPO policy is this same agent with no sub-policies: its master's
    choices are the primitive actions themselves, made every step.
    """
    master: Net
    value: Net
    subs: Net = None
    critic: Net = None
    macro: int = 1
    primitives: bool = False
    interrupt: float = 0.0

    @property
    def M(self):
        return self.master.G


def new_agent(rng, M, D, n_choices, cfg, lr, macro=1, subs=None, critic=False, primitives=False):
    """M fresh masters (new weights, new Adam state: θ is reset whole) and their value functions.

    n_choices is K for a hierarchy (K + A with primitives), A for a flat policy;
    critic=True adds the per-task step critics needed while φ is being trained.
    """
    master = Net.new(rng, M, D, n_choices, cfg, lr, out_scale=0.01)
    value = Net.new(rng, M, D, 1, cfg, cfg.value_lr)
    return Agent(master, value, subs, Net.new(rng, M, D, 1, cfg, cfg.value_lr) if critic else None,
                 macro, primitives, cfg.interrupt if primitives else 0.0)


@dataclass
class Rollout:
    """What one iteration of S steps on n = M * E env copies recorded, in the (S, n, ...) layout."""
    obs: np.ndarray          # (S, n, D) observation each step acted on
    next_obs: np.ndarray     # (S, n, D) observation after the step (the final one where it ended)
    decide: np.ndarray       # (S, n) the master chose at this step
    choice: np.ndarray       # (S, n) the master's current choice (sub-policy, or action if flat)
    choice_logp: np.ndarray  # (S, n) log prob of the choice under the master (where decide)
    act: np.ndarray          # (S, n) primitive action taken
    act_logp: np.ndarray     # (S, n) its log prob under the active sub-policy
    rew: np.ndarray          # (S, n)
    term: np.ndarray         # (S, n) episode terminated at this step
    trunc: np.ndarray        # (S, n) episode hit the step limit at this step
    score: np.ndarray        # (M,) mean normalised return of the episodes that ended, per learner
    success: np.ndarray      # (M,) their success rate
    usage: np.ndarray        # (K,) fraction of steps each sub-policy acted


class Runner:
    """Steps a batched env with an agent, carrying episodes over between iterations.

    Copy i belongs to learner i // E. A copy's master decides at the first
    step of every episode and then every N steps; between decisions the
    chosen sub-policy acts.
    """

    def __init__(self, env, M):
        self.env, self.M, self.E = env, M, env.n // M
        self.obs, _ = env.reset()
        self.countdown = np.zeros(env.n, dtype=int)   # steps left in each copy's current decision
        self.active = np.zeros(env.n, dtype=int)      # each copy's current choice

    def set_tasks(self, tasks):
        """New tasks (one per copy): every copy starts a new episode with a fresh decision."""
        self.obs, _ = self.env.reset(options={"tasks": tasks})
        self.countdown[:] = 0

    def run(self, agent, S, rng):
        """S steps in every copy with the agent acting; returns the Rollout."""
        env, n, M = self.env, self.env.n, self.M
        learner = np.arange(n) // self.E
        rec = None
        score, success, ended = np.zeros(M), np.zeros(M), np.zeros(M)
        for t in range(S):
            obs = self.obs
            # master θ: a new choice where one is due, else keep the current one
            decide = self.countdown == 0
            logits = agent.master(obs.reshape(M, self.E, -1)).reshape(n, -1)   # (n, K) or (n, A)
            if agent.interrupt > 0:   # stop a skill the master no longer wants here
                keep = np.take_along_axis(log_softmax(logits), self.active[:, None], 1)[:, 0]
                decide |= keep < np.log(agent.interrupt)
            choice = np.where(decide, sample(rng, logits), self.active)
            choice_logp = np.take_along_axis(log_softmax(logits), choice[:, None], 1)[:, 0]
            self.active = choice
            self.countdown = np.where(decide, agent.macro, self.countdown) - 1
            # sub-policies φ: each copy acts with its active one
            if agent.subs is None:
                act, act_logp = choice, choice_logp
            else:
                K = agent.subs.G
                sub_logits = agent.subs(obs[None])[np.minimum(choice, K - 1), np.arange(n)]
                act = sample(rng, sub_logits)
                act_logp = np.take_along_axis(log_softmax(sub_logits), act[:, None], 1)[:, 0]
                # choice K + a (a master with primitives): action a, for one step
                act = np.where(choice >= K, choice - K, act)
                self.countdown[decide & (choice >= K)] = 0

            self.obs, rew, term, trunc, info = env.step(act)
            done = term | trunc
            self.countdown[done] = 0                          # a new episode starts with a decision
            score += np.bincount(learner, info["score"] * done, M)
            success += np.bincount(learner, info["success"] * done, M)
            ended += np.bincount(learner, done, M)
            step = dict(obs=obs, next_obs=info["final_obs"], decide=decide, choice=choice,
                        choice_logp=choice_logp, act=act, act_logp=act_logp, rew=rew, term=term, trunc=trunc)
            if rec is None:   # the first step gives every record's shape: (S, n, ...), filled step by step
                rec = {k: np.empty((S,) + v.shape, v.dtype) for k, v in step.items()}
            for k, v in step.items():
                rec[k][t] = v
        K = agent.subs.G if agent.subs is not None else 1
        usage = np.bincount(rec["choice"].ravel(), minlength=K)[:K] / rec["choice"].size
        ended = np.maximum(ended, 1)
        return Rollout(**rec, score=score / ended, success=success / ended, usage=usage)


# ---- Learning from a rollout: the master on its own timescale, the sub-policies per step ----

def master_transitions(ro, value, E, gamma, lam, smdp=False):
    """The master's own MDP: one transition per decision, and GAE over each copy's decisions.

    A decision made at step t of copy i lasts until the step before that copy's
    next decision (N steps, fewer if the episode ended, or the rollout did).
    Its reward is the sum of the env rewards over those steps, and the state
    it leads to is the next_obs of its last step: terminated, truncated, or
    neither, as that step was. Its value is value(obs) by copy i's learner's
    network (i // E); gamma discounts once per decision, or with smdp once per
    env step (rewards inside a decision too, and gamma^its length after it).
    Advantages do not flow across an episode's end, nor past the rollout's
    last decision.
    Returns t, i, adv, ret: arrays with one entry per decision (in any order),
    its step, its copy, its advantage and its return adv + V(obs).
    """
    S, n = ro.decide.shape
    i, t = np.nonzero(ro.decide.T)                  # copy 0's decisions in time order, copy 1's..
    same_next = np.r_[i[1:] == i[:-1], False]       # followed by another decision of the same copy
    last = np.where(same_next, np.r_[t[1:], 0] - 1, S - 1)           # the decision's last step
    cum = np.vstack([np.zeros((1, n)), np.cumsum(ro.rew, axis=0)])   # cum[t] = sum of rew[:t]
    R = cum[last + 1, i] - cum[t, i]                                  # the master's reward
    term = ro.term[last, i]
    end = term | ro.trunc[last, i] | ~same_next
    val = values(value, ro.obs[t, i], i // E)
    next_val = values(value, ro.next_obs[last, i], i // E)
    j, grid = by_decision(i, n)                          # GAE runs down the (J, n) layout
    if smdp:   # discount per env step: the rewards within a decision, and gamma^duration after it
        disc = gamma ** np.arange(S + 1)[:, None]
        cum = np.vstack([np.zeros((1, n)), np.cumsum(disc[:-1] * ro.rew, axis=0)])
        R, gamma = (cum[last + 1, i] - cum[t, i]) / disc[t, 0], grid(gamma ** (last + 1 - t))
    adv = gae(grid(R), grid(val), grid(next_val), grid(term), grid(end), gamma, lam)[j, i]
    return t, i, adv, adv + val


def step_advantages(ro, critic, gamma, lam):
    """Per-step GAE of the env reward with the per-task critic, for training φ.

    The critic estimates the value of the whole hierarchy on this task, so a
    sub-policy's action is credited with everything after it, including what
    later sub-policies earn: bootstrapping across a switch is right here,
    because the value there is still the hierarchy's.
    """
    S, M = len(ro.rew), critic.G
    val = from_learner(critic(by_learner(ro.obs, M))[..., 0], S)             # (S, n)
    next_val = from_learner(critic(by_learner(ro.next_obs, M))[..., 0], S)
    adv = gae(ro.rew, val, next_val, ro.term, ro.term | ro.trunc, gamma, lam)
    return adv, adv + val


def update(agent, ro, cfg, rng, train_subs=False):
    """PPO on θ from the master's transitions; with train_subs, on φ from the steps each executed.

    The per-task critic (present while φ trains, warmup included, so that it
    is ready when the joint phase starts) is fitted on every step.
    """
    S, n = ro.rew.shape
    M, E = agent.M, n // agent.M
    t, i, adv, ret = master_transitions(ro, agent.value, E, cfg.gamma, cfg.lam, agent.primitives)
    ppo_update(agent.master, agent.value, ro.obs[t, i], ro.choice[t, i], ro.choice_logp[t, i],
               adv, ret, i // E, cfg.master_ent, cfg, rng)
    if agent.critic is None:
        return
    adv, ret = step_advantages(ro, agent.critic, cfg.gamma, cfg.lam)
    if train_subs:
        # each sub-policy k learns only from the steps it executed, pooled over the tasks
        mine = ro.choice < agent.subs.G                      # (primitive steps belong to no φ_k)
        ppo_update(agent.subs, None, ro.obs[mine], ro.act[mine], ro.act_logp[mine], adv[mine], None,
                   ro.choice[mine], cfg.sub_ent, cfg, rng)
    # the per-task critic learns the hierarchy's per-step value
    x, target = by_learner(ro.obs, M), by_learner(ret, M)
    train_net(agent.critic, x, np.ones(target.shape, bool),
              lambda out, idx, w: value_loss(out, target[:, idx], w), cfg, rng)


# ---- Meta-training (the paper's Algorithm 1) --------------------------------

def meta_round(cfg, family, runner, subs, rng):
    """One round of Algorithm 1: sample tasks; reset θ; W iterations on θ alone; U on θ and φ.

    cfg.tasks tasks are drawn from family, each run on cfg.envs copies side by
    side (runner steps cfg.tasks * cfg.envs copies), each with its own fresh
    master over the shared sub-policies subs (φ, trained in place).
    Returns the round's record: the success rate of the last warmup iteration
    (None when W = 0) and of the last joint one, and how often each
    sub-policy acted over the round.
    """
    M, E, K = cfg.tasks, cfg.envs, cfg.subpolicies
    runner.set_tasks(np.repeat(family.sample(rng, M), E))               # M tasks, E copies of each
    agent = new_agent(rng, M, family.obs_dim, K, cfg, cfg.master_lr, cfg.macro, subs=subs,
                      critic=True)                                       # a fresh θ
    usage, warm = np.zeros(K), None
    for it in range(cfg.warmup + cfg.joint):
        ro = runner.run(agent, cfg.steps, rng)
        update(agent, ro, cfg, rng, train_subs=it >= cfg.warmup)        # φ frozen for the first W
        usage += ro.usage
        if it == cfg.warmup - 1:
            warm = float(ro.success.mean())
    return {"warmup_success": warm, "joint_success": float(ro.success.mean()),
            "usage": (usage / (cfg.warmup + cfg.joint)).round(3).tolist()}


def meta_train(cfg, family, rng, resume=None, after_round=None):
    """Learn φ: cfg.rounds rounds of meta_round, the sub-policies kept from round to round.

    A round's tasks run side by side, each with its own master; φ's update pools all their steps
    (the paper's groups). resume: a checkpoint's state to carry on from (load_checkpoint);
    after_round(subs, history, rng, env_rng): called after every round (the plumbing's progress
    line and checkpoint). Returns φ and one record per round.
    """
    D, A, K, M, E = family.obs_dim, family.n_actions, cfg.subpolicies, cfg.tasks, cfg.envs
    subs = Net.new(rng, K, D, A, cfg, cfg.sub_lr, out_scale=0.01)             # φ
    runner = Runner(family.make(np.zeros(M * E, dtype=int), "train", seed=child_seed(rng)), M)
    history = []
    if resume is not None:   # bookkeeping: φ, its optimiser and both generators as saved
        subs.p, subs.opt, history = resume["subs"], resume["opt"], resume["history"]
        rng.bit_generator.state = resume["rng"]
        runner.env.rng.bit_generator.state = resume["env_rng"]
    for r in range(len(history), cfg.rounds):
        history.append({"round": r + 1, "tasks": M, **meta_round(cfg, family, runner, subs, rng)})
        if after_round is not None:
            after_round(subs, history, rng, runner.env.rng)
    return subs, history


# ---- Test time: fine-tuning on held-out tasks, MLSH and three baselines -----

def fine_tune(cfg, family, make_agent, seeds):
    """Train fresh learners on every held-out task, `seeds` times each, all side by side.

    make_agent(rng, L) builds L learners. Every method starts from the same
    generator, so they meet the same seeds. Returns per-learner curves of
    normalised return and success, each (L, eval_iters), and the trained
    learners (learner l ran held-out task l % n_tasks).
    """
    rng = np.random.default_rng([cfg.seed, 2])
    tasks = np.tile(family.held_out(cfg.eval_split), seeds)
    L = len(tasks)
    env = family.make(np.repeat(tasks, cfg.envs), cfg.eval_split, seed=child_seed(rng))
    runner = Runner(env, L)
    agent = make_agent(rng, L)
    score, success = np.zeros((L, cfg.eval_iters)), np.zeros((L, cfg.eval_iters))
    for it in range(cfg.eval_iters):
        ro = runner.run(agent, cfg.steps, rng)
        update(agent, ro, cfg, rng)
        score[:, it], success[:, it] = ro.score, ro.success
    return score, success, agent


def pretrain_shared(cfg, family, lr, rng):
    """The "shared policy" baseline: one flat policy trained on the training tasks
    with exactly meta-training's env steps and task schedule."""
    D, A, M, E = family.obs_dim, family.n_actions, cfg.tasks, cfg.envs
    agent = new_agent(rng, 1, D, A, cfg, lr)                   # one learner over all M * E copies
    runner = Runner(family.make(np.zeros(M * E, dtype=int), "train", seed=child_seed(rng)), 1)
    for _ in range(cfg.rounds):
        runner.set_tasks(np.repeat(family.sample(rng, M), E))
        for _ in range(cfg.warmup + cfg.joint):
            update(agent, runner.run(agent, cfg.steps, rng), cfg, rng)
    return agent


def evaluate(cfg, family, subs, tune=fine_tune):
    """The paper's test on held-out tasks, for MLSH and the three baselines in cfg.methods.

    A generator: as each method finishes it yields (name, lr, *fine_tune's results). tune is
    fine_tune (the command line passes one that keeps each result, so a stopped run resumes).
      mlsh         a fresh master over the learned φ, frozen, and over the A primitive
                   actions as options of one step (cfg.master "options")
      mlsh_paper   the paper's master over the same φ: skills only (with mlsh, unless
                   cfg.master is "paper", when mlsh is this one)
      random_subs  mlsh's master over untrained sub-policies: what learning φ bought
      flat         flat PPO from scratch, once per rate in cfg.flat_lrs
      shared       one flat policy pre-trained on the training tasks, then
                   fine-tuned, at flat PPO's best rate (needs flat)
    """
    D, A, K = family.obs_dim, family.n_actions, cfg.subpolicies
    prim = cfg.master == "options"
    over = lambda phi, prim=prim: lambda rng, L: new_agent(rng, L, D, K + A * prim, cfg, cfg.master_lr,
                                                           cfg.macro, phi, primitives=prim)
    if "mlsh" in cfg.methods:
        yield ("mlsh", cfg.master_lr, *tune(cfg, family, over(subs), cfg.eval_seeds))
        if prim:
            yield ("mlsh_paper", cfg.master_lr, *tune(cfg, family, over(subs, False), cfg.eval_seeds))
    if "random_subs" in cfg.methods:
        random_subs = Net.new(np.random.default_rng([cfg.seed, 4]), K, D, A, cfg, cfg.sub_lr, 0.01)
        yield ("random_subs", cfg.master_lr, *tune(cfg, family, over(random_subs), cfg.eval_seeds))
    if "flat" in cfg.methods:
        auc = {}
        for lr in cfg.flat_lrs:
            score, success, learners = tune(
                cfg, family, lambda rng, L: new_agent(rng, L, D, A, cfg, lr), cfg.eval_seeds)
            auc[lr] = score.mean(axis=1).mean()
            yield "flat", lr, score, success, learners
        best = max(auc, key=auc.get)         # chosen on these very tasks: generous to the baseline
        if "shared" in cfg.methods:
            shared = pretrain_shared(cfg, family, best, np.random.default_rng([cfg.seed, 5]))

            def from_shared(rng, L):
                agent = new_agent(rng, L, D, A, cfg, best)
                for net, src in [(agent.master, shared.master), (agent.value, shared.value)]:
                    for k in net.p:
                        net.p[k][...] = src.p[k]     # every learner starts from the shared weights
                return agent

            yield ("shared", best, *tune(cfg, family, from_shared, cfg.eval_seeds))


# ===========================================================================
# PLUMBING. The algorithm ends above; nothing above calls what follows. Here:
# named settings and their checks, measures of what the skills allow, the
# benchmark, checkpoints, pictures, and the command line. Skip it unless you
# want it.
# ===========================================================================

# ---- Named settings, and the checks that refuse a bad one -------------------

PRESETS = {  # named settings; --env E uses preset E, and any flag given on the command line wins
    # the default run, kept to a few minutes: MLSH's two masters and flat PPO at its best rate on
    # validation goals (0.03, level with 0.01, of 0.003 / 0.01 / 0.03 / 0.1 over 3 seeds: RESULTS.md);
    # --methods mlsh flat shared random_subs --flat-lrs 0.003 0.01 0.03 0.1 is the sweeps' full test
    "fourrooms": dict(env="fourrooms", subpolicies=4, macro=5, max_steps=50, warmup=10, joint=20,
                      rounds=20, methods=("mlsh", "flat"), flat_lrs=(3e-2,)),
    # chosen over 10 meta-training seeds; primitives cost a master here (RESULTS.md)
    "bandits": dict(env="bandits", subpolicies=2, macro=10, max_steps=50, warmup=5, joint=15,
                    rounds=20, sub_lr=3e-3, flat_lrs=(1e-2, 3e-2, 1e-1), master="paper"),
    # the paper's Four Rooms (Sec. 6.3): fixed start, a random goal, 1 for every step on it, T 100,
    # N 25, K 4, W 20, U 30, about 2,000 steps per iteration per task (16 x 128), 2 x 64
    # networks; the sub-policy entropy (with the reach reward), flat PPO's learning rates and the
    # interruption threshold (the lowest of 0.5, 0.7, 0.9, which score alike) were chosen on
    # validation goals (RESULTS.md)
    "paper": dict(env="fourrooms", reward="every_step", subpolicies=4, macro=25, max_steps=100,
                  warmup=20, joint=30, rounds=20, steps=128, layers=2, sub_lr=3e-3, sub_ent=0.03,
                  flat_lrs=(1e-3, 3e-3, 1e-2, 3e-2), interrupt=0.5),
    # R x R rooms, Four Rooms' settings; T and S follow R (rooms_budget), N stays 5, about the
    # steps to cross a room; flat PPO's rates bracket its best on validation goals at R = 3, and
    # so does the interruption threshold (0.1, 0.2, 0.3: RESULTS.md)
    "rooms": dict(env="rooms", rooms=3, subpolicies=4, macro=5, warmup=10, joint=20, rounds=20,
                  flat_lrs=(1e-3, 3e-3, 1e-2, 3e-2), interrupt=0.2),
}
FAMILIES = ("fourrooms", "rooms", "bandits")
METHOD_NAMES = ("mlsh", "flat", "shared", "random_subs")


def rooms_budget(rooms):
    """The rooms preset's T and S for R x R rooms: T by envs.RoomTasks.horizon (25 R^2 / 2), S the
    first multiple of 64 that holds a whole episode."""
    T = envs.RoomTasks.horizon(rooms)
    return dict(max_steps=T, steps=64 * -(-T // 64))


def check_config(cfg):
    """Every problem with a config, as sentences that say what to do; [] when it is fine."""
    problems = []
    flag = lambda name: "--" + name.replace("_", "-")
    at_least = {1: ["subpolicies", "macro", "hidden", "rounds", "tasks", "joint", "envs", "steps",
                    "epochs", "minibatches", "eval_iters", "eval_seeds", "max_steps"],
                0: ["warmup", "layers"]}
    for low, names in at_least.items():
        for name in names:
            if getattr(cfg, name) < low:
                problems.append(f"{flag(name)} is {getattr(cfg, name)}; it must be at least {low}")
    if not 0 <= cfg.interrupt < 1:
        problems.append(f"--interrupt is {cfg.interrupt}; it is a probability in [0, 1)")
    if not 0 <= cfg.slip < 1:
        problems.append(f"--slip is {cfg.slip}; it is a probability in [0, 1)")
    for name in ["master_lr", "sub_lr", "value_lr", "clip"]:
        if not 0 < getattr(cfg, name) < float("inf"):
            problems.append(f"{flag(name)} is {getattr(cfg, name)}; it must be a positive number")
    if not cfg.flat_lrs or not all(0 < lr < float("inf") for lr in cfg.flat_lrs):
        problems.append(f"--flat-lrs is {' '.join(map(str, cfg.flat_lrs))}; "
                        f"give one or more positive numbers")
    for name in ["master_ent", "sub_ent"]:
        if not 0 <= getattr(cfg, name) < float("inf"):
            problems.append(f"{flag(name)} is {getattr(cfg, name)}; it must be 0 or more")
    if not 0 < cfg.gamma <= 1 or not 0 <= cfg.lam <= 1:
        problems.append(f"--gamma {cfg.gamma} and --lam {cfg.lam}: gamma must be in (0, 1], "
                        f"lam in [0, 1]")
    if cfg.steps < cfg.max_steps:   # else an iteration may end no episode, and score 0
        problems.append(f"--steps {cfg.steps} is shorter than --max-steps {cfg.max_steps}; an "
                        f"iteration must be able to finish an episode: raise --steps")
    if cfg.env == "rooms" and cfg.rooms < 2:
        problems.append(f"--rooms is {cfg.rooms}; a room maze has at least 2 x 2 rooms")
    if cfg.env not in FAMILIES:
        problems.append(f"--env {cfg.env!r} is not a task family here; "
                        f"choose one of {', '.join(FAMILIES)}")
    if cfg.master not in ("options", "paper"):
        problems.append(f"--master {cfg.master!r}: choose options (the skills and every primitive action "
                        f"for one step) or paper (the skills only, as in the paper)")
    if cfg.reward not in envs.GoalMaze.REWARDS:
        problems.append(f"--reward {cfg.reward!r}: choose reach (+1 on reaching the goal, which ends "
                        f"the episode) or every_step (+1 for every step on the goal: the paper's)")
    if cfg.eval_split not in envs.TaskFamily.SPLITS:
        problems.append(f"--eval-split {cfg.eval_split!r}: choose test or validation")
    unknown = [m for m in cfg.methods if m not in METHOD_NAMES]
    if unknown or not cfg.methods:
        problems.append(f"--methods {' '.join(cfg.methods)}: choose one or more of "
                        f"{', '.join(METHOD_NAMES)}")
    elif "shared" in cfg.methods and "flat" not in cfg.methods:
        problems.append("--methods: shared needs flat too (the shared policy uses flat PPO's "
                        "best learning rate)")
    return problems


def make_family(cfg):
    """The task distribution the config names: goal cells of a maze, or Moving Bandits."""
    if cfg.maze and cfg.env != "fourrooms":
        raise ValueError(f"--maze makes goal tasks on your maze: use it with --env fourrooms, "
                         f"not {cfg.env}")
    start = None if cfg.random_start else "S"
    if cfg.env == "bandits" and cfg.reward != "reach":
        raise ValueError(f"--reward {cfg.reward} is for goal mazes; Moving Bandits pays for reaching a mark")
    if cfg.env == "fourrooms":
        goals = dict(start=start, slip=cfg.slip, max_steps=cfg.max_steps, reward=cfg.reward)
        if not cfg.maze:
            return envs.GoalTasks(**goals)
        try:
            return envs.GoalTasks(**goals, rows=envs.read_maze(cfg.maze))
        except (ValueError, OSError) as e:
            why = e.strerror if isinstance(e, OSError) else e
            raise ValueError(f"maze file {cfg.maze}: {why}") from None
    if cfg.env == "rooms":
        return envs.RoomTasks(cfg.rooms, start=start, slip=cfg.slip, max_steps=cfg.max_steps,
                              reward=cfg.reward)
    if cfg.env == "bandits":
        return envs.BanditTasks(slip=cfg.slip, max_steps=cfg.max_steps)
    raise ValueError(f"unknown env {cfg.env!r}: choose one of {', '.join(FAMILIES)}")


# ---- Measures: intervals, each skill alone, and what the skills allow any master ----

def summarise(score, success, rng):
    """AUC (mean normalised return over the iterations) per learner, its mean and 95% bootstrap CI.

    success_auc is the mean success rate over the iterations: the paper's
    reward does not ask for the shortest path, so both are reported.
    """
    auc = score.mean(axis=1)
    if np.ptp(auc) == 0:
        ci = (float(auc[0]), float(auc[0]))
    else:
        res = bootstrap((auc,), np.mean, confidence_level=0.95, n_resamples=10000,
                        method="percentile", rng=rng)
        ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    hit80 = np.flatnonzero(success.mean(axis=0) >= 0.8)
    half = 1.96 * score.std(axis=0) / np.sqrt(len(score))    # normal-approximation band
    mean = score.mean(axis=0)
    return {"auc": float(auc.mean()), "auc_ci": list(ci), "success_auc": float(success.mean()),
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
    rng = np.random.default_rng([cfg.seed, 6])
    env = family.make(np.tile(np.repeat(tasks, cfg.envs), K), cfg.eval_split, seed=child_seed(rng))
    # learner k * n_tasks + j is sub-policy k on task j, acting every step as a flat policy would
    alone = new_agent(rng, K * n_tasks, family.obs_dim, family.n_actions, cfg, 0.0)
    for w in alone.master.p:
        alone.master.p[w][...] = np.repeat(subs.p[w], n_tasks, axis=0)
    runner = Runner(env, K * n_tasks)
    success = [runner.run(alone, cfg.steps, rng).success for _ in range(iters)]
    return np.mean(success, axis=0).reshape(K, n_tasks)


def reach(cfg, family, subs, rollouts=32):
    """What the skills let a master do on goal tasks, by dynamic programming (None otherwise).

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
    always continues, and the score divides by the best return. The same recursion with 1 for a hit gives the best
    success; with the mean over k instead of the max, how often a uniformly
    random master (a fresh one) meets g; with K = 1 and uniformly random
    actions, how often a random walk (flat PPO at its start) does.
    When the fine-tuning master may also take primitive actions (cfg.master "options"),
    each is one more choice that lasts one step, and the master decides at
    every t = T - 1, ..., 0; then "skills_only" holds the best score and
    success without them.
    Returns per-goal arrays (n_cells,), averaged over starts when the start
    is random, NaN at the start cell.
    """
    if not isinstance(family, envs.GoalTasks):
        return None
    maze, C, N, T, A = family.maze, family.maze.n_cells, cfg.macro, cfg.max_steps, family.n_actions
    rng = np.random.default_rng([cfg.seed, 7])

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
    choices, every = skills, N
    if cfg.master == "options":                                 # A more choices of one step each
        one = lambda obs, k: np.where(np.arange(A) == k[:, None], 0.0, -1e9)
        choices, every = skills + [first_meetings(one, A, 1, rollouts if family.slip else 1)], 1
    starts = np.arange(C) if family.start is None else np.array([maze.start])

    def per_goal(V):
        return np.array([np.mean([V[s, g] for s in starts if s != g]) if set(starts) - {g}
                         else np.nan for g in range(C)])

    if family.reward == "every_step":                          # the score: return / best return
        best = lambda options, every: recursion(options, None, np.max, every) / np.maximum(
            envs.best_returns(maze, T, family.slip), 1e-9)
    else:                                                      # the score: d(s, g) / steps
        best = lambda options, every: maze.dist * recursion(options, score, np.max, every)
    out = {"best_score": per_goal(best(choices, every)),
           "best_success": per_goal(recursion(choices, hit, np.max, every)),
           "master_visit": per_goal(recursion(choices, hit, np.mean, every)),
           "walk_visit": per_goal(recursion(walk, hit, np.mean, N))}
    if cfg.master == "options":
        out["skills_only"] = {"best_score": per_goal(best(skills, N)),
                              "best_success": per_goal(recursion(skills, hit, np.max, N))}
    return out


# ---- Benchmark: rollout throughput and seconds per PPO iteration ------------

def bench(cfg, log=print):
    """Env steps per second with the policy's forward pass, and seconds per PPO iteration."""
    rng = np.random.default_rng(cfg.seed)
    family = envs.GoalTasks()
    D, A, K = family.obs_dim, family.n_actions, cfg.subpolicies
    figures = {}
    for copies in (64, 256):
        subs = Net.new(rng, K, D, A, cfg, 1e-3)
        for name, agent in [("flat", new_agent(rng, 1, D, A, cfg, 1e-3)),
                            ("mlsh", new_agent(rng, 1, D, K, cfg, 1e-3, cfg.macro, subs=subs))]:
            runner = Runner(family.make(family.sample(rng, copies), seed=0), 1)
            runner.run(agent, 16, rng)                                  # warm up
            t0 = time.perf_counter()
            runner.run(agent, 256, rng)
            rate = copies * 256 / (time.perf_counter() - t0)
            figures[f"rollout_{name}_{copies}"] = rate
            log(f"rollout  {name:4s} {copies:3d} envs: {rate:9,.0f} env steps/s "
                f"(policy forward included)")
    M, E = cfg.tasks, cfg.envs
    subs = Net.new(rng, K, D, A, cfg, cfg.sub_lr, out_scale=0.01)
    runner = Runner(family.make(np.repeat(family.sample(rng, M), E), seed=0), M)
    for name, agent, joint in [
            ("flat", new_agent(rng, M, D, A, cfg, 3e-3), False),
            ("mlsh", new_agent(rng, M, D, K, cfg, cfg.master_lr, cfg.macro, subs, True), True)]:
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


# ---- Checkpoints: the sub-policies and the config they were trained with ----

SHAPE_FIELDS = ("env", "max_steps", "slip", "random_start", "subpolicies", "macro", "hidden",
                "layers")
FREE_ON_RESUME = ("rounds", "eval_iters", "eval_seeds", "flat_lrs", "out", "maze", "rooms", "preset",
                  "eval_split", "methods", "master", "interrupt")      # may differ when resuming


RENAMED = {"seeds": "eval_seeds"}   # fields of older runs' configs, and their names now


def run_settings(config):
    """A run's config (a dict, as results.json and checkpoints hold it) in today's form: tuples as
    lists, renamed fields under their names now, and a field an older run did not have yet at its
    default (as that version behaved). The output folder is left out: it is where, not what."""
    config = {RENAMED.get(k, k): v for k, v in config.items()}
    config = json.loads(json.dumps({**dataclasses.asdict(Config()), **config}))
    return {k: v for k, v in config.items() if k != "out"}


def differences(a, b):
    """'k is A there, B here; ...' for every setting in which config a (saved) and b (now) differ."""
    return "; ".join(f"{k} is {a.get(k)!r} there, {b.get(k)!r} here" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k))


def save_checkpoint(path, cfg, family, state):
    """Sub-policies, their Adam state, the config, the maze, the round records and both
    generators' states, as one .npz of plain arrays, written atomically."""
    subs = state["subs"]
    arrays = {f"subs.{k}": v for k, v in subs.p.items()}
    arrays.update({f"adam_m.{k}": v for k, v in subs.opt.m.items()})
    arrays.update({f"adam_v.{k}": v for k, v in subs.opt.v.items()})
    arrays["adam_t"] = np.array(subs.opt.t)
    meta = {"config": dataclasses.asdict(cfg), "maze": family.maze.rows,
            "history": state["history"], "rng": state["rng"].bit_generator.state,
            "env_rng": state["env_rng"].bit_generator.state}
    save_npz(path, arrays, meta)


def save_npz(path, arrays, meta):
    """Arrays and a JSON-able dict as one .npz, written atomically (the old file stays whole)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays, meta=np.array(json.dumps(meta)))     # text, so no pickle is needed
    os.replace(tmp, path)


def load_checkpoint(path, cfg, family, resume):
    """Read a checkpoint (never unpickling) and refuse it, saying what differs, if it does not fit.

    resume=True (carry on meta-training): every setting but those in
    FREE_ON_RESUME must match; otherwise (evaluate only) the env and the
    hierarchy's shape must. Returns what meta_train(resume=...) takes.
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
    opt = Adam(params, cfg.sub_lr)
    opt.m, opt.v, opt.t = m, v, int(t)
    return {"subs": params, "opt": opt, "history": meta["history"], "rng": meta["rng"],
            "env_rng": meta["env_rng"]}


# ---- Watching a trained master: one episode, as text or as a picture --------

def play_episode(family, agent, m, seed, split="test"):
    """One episode of learner m's master over the sub-policies, on its held-out task. active[t] is
    the choice acting at step t: a sub-policy k < K, or K + a for primitive action a."""
    tasks = family.held_out(split)
    env = family.make([tasks[m % len(tasks)]], split, seed=seed)
    env.autoreset = False
    rng = np.random.default_rng(seed)
    master = {k: v[m:m + 1] for k, v in agent.master.p.items()}
    K = agent.subs.G
    obs, _ = env.reset()
    cells, active, left, k = [int(env.pos[0])], [], 0, None   # left: steps of choice k still to run
    for t in range(env.max_steps):
        logits = mlp_forward(master, obs[None])[0][0]
        if left > 0 and k < K and log_softmax(logits)[0, k] < np.log(agent.interrupt or 1e-300):
            left = 0                                                  # interrupted (--interrupt)
        if left == 0:                                                 # the master decides
            k = int(sample(rng, logits)[0])
            left = agent.macro if k < K else 1
        if k < K:
            act = sample(rng, mlp_forward(agent.subs.p, obs[None])[0][k])   # sub-policy k acts
        else:
            act = np.array([k - K])                                   # a primitive action
        left -= 1
        obs, _, term, trunc, info = env.step(act)
        cells.append(int(env.pos[0]))
        active.append(k)
        if term[0] or trunc[0]:
            break
    return {"cells": cells, "active": active, "macro": agent.macro, "K": K,
            "success": bool(info["success"][0]), "best": int(env.best[0]),
            "landmarks": env.landmarks(0), "maze": env.maze}


def render_episode(ep):
    """The path as one text picture: each visited cell shows the sub-policy that acted there."""
    mark = lambda k: str(k) if k < ep["K"] else "+"
    marks = {cell: mark(k) for cell, k in zip(ep["cells"], ep["active"])}
    marks.update({ep["cells"][0]: "S", **ep["landmarks"]})
    steps = len(ep["active"])
    runs = "".join(mark(k) for k in ep["active"])
    outcome = (f"reached the goal in {steps} steps (shortest {ep['best']})" if ep["success"]
               else f"did not reach the goal in {steps} steps")
    return (ep["maze"].render(marks) + f"\nS start, digits: the sub-policy acting in that cell, "
            f"+ a primitive action; {outcome}\nchoice per step (a sub-policy lasts {ep['macro']} "
            f"steps, a primitive 1): {runs}")


# ---- Figures: PNG files, no window needed -----------------------------------

METHODS = [("mlsh", "MLSH"), ("flat", "flat PPO"), ("shared", "shared policy"),
           ("random_subs", "random sub-policies"), ("mlsh_paper", "MLSH, the paper's master")]


def save_png(plt, fig, path):
    """Write the figure to path whole or not at all (a .tmp file, then a rename), and close it."""
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def plot_episode(plt, path, maze, ep, colours):
    """One episode of a trained master (play_episode), coloured by the acting sub-policy."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(~maze.free, cmap="Greys", vmin=0, vmax=1.6)
    rc = maze.cells[ep["cells"]]
    for t, k in enumerate(ep["active"]):
        primitive = k >= ep["K"]
        ax.plot(rc[t:t + 2, 1], rc[t:t + 2, 0], color="black" if primitive else colours(k),
                lw=1.5 if primitive else 3, ls=":" if primitive else "-", solid_capstyle="round")
    switch = [t for t in range(1, len(ep["active"])) if ep["active"][t] != ep["active"][t - 1]]
    ax.scatter(rc[switch, 1], rc[switch, 0], s=60, facecolors="white", edgecolors="black", zorder=3,
               label="switch of sub-policy" if switch else None)
    ax.scatter(rc[0, 1], rc[0, 0], marker="s", s=120, color="green", zorder=3, label="start")
    names = {"G": "goal", "$": "the mark that pays", "0": "the other mark", "1": "the other mark"}
    for cell, ch in ep["landmarks"].items():
        r, c = maze.cells[cell]
        ax.scatter(c, r, marker="*", s=250, color="red" if ch in "G$" else "gray", zorder=3,
                   label=names.get(ch, ch))
    for k in sorted(k for k in set(ep["active"]) if k < ep["K"]):
        ax.plot([], [], color=colours(k), lw=3, label=f"sub-policy {k}")
    if any(k >= ep["K"] for k in ep["active"]):
        ax.plot([], [], color="black", lw=1.5, ls=":", label="primitive action (one step)")
    outcome = (f"goal in {len(ep['active'])} steps (shortest {ep['best']})" if ep["success"]
               else "goal not reached")
    ax.set(title=f"A trained master on a held-out task: {outcome}", xticks=[], yticks=[])
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    save_png(plt, fig, path)


def plot_reach(plt, path, maze, maps, held, start):
    """reach()'s maps over the maze: per goal cell, a random walk's and a random master's chance of
    meeting it, and the best master's score; the held-out goals framed."""
    panels = [("walk_visit", "a random walk meets the goal\n(flat PPO at its start)"),
              ("master_visit", "a random master over the skills\nmeets the goal (a fresh master)"),
              ("best_score", "the best master's score with\nthese skills (what MLSH can reach)")]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6))
    for ax, (key, title) in zip(axes, panels):
        grid = np.full(maze.free.shape, np.nan)
        grid[maze.cells[:, 0], maze.cells[:, 1]] = maps[key]
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
        ax.imshow(np.where(maze.free, np.nan, 1.0), cmap="Greys", vmin=0, vmax=1.6)
        for g in held:
            r, c = maze.cells[g]
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red",
                                       lw=1.5))
        if start is not None:
            r, c = maze.cells[start]
            ax.text(c, r, "S", ha="center", va="center", color="black", fontweight="bold")
        ax.set_title(f"{title}\nheld-out goals (red): mean {np.nanmean(maps[key][held]):.2f}",
                     fontsize=9)
        ax.set(xticks=[], yticks=[])
    fig.colorbar(im, ax=axes, shrink=0.8,
                 label="chance of meeting the goal (left, middle);\nnormalised return (right)")
    save_png(plt, fig, path)


def plot_all(out, family, results, history, subs, ep, maps=None, held=()):
    """Write curves.png, subpolicies.png, episode.png (when MLSH was evaluated), meta_training.png
    and, for goal tasks, reach.png into `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # 1. fine-tuning curves with 95% bands
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for i, (name, label) in enumerate(METHODS):
        if name not in results:
            continue
        r = results[name]
        x = np.arange(1, len(r["curve"]) + 1)
        ax.plot(x, r["curve"], color=f"C{i}",
                label=f"{label}: AUC {r['auc']:.2f} [{r['auc_ci'][0]:.2f}, {r['auc_ci'][1]:.2f}]")
        ax.fill_between(x, *r["curve_band"], color=f"C{i}", alpha=0.2)
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    ax.text(1, 1.01, "optimum", color="gray", va="bottom")
    ax.set(xlabel="iteration of fine-tuning on a held-out task", ylabel="normalised return",
           ylim=(0, 1.1), title="Learning held-out tasks (mean and 95% band over seeds and tasks)")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.14), fontsize=8, frameon=False)   # below
    save_png(plt, fig, os.path.join(out, "curves.png"))

    # 2. sub-policy maps: the most likely action in every free cell, its probability as length
    maze = family.maze
    env = family.make([family.test_tasks[0]], "test", seed=0)   # any task: the maps ignore the goal
    env.reset()
    probs = np.exp(log_softmax(subs(env.obs_at(np.arange(maze.n_cells))[None])))   # (K, cells, A)
    K = len(probs)
    fig, axes = plt.subplots(1, K, figsize=(3.2 * K, 3.4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        best, p = probs[k].argmax(-1), probs[k].max(-1)
        d = envs.MOVES[best] * (0.85 * p)[:, None]
        ax.imshow(~maze.free, cmap="Greys", vmin=0, vmax=1.6)
        ax.quiver(maze.cells[:, 1] - d[:, 1] / 2, maze.cells[:, 0] - d[:, 0] / 2, d[:, 1], d[:, 0],
                  p, cmap="viridis", clim=(0.25, 1), angles="xy", scale_units="xy", scale=1,
                  width=0.012)
        for cell, ch in (env.landmarks(0).items() if isinstance(family, envs.BanditTasks) else ()):
            ax.text(maze.cells[cell, 1], maze.cells[cell, 0], ch, ha="center", va="center",
                    color="red", fontweight="bold")
        ax.set(title=f"sub-policy {k}", xticks=[], yticks=[])
    seen = ("the two marks of one episode, which they see: $ the one that pays, the other by its "
            "number" if isinstance(family, envs.BanditTasks) else "they know no goal")
    fig.suptitle(f"Most likely action per cell (arrow length and colour: its probability)\n{seen}",
                 fontsize=10, y=1.06)
    save_png(plt, fig, os.path.join(out, "subpolicies.png"))

    # 3. one episode of a trained master: the path coloured by the active sub-policy
    colours = plt.get_cmap("tab10")
    if ep is not None:
        plot_episode(plt, os.path.join(out, "episode.png"), maze, ep, colours)

    # 4. meta-training: success at the end of warmup and of joint, and sub-policy usage per round
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    rounds = [h["round"] for h in history]
    a1.plot(rounds, [h["warmup_success"] for h in history], "o-", label="end of warmup (θ only)")
    a1.plot(rounds, [h["joint_success"] for h in history], "s-", label="end of joint (θ and φ)")
    for a in (a1, a2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.set(xlabel="round", ylabel="success rate", ylim=(0, 1.05),
           title="A fresh master on training tasks")
    a1.legend(fontsize=8)
    usage = np.array([h["usage"] for h in history])
    bottom = np.zeros(len(rounds))
    for k in range(usage.shape[1]):
        a2.bar(rounds, usage[:, k], bottom=bottom, color=colours(k), label=f"sub-policy {k}")
        bottom += usage[:, k]
    a2.set(xlabel="round", ylabel="share of steps", ylim=(0, 1),
           title="How often each sub-policy acts")
    a2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_png(plt, fig, os.path.join(out, "meta_training.png"))

    # 5. what the skills allow: a random walk, a random master, the best master
    if maps is not None:
        plot_reach(plt, os.path.join(out, "reach.png"), maze, maps, held,
                   maze.start if family.start is not None else None)


# ---- Command line: options, progress, the results file, the table -----------

QUICK = dict(rounds=2, tasks=2, warmup=2, joint=2, envs=4, eval_iters=3, eval_seeds=1, flat_lrs=(3e-3,))
QUICK_NOTE = ("--quick: a budget of seconds that checks that everything runs; its numbers say nothing "
              "about MLSH (python mlsh.py is the real run)")
RUN_OPTIONS = [  # flags that change what is shown or kept, not what is learned
    ("--quick", "a tiny budget that finishes in seconds (a smoke test)"),
    ("--bench", "print rollout and update speed, then exit"),
    ("--quiet", "no progress lines (the final table is still printed)"),
    ("--no-plots", "do not write the PNG figures"),
    ("--render", "print an episode of a trained master on a held-out task, as text"),
    ("--eval-only", "evaluate the sub-policies of --load FILE without meta-training"),
    ("--replace", "write over a run of other settings in the output folder"),
]


def field_help():
    """The one-line comment beside each Config field, for --help."""
    helps = {}
    for line in inspect.getsource(Config).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.*)$", line)
        if m:
            helps[m.group(1)] = m.group(2)
    return helps


def help_default(field):
    """A setting's default for --help: its value in each preset where they differ (rooms' T and S
    follow --rooms: rooms_budget), else the one value."""
    if field.name == "out":
        return "runs/<preset> beside mlsh.py; runs/maze-<file name> with --maze; -quick added for --quick"
    show = lambda v: " ".join(map(str, v)) if isinstance(v, tuple) else str(v) if v != "" else "none"
    values = {}
    for name, preset in PRESETS.items():
        preset = {**preset, **(rooms_budget(preset["rooms"]) if preset["env"] == "rooms" else {})}
        values[name] = preset.get(field.name, field.default)
    if field.name in ("env", "preset") or len(set(map(show, values.values()))) == 1:
        return show(field.default if field.name in ("env", "preset") else values["fourrooms"])
    follows = " (follows --rooms)" * (field.name in rooms_budget(3))
    return ", ".join(f"{name} {show(v)}{follows if name == 'rooms' else ''}"
                     for name, v in values.items()) + "*"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit code 2), without the long usage block."""

    def error(self, message):
        self.exit(2, f"mlsh: {message} (python mlsh.py --help lists every option)\n")


def parse_args(argv=None):
    """Config from the command line (the env's preset, then --quick, then the flags given), and the
    run options."""
    p = Parser(
        description="Meta Learning Shared Hierarchies on grid mazes: meta-train sub-policies, "
                    "then compare how fast a fresh master learns held-out tasks against flat PPO "
                    "from scratch (and, with --methods, two more baselines). "
                    "Defaults marked * come from the preset (--env E uses preset E).")
    helps = field_help()
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        h = f"{helps.get(f.name, '')} (default: {help_default(f)})"
        if f.type in (bool, "bool"):
            p.add_argument(flag, action="store_true", default=None, help=h)
        elif isinstance(f.default, tuple):
            p.add_argument(flag, type=type(f.default[0]), nargs="+", default=None, help=h)
        else:
            p.add_argument(flag, type=type(f.default), default=None, help=h)
    for flag, h in RUN_OPTIONS:
        p.add_argument(flag, action="store_true", help=h)
    p.add_argument("--load", metavar="FILE", help="a checkpoint.npz: resume meta-training from it "
                                                  "(or, with --eval-only, only evaluate it)")
    args = vars(p.parse_args(argv))
    opts = argparse.Namespace(**{k: args.pop(k) for k in ["quick", "bench", "quiet", "no_plots",
                                                          "render", "eval_only", "replace", "load"]})
    if args["env"] is not None and args["env"] not in FAMILIES:
        p.error(f"--env {args['env']!r} is not a task family here; "
                f"choose one of {', '.join(FAMILIES)}")
    preset = args["preset"] or args["env"] or Config.preset
    if preset not in PRESETS:
        p.error(f"--preset {preset!r} is not a preset here; choose one of {', '.join(PRESETS)}")
    if args["env"] is not None and args["env"] != PRESETS[preset]["env"]:
        p.error(f"--preset {preset} is for --env {PRESETS[preset]['env']}: leave out --env, "
                f"or choose another preset")
    if opts.eval_only and not opts.load:
        p.error("--eval-only evaluates a trained checkpoint: give it with --load FILE")
    settings = dict(PRESETS[preset])
    if settings["env"] == "rooms":                       # T and S follow the maze's size
        settings.update(rooms_budget(args["rooms"] if args["rooms"] is not None
                                     else settings["rooms"]))
    values = {**settings, "preset": preset, **(QUICK if opts.quick else {}),
              **{k: v for k, v in args.items() if v is not None}}
    for f in dataclasses.fields(Config):
        if isinstance(f.default, tuple) and f.name in values:
            values[f.name] = tuple(values[f.name])
    cfg = Config(**values)
    problems = check_config(cfg)
    if problems:
        p.error("; ".join(problems))                     # exit code 2, before anything is trained
    return cfg, opts


def default_out(cfg, quick):
    """Each kind of run has a folder of its own beside mlsh.py: runs/<preset>, runs/maze-<file
    name> for --maze, each with -quick added for --quick."""
    name = f"maze-{os.path.splitext(os.path.basename(cfg.maze))[0]}" if cfg.maze else cfg.preset
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs", name + "-quick" * quick)


def other_run(out, cfg, opts):
    """Why this run must not write into the folder `out`, or None. It must not when the folder
    holds a run of other settings (its results.json, or the checkpoint.npz or evaluations kept
    of a run that stopped), which this one would replace. The same settings again may replace it,
    and meta-training may resume from the folder's own checkpoint (load_checkpoint checks that it
    fits)."""
    res, ckpt, kept = (os.path.join(out, f) for f in ("results.json", "checkpoint.npz", KEPT))
    if opts.load and not opts.eval_only and os.path.abspath(opts.load) == ckpt:
        return None
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
            return None
    except Exception as e:   # unreadable: still someone's run
        return (f"{out} holds a run that cannot be read ({type(e).__name__}) and this one would "
                f"replace it: choose another --out, or give --replace to write over it")
    diffs = differences(run_settings(saved), run_settings(dataclasses.asdict(cfg)))
    return (f"{out} holds a run of other settings ({diffs}): choose another --out, or give "
            f"--replace to write over it") if diffs else None


def check_writable(folder):
    """Make the output folder, and make sure a file can be written there, before any training."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".mlsh-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"cannot write into the output folder {folder} ({e.strerror}): "
                         f"choose another with --out")


def write_json(path, data):
    """Write atomically: a temporary file in the same folder, then a rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def finite(what, params):
    """Stop with a message naming `what` when a network's weights hold NaN or inf. A NaN anywhere in
    training (a reward, a value, an advantage) reaches the weights: ppo_loss passes it on."""
    if not all(np.isfinite(v).all() for v in params.values()):
        raise FloatingPointError(f"{what} became NaN or infinite")


def each_round(cfg, family, ckpt, log):
    """meta_train's after_round: refuse weights that are no longer finite, save the checkpoint, and
    print the progress line

        round r/R  tasks M  warmup-success w  joint-success j  usage u_1..u_K  steps/s  elapsed  eta

    w and j are the success rates of the last warmup and the last joint iteration, u_k the share
    of steps sub-policy k acted in the round (u_k near 0: the masters ignore sub-policy k). Two
    sub-policies that learned the same skill do not show here; skills_alone shows them."""
    t0, first = time.time(), None
    steps_per_round = (cfg.warmup + cfg.joint) * cfg.tasks * cfg.envs * cfg.steps

    def after_round(subs, history, rng, env_rng):
        nonlocal first
        rec = history[-1]
        first = rec["round"] - 1 if first is None else first
        finite(f"the sub-policies' weights in round {rec['round']}", subs.p)
        save_checkpoint(ckpt, cfg, family, {"subs": subs, "history": history, "rng": rng,
                                            "env_rng": env_rng})
        elapsed, done = time.time() - t0, rec["round"] - first
        warm = rec["warmup_success"]
        log(f"round {rec['round']:3d}/{cfg.rounds}  tasks {rec['tasks']}  "
            f"warmup-success {warm if warm is not None else float('nan'):.2f}  "
            f"joint-success {rec['joint_success']:.2f}  "
            f"usage {' '.join(f'{u:.2f}' for u in rec['usage'])}  "
            f"{done * steps_per_round / elapsed:,.0f} steps/s  elapsed {elapsed:.0f}s  "
            f"eta {elapsed / done * (cfg.rounds - rec['round']):.0f}s")

    return after_round


KEPT = "evaluation-so-far.npz"     # in a run's folder while it evaluates: the methods finished


def kept_tuning(path, cfg, subs):
    """fine_tune, keeping what each call returns in the file `path` as it finishes, so that a
    stopped evaluation carries on where it stopped. A call the file holds is not run again: it
    returns the kept curves and a stand-in for the learners, learner 0's master alone (all that
    play_episode needs). Calls are matched by their order, which the settings fix; the file is
    used only if it was kept for these settings and these very sub-policies. Each call's
    generator starts from the seed (fine_tune), so kept and new results are the same numbers."""
    key = {"config": run_settings(dataclasses.asdict(cfg)),
           "subs": zlib.crc32(b"".join(subs.p[k].tobytes() for k in sorted(subs.p)))}
    try:
        saved, kept = read_kept(path) or (None, [])
    except Exception:            # unreadable: other_run let it be replaced (--replace)
        saved, kept = None, []
    kept = kept if saved == key else []
    calls = 0

    def tune(cfg, family, make_agent, seeds):
        nonlocal calls
        i, calls = calls, calls + 1
        if i < len(kept):
            score, success, master = kept[i]
            agent = make_agent(np.random.default_rng(0), 1)
            agent.master.p.update(master)
            return score, success, agent
        score, success, agent = fine_tune(cfg, family, make_agent, seeds)
        kept.append((score, success, {k: v[:1] for k, v in agent.master.p.items()}))
        arrays = {}
        for j, (score_j, success_j, master) in enumerate(kept):
            arrays.update({f"{j}.score": score_j, f"{j}.success": success_j})
            arrays.update({f"{j}.master.{k}": w for k, w in master.items()})
        save_npz(path, arrays, key)
        return score, success, agent

    tune.kept = len(kept)
    return tune


def read_kept(path):
    """(the settings it was kept for, [(score, success, learner 0's master) per call]) from a
    kept_tuning file, or None when there is none. Raises if it cannot be read."""
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        part = lambda prefix: {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}
        calls = sum(k.endswith(".score") for k in z.files)
        return (json.loads(str(z["meta"])),
                [(z[f"{i}.score"], z[f"{i}.success"], part(f"{i}.master.")) for i in range(calls)])


def evaluate_all(cfg, family, subs, log, tune=fine_tune):
    """Run evaluate; summarise each method as it finishes (flat PPO: its best rate), print a line.
    Returns the results per method and MLSH's trained masters (None without MLSH)."""
    results, flat, masters, t0 = {}, {}, None, time.time()
    for name, lr, score, success, learners in evaluate(cfg, family, subs, tune):
        label = {"flat": f"flat lr={lr:g}", "random_subs": "random subs",
                 "mlsh_paper": "mlsh (paper's)"}.get(name, name)
        finite(f"the masters' weights of {label}", learners.master.p)
        rng = np.random.default_rng([cfg.seed, 3, zlib.crc32(label.encode())])   # order-free
        res = summarise(score, success, rng)
        log(f"  {label:<14s} AUC {res['auc']:.3f} [{res['auc_ci'][0]:.3f}, {res['auc_ci'][1]:.3f}]"
            f"  80% success at {at_80(res['iters_to_80'])}  ({time.time() - t0:.0f}s)")
        if name == "flat":
            flat[lr] = res
        else:
            results[name] = res
        if name == "mlsh":
            masters = learners
    if flat:
        best = max(flat, key=lambda lr: flat[lr]["auc"])
        sweep = {str(lr): r["auc"] for lr, r in flat.items()}
        results["flat"] = dict(flat[best], lr=best, sweep=sweep)
    return results, masters


def at_80(iteration):
    return "never" if iteration is None else f"iteration {iteration}"


def table(results):
    lines = [f"{'method':<14s} {'AUC':>6s}  {'95% CI':<16s} {'80% success at':>14s}"]
    for name in [m for m in ("mlsh", "mlsh_paper", "flat", "shared", "random_subs") if m in results]:
        r = results[name]
        it = at_80(r["iters_to_80"])
        label = name + (f" lr={r['lr']:g}" if name == "flat" else "")
        lines.append(f"{label:<14s} {r['auc']:6.3f}  [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]"
                     f"  {it:>14s}")
    return "\n".join(lines)


def skills_table(skills):
    """How each sub-policy does alone on the held-out tasks (a row per sub-policy when there are
    few tasks)."""
    lines = [f"\neach sub-policy alone, no master (success on the held-out tasks): the best one "
             f"per task averages {skills['best_per_task']:.2f}"]
    if len(skills["tasks"]) <= 4:
        lines += [f"  sub-policy {k}: " + "  ".join(f"task {t}: {s:.2f}"
                                                     for t, s in zip(skills["tasks"], row))
                  for k, row in enumerate(skills["success"])]
    return "\n".join(lines)


def stopped(argv, ckpt, kept):
    """After Ctrl-C: say what is kept and the command that carries on (this one, loading the run's
    own checkpoint when it meta-trains), and exit with 130."""
    args = list(argv if argv is not None else sys.argv[1:])
    if ckpt:
        if "--load" in args:                                       # drop an earlier --load FILE
            del args[args.index("--load"):args.index("--load") + 2]
        args += ["--load", ckpt]
    print(f"\ninterrupted: {kept}\nresume with: python mlsh.py {' '.join(args)}")
    raise SystemExit(130)


def main(argv=None):
    cfg, opts = parse_args(argv)
    log = (lambda s: None) if opts.quiet else print
    if opts.bench:
        bench(cfg)
        return
    try:
        family = make_family(cfg)
        out = os.path.abspath(cfg.out or default_out(cfg, opts.quick))
        clash = None if opts.replace else other_run(out, cfg, opts)
        if clash:
            raise ValueError(clash)
        check_writable(out)
        resume = (load_checkpoint(opts.load, cfg, family, resume=not opts.eval_only)
                  if opts.load else None)
    except ValueError as e:
        print(f"mlsh: {e}", file=sys.stderr)
        raise SystemExit(2)
    ckpt = os.path.join(out, "checkpoint.npz")
    t0 = time.time()
    where = (f" ({cfg.maze})" if cfg.maze else f" ({cfg.rooms} x {cfg.rooms})" if cfg.env == "rooms"
             else "")
    log(f"MLSH on {cfg.env}{where}: K={cfg.subpolicies} sub-policies, N={cfg.macro}, "
        f"T={cfg.max_steps}, S={cfg.steps}, W={cfg.warmup}, U={cfg.joint}, {cfg.rounds} rounds of "
        f"{cfg.tasks} tasks side by side; held-out tasks: "
        f"{len(family.held_out(cfg.eval_split))} ({cfg.eval_split})")
    if opts.quick:
        log(QUICK_NOTE)
    if opts.eval_only:
        subs, history = Net(resume["subs"], cfg.sub_lr, cfg.env in ONE_HOT), resume["history"]
        log(f"evaluating the sub-policies of {opts.load} ({len(history)} rounds of meta-training)")
    else:
        try:
            subs, history = meta_train(cfg, family, np.random.default_rng([cfg.seed, 1]), resume,
                                       after_round=each_round(cfg, family, ckpt, log))
        except KeyboardInterrupt:
            stopped(argv, ckpt, f"the last complete round is saved in {ckpt}")
        except FloatingPointError as e:
            kept = (f"the last good checkpoint is intact in {ckpt}" if os.path.exists(ckpt)
                    else "no round completed")
            print(f"mlsh: meta-training stopped: {e}; {kept}. Try a smaller learning rate",
                  file=sys.stderr)
            raise SystemExit(2)
    t_meta = time.time() - t0
    log(("" if opts.eval_only else f"meta-training took {t_meta:.0f}s; ") +
        f"fine-tuning a fresh learner on each held-out task, {cfg.eval_seeds} seed(s) each, "
        f"{cfg.eval_iters} iterations:")
    kept = os.path.join(out, KEPT)
    tune = kept_tuning(kept, cfg, subs)
    if tune.kept:
        log(f"  (carrying on: {tune.kept} evaluation(s) kept in {kept} are not run again)")
    try:
        results, masters = evaluate_all(cfg, family, subs, log, tune)
    except KeyboardInterrupt:
        stopped(argv, None if opts.eval_only else ckpt,
                f"the evaluations that finished are kept in {kept}")
    except FloatingPointError as e:
        print(f"mlsh: evaluation stopped: {e}; the sub-policies are intact in {opts.load or ckpt}. "
              f"Try a smaller learning rate", file=sys.stderr)
        raise SystemExit(2)
    t_eval = time.time() - t0 - t_meta
    alone = skills_alone(cfg, family, subs)
    held = family.held_out(cfg.eval_split)
    skills = {"tasks": held.tolist(), "success": alone.round(3).tolist(),
              "best_per_task": float(alone.max(axis=0).mean())}
    maps = reach(cfg, family, subs)
    on_held = lambda maps: {k: on_held(v) if isinstance(v, dict) else
                            {"mean": float(np.nanmean(v[held])), "per_task": v[held].round(3).tolist()}
                            for k, v in maps.items()}
    reached = None if maps is None else on_held(maps)
    write_json(os.path.join(out, "results.json"),
               {"config": dataclasses.asdict(cfg), "methods": results, "skills_alone": skills,
                "reach": reached, "meta_training": history,
                "seconds": {"meta_training": t_meta, "evaluation": t_eval}})
    if os.path.exists(kept):
        os.remove(kept)                                      # results.json holds them now
    ep = (play_episode(family, masters, 0, seed=cfg.seed, split=cfg.eval_split)
          if masters is not None else None)
    if not opts.no_plots:
        plot_all(out, family, results, history, subs, ep, maps, held)
    if opts.render and ep is not None:
        print("\n" + render_episode(ep))
    print("\n" + table(results))
    print(skills_table(skills))
    if reached is not None:
        print(f"what the skills allow on the held-out goals (reach): the best possible master "
              f"scores {reached['best_score']['mean']:.2f} (success "
              f"{reached['best_success']['mean']:.2f}); a random master meets a goal in "
              f"{reached['master_visit']['mean']:.2f} of its episodes, a random walk in "
              f"{reached['walk_visit']['mean']:.2f}")
        if "skills_only" in reached:
            print(f"  with the sub-policies alone, no primitive actions: the best master scores "
                  f"{reached['skills_only']['best_score']['mean']:.2f} (success "
                  f"{reached['skills_only']['best_success']['mean']:.2f})")
    optimum = ("the best return any policy could get" if cfg.reward == "every_step"
               else "always the shortest path")
    written = ["results"] + ["checkpoint"] * (not opts.eval_only) + ["figures"] * (not opts.no_plots)
    print(f"\nAUC = mean normalised return over {cfg.eval_iters} fine-tuning iterations "
          f"(1 = {optimum}).\n" + ("" if opts.eval_only else f"meta-training {t_meta:.0f}s, ") +
          f"evaluation {t_eval:.0f}s; {', '.join(written[:-1])}{' and ' * (len(written) > 1)}"
          f"{written[-1]} in {out}")
    if opts.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
