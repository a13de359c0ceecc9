"""The exercises of a course (README, "Exercises"): a student's handout, and the wrong answers that each
exercise's check must reject.

    python -m lab.exercises gae             # writes handout-gae/: mlsh.py, envs.py, test_mlsh.py with gae's
                                            # body replaced by raise NotImplementedError, and shows its check
                                            # failing there and passing on the real function
    python -m lab.exercises gae --out DIR

A check is `python -m pytest test_mlsh.py -k <function>` in the folder of the three files a course copies.
The wrong answers live here, in the lab, which no course copies: (what is wrong, the words a failure
names it by, and the answer), the answer either edits of the function's syntax tree (each a piece of the
function as Python, and what the student wrote instead; every place it stands is changed, whatever its
spacing) or a whole function. lab/test_exercises.py runs every one of them in-process (a copy of the
modules with the one function changed) and makes sure its check fails, in words that name the mistake.
"""
import argparse
import ast
import copy
import os
import re
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ["mlsh.py", "envs.py", "test_mlsh.py"]            # what a course copies
EXERCISES = {  # function -> the file it is in
    "mlp_backward": "mlsh.py", "ppo_loss": "mlsh.py", "gae": "mlsh.py",
    "master_transitions": "mlsh.py", "meta_round": "mlsh.py", "bfs_distances": "envs.py",
}

