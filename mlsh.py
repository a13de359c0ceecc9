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
measure is how fast its return rises. `python mlsh.py` does both on Four Rooms
(`--env bandits | rooms | MAZE.txt`; `--quick`: seconds; `--help`).

This file is the algorithm, top to bottom: settings -> tiny MLPs and their
backprop -> GAE -> PPO -> the agent and its rollout -> the updates ->
meta-training -> the test on held-out tasks -> the command line; the tasks are
envs.py. Lines marked [options] are the options master's, an extension tested
beside the paper's (it may also take single moves, and stop a skill early).

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
import os
import re
import time
from dataclasses import dataclass

# Small matrices: BLAS threads cost more than they give, and runs side by side fight over cores.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 (after the thread settings, which must come first)
from scipy.sparse import csr_matrix  # noqa: E402
from scipy.stats import t as student_t  # noqa: E402

import envs  # noqa: E402


# ---- Settings: what is learned, and how (each task family's own: envs.FAMILIES) ----

@dataclass
class Config:
    # hierarchy
    subpolicies: int = 4            # K: number of sub-policies
    macro: int = 5                  # N: steps each master decision lasts
    hidden: int = 64                # units per hidden layer (tanh)
    layers: int = 1                 # hidden layers per network
    # meta-training schedule
    rounds: int = 20                # how many times tasks are drawn and masters reset
    tasks: int = 8                  # tasks side by side per round, each with its own master
    warmup: int = 10                # W: iterations updating only the masters
    joint: int = 20                 # U: iterations updating masters and sub-policies
    copies: int = 16                # env copies per task (E)
    steps: int = 64                 # S: rollout steps per copy per iteration
    # PPO (both levels)
    gamma: float = 0.99             # discount per env step (the paper's master: per decision)
    lam: float = 0.95               # GAE lambda
    clip: float = 0.2               # PPO ratio clip
    epochs: int = 4                 # passes over each batch
    minibatches: int = 4            # minibatches per pass
    master_lr: float = 0.01         # Adam step for θ (the paper's value)
    sub_lr: float = 1e-3            # Adam step for φ (the paper's 3e-4 was too slow: lab/RESULTS.md)
    value_lr: float = 3e-3          # Adam step for every value function
    master_ent: float = 0.01        # entropy bonus of the master
    sub_ent: float = 0.01           # entropy bonus of the sub-policies (keeps a skill changeable)
    # the test on held-out tasks
    eval_split: str = "test"        # held-out tasks: test (reported) or validation (for choosing settings)
    eval_iters: int = 30            # iterations a fresh learner gets on each held-out task
    eval_seeds: int = 5             # evaluation seeds (each runs every held-out task)
    flat_lr: float = 0.01           # Adam step of flat PPO (chosen per family on validation tasks)
    interrupt: float = 0.1          # [options] a skill stops where the master's probability of it < this
    # randomness
    seed: int = 0                   # the one seed all randomness comes from


STREAMS = {"meta_train": 1, "fine_tune": 2}   # the random streams (the lab numbers its own after these)


def stream(seed, name, *more):
    """The generator of stream `name` (STREAMS) for this seed; `more` numbers sub-streams of it."""
    return np.random.default_rng([seed, STREAMS[name], *more])


def child_seed(rng):
    """A seed for a child generator (an env's), drawn from the parent so one seed fixes all."""
    return int(rng.integers(2**63))


# ---- Tiny MLPs with hand-written backprop, stacked: G networks at once ------

def mlp_init(rng, G, sizes, out_scale=1.0, dtype=np.float32):
    """G independent tanh MLPs with layer sizes `sizes`, e.g. [D, 64, A].

    W_i: (G, in, out) orthogonal, times sqrt 2 in the hidden layers and `out_scale` in the last
    (0.01 for a policy, so that it starts near uniform; 1 for a value), as PPO is usually run: it
    learned faster than N(0, 1/in) (RESULTS.md, "PPO's details"); b_i: (G, 1, out) zeros.
    float32 by default: NumPy's float64 tanh is about 4x slower, and most of the cost. The
    gradient checks use float64.
    """
    p = {}
    n_layers = len(sizes) - 1
    for i in range(n_layers):
        gain = out_scale if i == n_layers - 1 else np.sqrt(2)
        W = orthogonal(rng.standard_normal((G, sizes[i], sizes[i + 1]))) * gain
        p[f"W{i}"] = W.astype(dtype)
        p[f"b{i}"] = np.zeros((G, 1, sizes[i + 1]), dtype=dtype)
    return p


def orthogonal(a):
    """Each Gaussian (in, out) matrix of a (G, in, out) made orthogonal (orthonormal columns, or rows
    if there are fewer): Q of its QR decomposition, the signs fixed so that Q is uniformly random."""
    wide = a.shape[1] < a.shape[2]                   # then orthonormal rows: QR of the transpose
    q, r = np.linalg.qr(a.swapaxes(1, 2) if wide else a)
    q *= np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    return q.swapaxes(1, 2) if wide else q


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

    def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-5):
        # eps 1e-5, not 1e-8: as PPO is usually run, and it learned faster (RESULTS.md, "PPO's details")
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
    def new(cls, rng, G, family, n_out, cfg, lr, out_scale=1.0):
        """G fresh networks for the family's observations: D -> cfg.layers tanh layers of cfg.hidden
        units -> n_out (one-hot inputs when the family observes cells: family.one_hot)."""
        sizes = [family.obs_dim] + [cfg.hidden] * cfg.layers + [n_out]
        return cls(mlp_init(rng, G, sizes, out_scale), lr, one_hot=family.one_hot)

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

    master:  θ, M policies over the K sub-policies ([options] then the A primitive actions, one
             step each); a flat agent has no sub-policies: its choices are the A actions
    value:   M master value functions, on the master's own timescale
    subs:    φ, K sub-policies over the A primitive actions, shared by all M (None: flat agent)
    critic:  M per-step value functions used only to train φ (None when φ is frozen)
    macro:   N, steps a sub-policy acts once chosen (a primitive action lasts one)
    interrupt: [options] a sub-policy stops where the master's probability of it is below this (0: never)
    smdp:    [options] the master discounts once per env step, not once per decision
    """
    master: Net
    value: Net
    subs: Net = None
    critic: Net = None
    macro: int = 1
    interrupt: float = 0.0
    smdp: bool = False

    @property
    def M(self):
        return self.master.G

    @property
    def K(self):
        return 0 if self.subs is None else self.subs.G

    def primitive(self, choice):
        """Which choices are primitive actions: the master's choices 0..K-1 are the sub-policies, choice
        K + a is primitive action a for one step ([options]; every choice of a flat agent)."""
        return choice >= self.K


def new_agent(rng, M, family, n_choices, cfg, lr, macro=1, subs=None, critic=False, interrupt=0.0,
              smdp=False):
    """M fresh masters (new weights, new Adam state: θ is reset whole) and their value functions.

    n_choices is K for the paper's hierarchy, [options] K + A for a master that may also take each
    primitive action, A for a flat policy; critic=True adds the per-task step critics needed while
    φ is being trained.
    """
    master = Net.new(rng, M, family, n_choices, cfg, lr, out_scale=0.01)
    value = Net.new(rng, M, family, 1, cfg, cfg.value_lr)
    return Agent(master, value, subs, Net.new(rng, M, family, 1, cfg, cfg.value_lr) if critic else None,
                 macro, interrupt, smdp)


@dataclass
class Rollout:
    """What one iteration of S steps on n = M * E env copies recorded, in the (S, n, ...) layout."""
    obs: np.ndarray          # (S, n, D) observation each step acted on
    next_obs: np.ndarray     # (S, n, D) observation after the step (the final one where it ended)
    decide: np.ndarray       # (S, n) the master chose at this step
    choice: np.ndarray       # (S, n) the master's current choice (sub-policy, or primitive K + a)
    choice_logp: np.ndarray  # (S, n) log prob of the choice under the master (where decide)
    act: np.ndarray          # (S, n) primitive action taken
    act_logp: np.ndarray     # (S, n) its log prob under the active sub-policy (0: a primitive choice)
    rew: np.ndarray          # (S, n)
    term: np.ndarray         # (S, n) episode terminated at this step
    trunc: np.ndarray        # (S, n) episode hit the step limit at this step
    score: np.ndarray        # (M,) mean normalised return of the episodes that ended, per learner
    success: np.ndarray      # (M,) their success rate
    usage: np.ndarray        # (K,) fraction of steps each sub-policy acted


class Runner:
    """Steps a batched env with an agent, carrying episodes over between iterations.

    Copy i belongs to learner i // E. A copy's master decides at the first
    step of every episode and whenever its last choice has run out (N steps
    for a sub-policy, one for a primitive action) or is interrupted; between
    decisions the chosen sub-policy acts.
    """

    def __init__(self, env, M):
        self.env, self.M, self.E = env, M, env.n // M
        self.obs, _ = env.reset()
        self.countdown = np.zeros(env.n, dtype=int)   # steps left in each copy's current choice
        self.active = np.zeros(env.n, dtype=int)      # each copy's current choice

    def set_tasks(self, tasks):
        """New tasks (one per copy): every copy starts a new episode with a fresh decision."""
        self.obs, _ = self.env.reset(options={"tasks": tasks})
        self.countdown[:] = 0

    def act(self, agent, obs, rng):
        """The decision rule, for one step of every copy: the master chooses where a choice is due,
        the active choice picks the primitive action. Returns decide, choice, choice_logp, act,
        act_logp, each (n,)."""
        n, K = len(obs), agent.K
        # master θ: a new choice where one is due, else keep the current one
        decide = self.countdown == 0
        logits = agent.master(obs.reshape(self.M, -1, obs.shape[-1])).reshape(n, -1)   # (n, choices)
        logp_all = log_softmax(logits)
        if agent.interrupt > 0:   # [options] stop a sub-policy the master no longer wants here
            decide |= np.take_along_axis(logp_all, self.active[:, None], 1)[:, 0] < np.log(agent.interrupt)
        choice = np.where(decide, sample(rng, logits), self.active)
        choice_logp = np.take_along_axis(logp_all, choice[:, None], 1)[:, 0]
        primitive = agent.primitive(choice)               # [options] choice K + a: action a, one step
        self.active = choice
        self.countdown = np.where(decide, np.where(primitive, 1, agent.macro), self.countdown) - 1
        # sub-policies φ: each copy acts with its active one (every copy draws, so that the
        # random numbers do not depend on how many chose a primitive action)
        act, act_logp = choice - K, np.zeros(n)
        if agent.subs is not None:
            sub_logits = agent.subs(obs[None])[np.minimum(choice, K - 1), np.arange(n)]
            sub_act = sample(rng, sub_logits)
            sub_logp = np.take_along_axis(log_softmax(sub_logits), sub_act[:, None], 1)[:, 0]
            act = np.where(primitive, act, sub_act)
            act_logp = np.where(primitive, 0.0, sub_logp)
        return decide, choice, choice_logp, act, act_logp

    def run(self, agent, S, rng):
        """S steps in every copy with the agent acting; returns the Rollout."""
        env, M = self.env, self.M
        learner = np.arange(env.n) // self.E
        rec = None
        score, success, ended = np.zeros(M), np.zeros(M), np.zeros(M)
        for t in range(S):
            obs = self.obs
            decide, choice, choice_logp, act, act_logp = self.act(agent, obs, rng)
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
        acted = rec["choice"][~agent.primitive(rec["choice"])]        # the choices that were sub-policies
        usage = np.bincount(acted, minlength=agent.K) / rec["choice"].size
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
    network (i // E); gamma discounts once per decision, or ([options]) with smdp
    once per env step (rewards inside a decision too, and gamma^its length after).
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
    if smdp:   # [options] discount per env step: the rewards within a decision, and gamma^duration after it
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
    t, i, adv, ret = master_transitions(ro, agent.value, E, cfg.gamma, cfg.lam, agent.smdp)
    ppo_update(agent.master, agent.value, ro.obs[t, i], ro.choice[t, i], ro.choice_logp[t, i],
               adv, ret, i // E, cfg.master_ent, cfg, rng)
    if agent.critic is None:
        return
    adv, ret = step_advantages(ro, agent.critic, cfg.gamma, cfg.lam)
    if train_subs:
        # each sub-policy k learns only from the steps it executed, pooled over the tasks
        mine = ~agent.primitive(ro.choice)                   # [options] primitive steps are no φ_k's
        ppo_update(agent.subs, None, ro.obs[mine], ro.act[mine], ro.act_logp[mine], adv[mine], None,
                   ro.choice[mine], cfg.sub_ent, cfg, rng)
    # the per-task critic learns the hierarchy's per-step value
    x, target = by_learner(ro.obs, M), by_learner(ret, M)
    train_net(agent.critic, x, np.ones(target.shape, bool),
              lambda out, idx, w: value_loss(out, target[:, idx], w), cfg, rng)


# ---- Meta-training (the paper's Algorithm 1) --------------------------------

def meta_round(cfg, family, runner, subs, rng):
    """One round of Algorithm 1: sample tasks; reset θ; W iterations on θ alone; U on θ and φ.

    cfg.tasks tasks are drawn from family, each run on cfg.copies copies side by
    side (runner steps cfg.tasks * cfg.copies copies), each with its own fresh
    master over the shared sub-policies subs (φ, trained in place). All
    randomness comes from rng and the runner's env.
    Returns the round's record: the success rate of the last warmup iteration
    (None when W = 0) and of the last joint one, and how often each
    sub-policy acted over the round.
    """
    M, E, K = cfg.tasks, cfg.copies, cfg.subpolicies
    runner.set_tasks(np.repeat(family.sample(rng, M), E))               # M tasks, E copies of each
    agent = new_agent(rng, M, family, K, cfg, cfg.master_lr, cfg.macro, subs=subs,
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


def meta_train(cfg, family, rng, subs=None, runner=None, done=0):
    """Learn φ: rounds done + 1 .. cfg.rounds of meta_round, the sub-policies kept from round to round.

    A round's tasks run side by side, each with its own master; φ's update pools all their steps
    (the paper's groups). Yields (φ, runner, the round's record) after every round, so that the
    caller may watch or save. Fresh φ and a fresh runner by default; a caller that carries on
    gives the ones it kept, and how many rounds they have done.
    """
    M, E = cfg.tasks, cfg.copies
    if subs is None:
        subs = Net.new(rng, cfg.subpolicies, family, family.n_actions, cfg, cfg.sub_lr, out_scale=0.01)
    if runner is None:
        runner = Runner(family.make(np.zeros(M * E, dtype=int), "train", seed=child_seed(rng)), M)
    for r in range(done, cfg.rounds):
        yield subs, runner, {"round": r + 1, "tasks": M, **meta_round(cfg, family, runner, subs, rng)}


# ---- The test: fine-tuning on held-out tasks ------------------------------

def fine_tune(cfg, family, make_agent, rng):
    """Train fresh learners on every held-out task, cfg.eval_seeds times each, all side by side.

    make_agent(rng, L) builds L learners. Returns per-learner curves of
    normalised return and success, each (L, eval_iters), and the trained
    learners (learner l ran held-out task l % n_tasks).
    """
    tasks = np.tile(family.held_out(cfg.eval_split), cfg.eval_seeds)
    L = len(tasks)
    runner = Runner(family.make(np.repeat(tasks, cfg.copies), cfg.eval_split, seed=child_seed(rng)), L)
    agent = make_agent(rng, L)
    score, success = np.zeros((L, cfg.eval_iters)), np.zeros((L, cfg.eval_iters))
    for it in range(cfg.eval_iters):
        ro = runner.run(agent, cfg.steps, rng)
        update(agent, ro, cfg, rng)
        score[:, it], success[:, it] = ro.score, ro.success
    return score, success, agent


PAPER, OPTIONS = "paper", "options"     # the kinds of master: the paper's, and [options]


def masters(cfg, family, subs, kind=PAPER):
    """make_agent for fresh masters over the frozen subs: the paper's (PAPER: a choice among the K
    sub-policies every N steps), or [options] (OPTIONS: the sub-policies and the A primitive actions,
    discounted per env step, a sub-policy interrupted where the master no longer wants it)."""
    options = kind == OPTIONS
    n_choices = cfg.subpolicies + (family.n_actions if options else 0)
    return lambda rng, L: new_agent(rng, L, family, n_choices, cfg, cfg.master_lr, cfg.macro, subs,
                                    interrupt=cfg.interrupt if options else 0.0, smdp=options)


def flat(cfg, family, lr, start=None):
    """make_agent for flat PPO at rate lr: from scratch, or from the one-learner agent `start`."""
    def make_agent(rng, L):
        agent = new_agent(rng, L, family, family.n_actions, cfg, lr)
        if start is not None:
            for net, src in [(agent.master, start.master), (agent.value, start.value)]:
                for k in net.p:
                    net.p[k][...] = src.p[k]      # every learner starts from the shared weights
        return agent
    return make_agent


METHODS = {"mlsh": "the paper's master over the skills", "mlsh_options": "a master over the skills and single "
           "moves (options)", "flat": "flat PPO from scratch"}           # what the test runs: name -> label


def learners(cfg, family, subs):
    """What the test fine-tunes, (method, learning rate, make_agent) each: the paper's test (a fresh
    master over the learned φ, frozen), [options] an options master over the same φ, and flat PPO."""
    return [("mlsh", cfg.master_lr, masters(cfg, family, subs, PAPER)),
            ("mlsh_options", cfg.master_lr, masters(cfg, family, subs, OPTIONS)),
            ("flat", cfg.flat_lr, flat(cfg, family, cfg.flat_lr))]


def evaluate(cfg, family, methods):
    """The paper's test on held-out tasks for each (name, lr, make_agent) of `methods` (learners()'s, or
    the lab's): yields (name, lr, score, success, the trained learners) as each finishes. Every fine_tune
    starts from the same stream, so that all methods meet the same seeds."""
    for name, lr, make_agent in methods:
        yield (name, lr, *fine_tune(cfg, family, make_agent, stream(cfg.seed, "fine_tune")))


def interval(x):
    """The mean of x and its 95% t-interval [low, high] (the mean itself when x cannot vary)."""
    x, half = np.asarray(x, dtype=float), 0.0
    if len(x) > 1 and np.ptp(x) > 0:
        half = student_t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), [float(x.mean() - half), float(x.mean() + half)]


# ---- The command line: python mlsh.py [--env NAME] [--quick] [--FIELD VALUE ...] -------------

QUICK = dict(rounds=2, tasks=2, warmup=2, joint=2, copies=4, eval_iters=3, eval_seeds=1)   # --quick


def check(cfg, family):
    """Every problem with cfg for this family, as sentences that say what to do ([] when none)."""
    T, c = family.max_steps, cfg
    rules = [(k, getattr(c, k) >= 1, "at least 1") for k in ("subpolicies", "macro", "hidden", "rounds", "tasks",
             "joint", "copies", "steps", "epochs", "minibatches", "eval_iters", "eval_seeds")]
    rules += [(k, 0 <= getattr(c, k) < np.inf, "0 or more") for k in ("warmup", "layers", "seed", "master_ent",
                                                                      "sub_ent")]
    rules += [(k, 0 < getattr(c, k) < np.inf, "a positive number") for k in ("master_lr", "sub_lr", "value_lr",
                                                                             "clip", "flat_lr")]
    rules += [("gamma", 0 < c.gamma <= 1, "in (0, 1]"), ("lam", 0 <= c.lam <= 1, "in [0, 1]"),
              ("interrupt", 0 <= c.interrupt < 1, "a probability in [0, 1)"),
              ("macro", c.macro <= T, f"at most an episode's length, T = {T} (else one decision per episode)"),
              ("steps", c.steps >= T, f"at least an episode's length, T = {T}, so that an iteration can end one")]
    problems = [f"--{k.replace('_', '-')} is {getattr(c, k)}; it must be {must}" for k, ok, must in rules if not ok]
    try:
        family.held_out(c.eval_split)
    except ValueError as e:
        problems.append(f"--eval-split {c.eval_split}: {e}")
    return problems


def progress(rec, rounds):
    """A round's record (meta_round's) as its progress line: a fresh master's success at the end of the
    warmup and of the joint iterations, and each sub-policy's share of the steps (near 0: unused)."""
    warm = float("nan") if rec["warmup_success"] is None else rec["warmup_success"]
    return (f"round {rec['round']:3d}/{rounds}  warmup-success {warm:.2f}  joint-success {rec['joint_success']:.2f}"
            f"  usage {' '.join(f'{u:.2f}' for u in rec['usage'])}")