WRONG_ANSWERS = {  # function -> [(what is wrong, words some failure must say, edits or a whole function)]
    "mlp_backward": [
        ("the tanh derivative left out", "gradient is off for W", [("dh * (1.0 - hs[i] ** 2)", "dh")]),
        ("the tanh derivative taken as 1 - h", "gradient is off for W", [("1.0 - hs[i] ** 2", "1.0 - hs[i]")]),
        ("the bias gradient averaged over the batch", "gradient is off for b",
         [("d.sum(axis=1, keepdims=True)", "d.mean(axis=1, keepdims=True)")]),
        ("the first layer forgotten", "one per weight",
         [("reversed(range(n_layers))", "reversed(range(1, n_layers))")]),
        ("backprop into h through W untransposed", "mlp_backward fails on",
         [('d @ p[f"W{i}"].transpose(0, 2, 1)', 'd @ p[f"W{i}"]')]),
        ("an input given as cells treated as dense rows", "given as cells",
         [('i == 0 and hs[0].dtype.kind == "i"', "False")]),
        ("the weight gradient with the input untransposed", "mlp_backward",
         [("hs[i].transpose(0, 2, 1) @ d", "hs[i] @ d.transpose(0, 2, 1)")]),
    ],
    "ppo_loss": [
        ("the gradient flows through the clipped term", "no gradient",
         [("np.where(unclipped > clipped, 0.0, unclipped)", "unclipped")]),
        (">= where > is meant, which drops the gradient wherever the ratio is inside the clip range",
         "inside the clip range", [("unclipped > clipped", "unclipped >= clipped")]),
        ("the vanilla policy gradient: no ratio", "r = 2, A = -1",
         [("np.where(unclipped > clipped, 0.0, unclipped)", "np.where(unclipped > clipped, 0.0, adv)")]),
        ("max instead of min", "the clipped 1.2 A",
         [("np.minimum(unclipped, clipped)", "np.maximum(unclipped, clipped)")]),
        ("the entropy bonus with the wrong sign, loss and gradient alike", "entropy",
         [("surrogate + ent_coef * entropy", "surrogate - ent_coef * entropy"),
          ("dsur_dlogp[..., None] * dlogp_dlogits + ent_coef * dent_dlogits",
           "dsur_dlogp[..., None] * dlogp_dlogits - ent_coef * dent_dlogits")]),
        ("probs - onehot", "r = 2, A = -1", [("onehot - probs", "probs - onehot")]),
        ("the entropy's gradient without the + H", "the entropy bonus alone",
         [("logp_all + entropy[..., None]", "logp_all")]),
        ("the plain mean over the batch, weights ignored, loss and gradient alike", "weighted sum of its rows",
         [("-(w * (surrogate + ent_coef * entropy)).sum(-1)",
           "-(np.full_like(w, 1 / w.shape[-1]) * (surrogate + ent_coef * entropy)).sum(-1)"),
          ("-w[..., None] * (dsur_dlogp[..., None] * dlogp_dlogits + ent_coef * dent_dlogits)",
           "-np.full_like(w, 1 / w.shape[-1])[..., None] * (dsur_dlogp[..., None] * dlogp_dlogits + "
           "ent_coef * dent_dlogits)")]),
        ("ascent: the loss not negated, gradient alike", "minimised",
         [("-(w * (surrogate + ent_coef * entropy)).sum(-1)", "(w * (surrogate + ent_coef * entropy)).sum(-1)"),
          ("-w[..., None] * (dsur_dlogp[..., None] * dlogp_dlogits + ent_coef * dent_dlogits)",
           "w[..., None] * (dsur_dlogp[..., None] * dlogp_dlogits + ent_coef * dent_dlogits)")]),
        ("the entropy bonus unweighted: its mean over the batch, outside the sample weights",
         "the entropy bonus too",
         [("-(w * (surrogate + ent_coef * entropy)).sum(-1)", "-(w * surrogate).sum(-1) - ent_coef * entropy.mean(-1)"),
          ("-w[..., None] * (dsur_dlogp[..., None] * dlogp_dlogits + ent_coef * dent_dlogits)",
           "-w[..., None] * dsur_dlogp[..., None] * dlogp_dlogits - ent_coef * dent_dlogits / w.shape[-1]")]),
        ("the entropy's gradient unweighted (the loss weighted)", "gradient is weighted too",
         [("-w[..., None] * (dsur_dlogp[..., None] * dlogp_dlogits + ent_coef * dent_dlogits)",
           "-w[..., None] * dsur_dlogp[..., None] * dlogp_dlogits - ent_coef * dent_dlogits / w.shape[-1]")]),
        ("the probabilities by a softmax that overflows for large logits", "NaN or inf",
         [("log_softmax(logits)", "np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))")]),
    ],
    "gae": [
        ("the advantage flows back across a truncation (cut at term, not end)", "flows back across a truncation",
         [("1.0 - end[t]", "1.0 - term[t]")]),
        ("a bootstrap through a termination", "after a termination",
         [("gamma * (1.0 - term) * next_val", "gamma * next_val")]),
        ("no bootstrap at a truncation", "at a truncation",
         [("gamma * (1.0 - term) * next_val", "gamma * (1.0 - end) * next_val")]),
        ("V(s_t+1) read from val[t + 1], across episode ends", "next_val",
         [("gamma * (1.0 - term) * next_val", "gamma * (1.0 - term) * np.concatenate([val[1:], next_val[-1:]])")]),
        ("gamma instead of gamma lam", "lam = 0", [("gamma[t] * lam * (1.0 - end[t]) * running",
                                                    "gamma[t] * (1.0 - end[t]) * running")]),
        ("the mask of the step before", "gae", [("end[t]", "end[t - 1]")]),
        ("forwards through time", "backwards", [("reversed(range(len(delta)))", "range(len(delta))")]),
        ("the return, not the advantage", "worked example", [("adv[t] = running", "adv[t] = running + val[t]")]),
        ("gamma taken as a number: no discount per step", "a discount per step",
         [("np.broadcast_to(gamma, rew.shape)", "gamma"), ("gamma[t] * lam", "gamma * lam")]),
        ("masks negated as booleans (~end), which float masks do not allow", "float masks",
         [("gamma * (1.0 - term) * next_val", "gamma * ~term * next_val"), ("1.0 - end[t]", "~end[t]")]),
        ("the first step's discount used for every step", "a discount per step",
         [("gamma[t] * lam", "gamma[0] * lam")]),
    ],
    "master_transitions": [
        ("the reward of the decision's own step only", "its reward is the sum of rew",
         [("R = cum[last + 1, i] - cum[t, i]", "R = ro.rew[t, i]")]),
        ("a bootstrap from the observation at the next decision", "bootstrap",
         [("ro.next_obs[last, i]", "ro.obs[np.minimum(last + 1, S - 1), i]")]),
        ("a truncation taken as a termination", "truncated", [("term = ro.term[last, i]",
                                                               "term = ro.term[last, i] | ro.trunc[last, i]")]),
        ("the advantage flows across episode ends", "stop", [("term | ro.trunc[last, i] | ~same_next", "~same_next")]),
        ("the wrong learner's value network (i % M)", "learner 0's network", [("i // E", "i % (n // E)")]),
        ("the rollout's last decision taken as terminal", "the rollout ends inside it",
         [("term = ro.term[last, i]", "term = ro.term[last, i] | ~same_next")]),
        ("the return equals the advantage", "the return is the advantage plus V(obs)",
         [("return (t, i, adv, adv + val)", "return (t, i, adv, adv)")]),
    ],
    "meta_round": [
        ("φ trained in the warmup too", "train_subs", [("it >= cfg.warmup", "True")]),
        ("off by one: the first joint iteration leaves φ alone", "train_subs",
         [("it >= cfg.warmup", "it > cfg.warmup")]),
        ("no new tasks", "new tasks", [("runner.set_tasks(np.repeat(family.sample(rng, M), E))",
                                        "np.repeat(family.sample(rng, M), E)")]),
        ("each copy its own task", "neighbouring copies", [("np.repeat(family.sample(rng, M), E)",
                                                            "family.sample(rng, M * E)")]),
        ("masters that decide every step (N = 1)", "cfg.macro",
         [("new_agent(rng, M, family, K, cfg, cfg.master_lr, cfg.macro, subs=subs, critic=True)",
           "new_agent(rng, M, family, K, cfg, cfg.master_lr, subs=subs, critic=True)")]),
        ("no critic, so φ never learns", "critics",
         [("new_agent(rng, M, family, K, cfg, cfg.master_lr, cfg.macro, subs=subs, critic=True)",
           "new_agent(rng, M, family, K, cfg, cfg.master_lr, cfg.macro, subs=subs, critic=False)")]),
        ("the warmup success read one iteration late", "warmup_success",
         [("it == cfg.warmup - 1", "it == cfg.warmup")]),
        ("θ at the sub-policies' step", "cfg.master_lr", [("cfg.master_lr", "cfg.sub_lr")]),
        ("fresh masters from a generator of their own", "generator",
         [("new_agent(rng, M, family, K, cfg, cfg.master_lr, cfg.macro, subs=subs, critic=True)",
           "new_agent(np.random.default_rng(), M, family, K, cfg, cfg.master_lr, cfg.macro, subs=subs, critic=True)")]),
        ("every round's fresh masters drawn alike, from a generator made anew from the seed", "same weights",
         [("new_agent(rng, M, family, K, cfg, cfg.master_lr, cfg.macro, subs=subs, critic=True)",
           "new_agent(np.random.default_rng(cfg.seed), M, family, K, cfg, cfg.master_lr, cfg.macro, subs=subs, "
           "critic=True)")]),
        ("tasks drawn from a fixed seed, not from the generator given", "generator",
         [("family.sample(rng, M)", "family.sample(np.random.default_rng(0), M)")]),
        ("the runs' randomness from a generator of their own", "generator",
         [("runner.run(agent, cfg.steps, rng)", "runner.run(agent, cfg.steps, np.random.default_rng())")]),
    ],
    "bfs_distances": [
        ("the frontier keeps cells already seen", "did not finish",
         [("(frontier.astype(np.float32) @ a > 0) & ~seen", "frontier.astype(np.float32) @ a > 0")]),
        ("one move too many", "fewest moves", [("dist[frontier] = d", "dist[frontier] = d + 1")]),
        ("seen holds the last frontier only", "did not finish", [("seen |= frontier", "seen = frontier")]),
        ("unreachable cells left at 0", "-1", [("np.where(eye, 0, -1)", "np.where(eye, 0, 0)")]),
        ("the start not marked as seen", "0 from a cell to itself",
         [("seen, frontier = (eye.copy(), eye.copy())", "seen, frontier = (np.zeros_like(eye), eye.copy())")]),
        ("distances as floats", "whole numbers", [("np.where(eye, 0, -1)", "np.where(eye, 0.0, -1.0)")]),
        ("a single graph only, no batch", "a batch", [("np.broadcast_to(np.eye(n, dtype=bool), adjacency.shape)",
                                                       "np.eye(n, dtype=bool)")]),
        ("a Python loop over every source cell that reads a batch's first graph only", "a batch", '''
def bfs_distances(adjacency):
    n = adjacency.shape[-1]
    dist = -np.ones(adjacency.shape, dtype=int)
    for s in range(n):
        dist[..., s, s] = 0
        frontier = [s]
        while frontier:
            nxt = []
            for c in frontier:
                for j in np.flatnonzero(adjacency[c] if adjacency.ndim == 2 else adjacency[0, c]):
                    if dist[..., s, j].max() < 0:
                        dist[..., s, j] = dist[..., s, c] + 1
                        nxt.append(j)
            frontier = nxt
    return dist
'''),
    ],
}


# ---- Changing one function of a file, by its name ----------------------------

def _function(source, name):
    """The top-level function `name` of a module's source, as a syntax tree."""
    return next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)


def _pattern(text):
    """A piece of Python as the node it parses to: an expression, else one statement."""
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError:
        return ast.parse(text).body[0]


class _Edit(ast.NodeTransformer):
    """Every node that is `old` (the same syntax tree, whatever its spacing) replaced by a copy of `new`."""

    def __init__(self, old, new):
        self.old, self.new, self.count = ast.dump(_pattern(old)), _pattern(new), 0

    def visit(self, node):
        if ast.dump(node) == self.old:
            self.count += 1
            return copy.deepcopy(self.new)
        return super().visit(node)


def replace_function(source, name, text):
    """The module source with function `name` replaced by `text` (a whole function)."""
    fn = _function(source, name)
    lines = source.splitlines(keepends=True)
    return "".join(lines[:fn.lineno - 1]) + text.strip("\n") + "\n" + "".join(lines[fn.end_lineno:])


def answer(source, name, edits):
    """The module source with function `name` as a student might have written it: `edits`, a list of
    (a piece of the function, what the student wrote instead) applied to its syntax tree, or a whole
    function's text. ValueError if a piece is no longer in the function (update the wrong answer)."""
    if isinstance(edits, str):
        return replace_function(source, name, edits)
    fn = _function(source, name)
    for old, new in edits:
        edit = _Edit(old, new)
        fn = edit.visit(fn)
        if not edit.count:
            raise ValueError(f"the wrong answer's edit {old!r} no longer fits {name}: update it")
    return replace_function(source, name, ast.unparse(ast.fix_missing_locations(fn)))