def main(argv=None):
    """Settings from the command line (the family's own: envs.FAMILIES, then --quick's, then the flags
    given), meta-training with a line per round, then the test's table."""
    p = argparse.ArgumentParser(description="Meta-train MLSH, then test fresh learners on the family's held-out tasks.")
    p.error = lambda message: p.exit(2, f"mlsh: {message} (python mlsh.py --help lists every option)\n")
    p.add_argument("--env", default="fourrooms", help=f"{', '.join(envs.FAMILIES)}, or a maze file (legend: envs.py)")
    p.add_argument("--quick", action="store_true", help="a budget of seconds: a check that everything runs")
    comments = dict(re.findall(r"^\s+(\w+): \w+ = .*?#\s*(.*)$", inspect.getsource(Config), re.M))
    for f in dataclasses.fields(Config):      # a flag per setting, its help the setting's comment
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), help=f"{comments[f.name]} "
                       f"(default: {f.default}; a family may set its own)")
    args = vars(p.parse_args(argv))
    env, quick = args.pop("env"), args.pop("quick")
    try:
        family = (envs.FAMILIES[env]() if env in envs.FAMILIES else     # a family by name, or a maze file's goals
                  envs.GoalTasks(rows=envs.read_maze(env), name=env))
    except (OSError, ValueError) as e:
        p.error(f"--env {env}: {e.strerror if isinstance(e, OSError) else e}")
    cfg = Config(**{**family.settings, **(QUICK if quick else {}), **{k: v for k, v in args.items() if v is not None}})
    if problems := check(cfg, family):
        p.error("; ".join(problems))
    print(f"MLSH on {family.name}: K={cfg.subpolicies}, N={cfg.macro}, T={family.max_steps}, W={cfg.warmup}, "
          f"U={cfg.joint}, {cfg.rounds} rounds of {cfg.tasks} tasks side by side, seed {cfg.seed}")
    t0 = time.time()
    for subs, _, rec in meta_train(cfg, family, stream(cfg.seed, "meta_train")):
        print(f"{progress(rec, cfg.rounds)}  {time.time() - t0:.0f}s")
    print(f"\nfresh learners on the {len(family.held_out(cfg.eval_split))} held-out tasks ({cfg.eval_split}), "
          f"{cfg.eval_seeds} seeds each:\n\nmethod          AUC  95% interval    80% success at")
    for name, lr, score, success, _ in evaluate(cfg, family, learners(cfg, family, subs)):
        auc, (low, high) = interval(score.mean(axis=1))
        hit = np.flatnonzero(success.mean(axis=0) >= 0.8)
        print(f"{name:<13s} {auc:.3f}  [{low:.3f}, {high:.3f}]  {f'iteration {hit[0] + 1}' if len(hit) else 'never'}")
    print(f"\nAUC: the mean normalised return over {cfg.eval_iters} iterations (1: the best possible from the "
          f"first try), its 95% t-interval over learners; {time.time() - t0:.0f}s in all\n"
          + "".join(f"{m}: {label}\n" for m, label in METHODS.items()) + "--quick: a smoke test, not a result" * quick)


if __name__ == "__main__":
    main()