def blank(source, name):
    """The source with function `name`'s body, all but its docstring, replaced by a raise: a student's start."""
    fn = _function(source, name)
    doc = isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant)
    body = fn.body[1:] if doc else fn.body
    lines = source.splitlines(keepends=True)
    stub = f"{' ' * body[0].col_offset}raise NotImplementedError('exercise: write {name}')\n"
    return "".join(lines[:body[0].lineno - 1] + [stub] + lines[fn.end_lineno:])


def sources(folder=ROOT):
    return {f: (Path(folder) / f).read_text() for f in COPIED}


def with_answer(name, edits):
    """The copied files' sources with exercise `name`'s function changed by `edits` (None: blanked)."""
    src = sources()
    f = EXERCISES[name]
    src[f] = blank(src[f], name) if edits is None else answer(src[f], name, edits)
    return src


# ---- Running a check in-process ---------------------------------------------

def load(src):
    """Modules mlsh, envs and test_mlsh built from these sources, apart from the ones imported (each
    imports the others of this set)."""
    saved = {m: sys.modules.get(m) for m in ("mlsh", "envs", "test_mlsh")}
    mods = {}
    try:
        for m in ("envs", "mlsh", "test_mlsh"):      # mlsh imports envs
            mod = types.ModuleType(m)
            mod.__file__ = str(ROOT / f"{m}.py")
            sys.modules[m] = mod
            exec(compile(src[f"{m}.py"], mod.__file__, "exec"), mod.__dict__)
            mods[m] = mod
    finally:
        for m, old in saved.items():
            if old is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = old
    return mods


def _cases(fn):
    """The keyword arguments of each case of a test (its pytest.mark.parametrize marks expanded)."""
    cases = [{}]
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            names, values = mark.args
            names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
            values = [v if len(names) > 1 else (v,) for v in values]
            cases = [{**c, **dict(zip(names, v))} for c in cases for v in values]
    return cases


def check(name, src):
    """Run exercise `name`'s check (the tests of test_mlsh whose name holds `name`) on these sources.
    Returns [(test, the failure's message or None)] per test case."""
    import inspect
    import tempfile

    import pytest
    mods = load(src)
    out = []
    for test, fn in vars(mods["test_mlsh"]).items():
        if not (test.startswith("test_") and name in test and callable(fn)):
            continue
        for case in _cases(fn):
            mp = pytest.MonkeyPatch()
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    fixtures = {"monkeypatch": mp, "tmp_path": Path(tmp)}
                    args = {p: fixtures[p] for p in inspect.signature(fn).parameters if p in fixtures}
                    fn(**args, **case)
                out.append((test, None))
            except BaseException as e:     # a wrong answer may raise anything, or loop forever (bfs: a time limit)
                if isinstance(e, KeyboardInterrupt):
                    raise
                out.append((test, f"{type(e).__name__}: {e}"))
            finally:
                mp.undo()
    return out


# ---- The handout --------------------------------------------------------------

def handout(name, out):
    """Write the copied files into `out` with exercise `name` blanked; run its check there, then on the
    real files. Returns the two pytest runs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f, text in with_answer(name, None).items():
        (out / f).write_text(text)
    run = lambda cwd: subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=line",
                                      "test_mlsh.py", "-k", name], cwd=cwd, capture_output=True, text=True)
    return run(out), run(ROOT)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab.exercises", description="Write a student's handout for one "
                                "exercise: the files a course copies with its function's body blanked, and show its "
                                "check.")
    p.add_argument("exercise", choices=list(EXERCISES), help="the function the student writes")
    p.add_argument("--out", help="the handout's folder (default: handout-<exercise> in the current folder)")
    args = p.parse_args(argv)
    out = Path(args.out or f"handout-{args.exercise}").resolve()
    if out.exists() and any(out.iterdir()):
        p.exit(2, f"exercises: {out} is not empty: choose another --out, or remove it first\n")
    blanked, real = handout(args.exercise, out)
    shown = os.path.relpath(out)                         # short where the folder is below this one
    shown = str(out) if shown.startswith("..") else shown
    said = lambda r: [line.replace(str(out), shown) for line in r.stdout.splitlines()
                      if re.match(r"\S+\.py:\d+: \w+", line)]
    tail = lambda r: "\n".join(sorted(set(said(r)))[:2] + r.stdout.strip().splitlines()[-1:])
    print(f"wrote {', '.join(COPIED)} into {shown}, {args.exercise} ({EXERCISES[args.exercise]}) blanked\n\n"
          f"its check there (python -m pytest test_mlsh.py -k {args.exercise}), as the student starts:\n"
          f"{tail(blanked)}\n\nits check on the real function:\n{tail(real)}")
    return 0 if blanked.returncode == 1 and real.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
