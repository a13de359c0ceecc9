"""The exercises of a course (README, "Exercises"): a student's handout, and the wrong answers that
each exercise's check must reject.

    python exercises.py gae                 # writes handout-gae/: mlsh.py, envs.py, test_mlsh.py with
                                            # gae's body replaced by raise NotImplementedError, and shows
                                            # its check failing there and passing on the real function
    python exercises.py gae --out DIR

A check is `python -m pytest -k <function>` in the folder of the three files a course copies. The
wrong answers live here, outside those files, as edits of the function: (what is wrong, [(a piece of
the function's text, what the student wrote instead)]). test_exercises.py runs every one of them
in-process (a copy of the modules with the one function changed) and makes sure its check fails in
words. This file imports nothing of the project at its top: it works on the files' text.
"""
import argparse
import ast
import os
import re
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
COPIED = ["mlsh.py", "envs.py", "test_mlsh.py"]            # what a course copies
EXERCISES = {  # function -> the file it is in
    "mlp_backward": "mlsh.py", "ppo_loss": "mlsh.py", "gae": "mlsh.py",
    "master_transitions": "mlsh.py", "meta_round": "mlsh.py", "bfs_distances": "envs.py",
}

WRONG_ANSWERS = {
    "mlp_backward": [
        ("the tanh derivative left out", [("dh * (1.0 - hs[i] ** 2)", "dh")]),
        ("the tanh derivative taken as 1 - h", [("(1.0 - hs[i] ** 2)", "(1.0 - hs[i])")]),
        ("the bias gradient averaged over the batch", [("d.sum(axis=1", "d.mean(axis=1")]),
        ("the first layer forgotten", [("reversed(range(n_layers))", "reversed(range(1, n_layers))")]),
        ("backprop into h through W untransposed", [('@ p[f"W{i}"].transpose(0, 2, 1)', '@ p[f"W{i}"]')]),
        ("an input given as cells treated as dense rows", [('i == 0 and hs[0].dtype.kind == "i"', "False")]),
        ("the weight gradient with the input untransposed", [("hs[i].transpose(0, 2, 1) @ d", "hs[i] @ d.transpose(0, 2, 1)")]),
    ],
    "ppo_loss": [
        ("the gradient flows through the clipped term", [("np.where(unclipped > clipped, 0.0, unclipped)",
                                                          "unclipped")]),
        (">= where > is meant, which drops the gradient wherever the ratio is inside the clip range",
         [("unclipped > clipped", "unclipped >= clipped")]),
        ("the vanilla policy gradient: no ratio", [("0.0, unclipped)", "0.0, adv)")]),
        ("max instead of min", [("np.minimum(unclipped, clipped)", "np.maximum(unclipped, clipped)")]),
        ("the entropy bonus with the wrong sign, loss and gradient alike",
         [("surrogate + ent_coef * entropy", "surrogate - ent_coef * entropy"),
          ("+ ent_coef * dent_dlogits", "- ent_coef * dent_dlogits")]),
        ("probs - onehot", [("= onehot - probs", "= probs - onehot")]),
        ("the entropy's gradient without the + H", [("(logp_all + entropy[..., None])", "logp_all")]),
        ("the plain mean over the batch, weights ignored, loss and gradient alike",
         [("-(w * (surrogate", "-(np.full_like(w, 1 / w.shape[-1]) * (surrogate"),
          ("-w[..., None] *", "-np.full_like(w, 1 / w.shape[-1])[..., None] *")]),
        ("ascent: the loss not negated, gradient alike", [("loss = -(w", "loss = (w"), ("dlogits = -w", "dlogits = w")]),
        ("the entropy bonus unweighted: its mean over the batch, outside the sample weights",
         [("-(w * (surrogate + ent_coef * entropy)).sum(-1)",
           "-(w * surrogate).sum(-1) - ent_coef * entropy.mean(-1)"),
          ("-w[..., None] * (dsur_dlogp[..., None] * dlogp_dlogits + ent_coef * dent_dlogits)",
           "-w[..., None] * dsur_dlogp[..., None] * dlogp_dlogits - ent_coef * dent_dlogits / w.shape[-1]")]),
        ("the entropy's gradient unweighted (the loss weighted)",
         [("-w[..., None] * (dsur_dlogp[..., None] * dlogp_dlogits + ent_coef * dent_dlogits)",
           "-w[..., None] * dsur_dlogp[..., None] * dlogp_dlogits - ent_coef * dent_dlogits / w.shape[-1]")]),
    ],
    "gae": [
        ("the advantage flows back across a truncation (cut at term, not end)", [("(1.0 - end[t])", "(1.0 - term[t])")]),
        ("a bootstrap through a termination", [("(1.0 - term) * next_val", "next_val")]),
        ("no bootstrap at a truncation", [("(1.0 - term) * next_val", "(1.0 - end) * next_val")]),
        ("V(s_t+1) read from val[t + 1], across episode ends",
         [("* next_val - val", "* np.concatenate([val[1:], next_val[-1:]]) - val")]),
        ("gamma instead of gamma lam", [("gamma[t] * lam * (1.0", "gamma[t] * (1.0")]),
        ("the mask of the step before", [("(1.0 - end[t])", "(1.0 - end[t - 1])")]),
        ("forwards through time", [("reversed(range(len(delta)))", "range(len(delta))")]),
        ("the return, not the advantage", [("] = running", "] = running + val[t]")]),
        ("gamma taken as a number: no discount per step", [("np.broadcast_to(gamma, rew.shape)", "gamma"),
                                                           ("gamma[t] * lam", "gamma * lam")]),
        ("masks negated as booleans (~end), which float masks do not allow",
         [("(1.0 - term) * next_val", "~term * next_val"), ("(1.0 - end[t])", "~end[t]")]),
        ("the first step's discount used for every step", [("gamma[t] * lam", "gamma[0] * lam")]),
    ],
    "master_transitions": [
        ("the reward of the decision's own step only", [("cum[last + 1, i] - cum[t, i]  ", "ro.rew[t, i]  ")]),
        ("a bootstrap from the observation at the next decision",
         [("ro.next_obs[last, i]", "ro.obs[np.minimum(last + 1, S - 1), i]")]),
        ("a truncation taken as a termination", [("= ro.term[last, i]", "= ro.term[last, i] | ro.trunc[last, i]")]),
        ("the advantage flows across episode ends", [("term | ro.trunc[last, i] | ~same_next", "~same_next")]),
        ("the wrong learner's value network (i % M)", [("i // E)", "i % (n // E))")]),
        ("the rollout's last decision taken as terminal", [("= ro.term[last, i]", "= ro.term[last, i] | ~same_next")]),
        ("the return equals the advantage", [("adv, adv + val", "adv, adv")]),
    ],
    "meta_round": [
        ("φ trained in the warmup too", [("train_subs=it >= cfg.warmup", "train_subs=True")]),
        ("off by one: the first joint iteration leaves φ alone", [("it >= cfg.warmup", "it > cfg.warmup")]),
        ("no new tasks", [("runner.set_tasks(np.repeat(", "(np.repeat(")]),
        ("each copy its own task", [("np.repeat(family.sample(rng, M), E)", "family.sample(rng, M * E)")]),
        ("masters that decide every step (N = 1)", [("cfg.master_lr, cfg.macro, subs=subs", "cfg.master_lr, subs=subs")]),
        ("no critic, so φ never learns", [("critic=True", "critic=False")]),
        ("the warmup success read one iteration late", [("it == cfg.warmup - 1", "it == cfg.warmup")]),
        ("θ at the sub-policies' step", [("cfg.master_lr", "cfg.sub_lr")]),
        ("fresh masters from a generator of their own", [("new_agent(rng,", "new_agent(np.random.default_rng(),")]),
        ("tasks drawn from a fixed seed, not from the generator given", [("family.sample(rng, M)",
                                                                          "family.sample(np.random.default_rng(0), M)")]),
        ("the runs' randomness from a generator of their own", [("runner.run(agent, cfg.steps, rng)",
                                                                 "runner.run(agent, cfg.steps, np.random.default_rng())")]),
    ],
    "bfs_distances": [
        ("the frontier keeps cells already seen", [(" & ~seen", "")]),
        ("one move too many", [("] = d", "] = d + 1")]),
        ("seen holds the last frontier only", [("seen |=", "seen =")]),
        ("unreachable cells left at 0", [("np.where(eye, 0, -1)", "np.where(eye, 0, 0)")]),
        ("the start not marked as seen", [("seen, frontier = eye.copy(),", "seen, frontier = np.zeros_like(eye),")]),
        ("distances as floats", [("np.where(eye, 0, -1)", "np.where(eye, 0.0, -1.0)")]),
        ("a single graph only, no batch", [("np.broadcast_to(np.eye(n, dtype=bool), adjacency.shape)",
                                            "np.eye(n, dtype=bool)")]),
    ],
}


# ---- Changing one function of a file's text ---------------------------------

def _function(source, name):
    return next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)


def blank(source, name):
    """The source with function `name`'s body, all but its docstring, replaced by a raise: a student's start."""
    fn = _function(source, name)
    doc = isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant)
    body = fn.body[1:] if doc else fn.body
    lines = source.splitlines(keepends=True)
    stub = f"{' ' * body[0].col_offset}raise NotImplementedError('exercise: write {name}')\n"
    return "".join(lines[:body[0].lineno - 1] + [stub] + lines[fn.end_lineno:])


def answer(source, name, edits):
    """The source with function `name` edited as a student might have written it."""
    fn = _function(source, name)
    lines = source.splitlines(keepends=True)
    text = "".join(lines[fn.lineno - 1:fn.end_lineno])
    for old, new in edits:
        if old not in text:
            raise ValueError(f"the wrong answer's edit {old!r} no longer fits {name}: update it")
        text = text.replace(old, new)
    return "".join(lines[:fn.lineno - 1]) + text + "".join(lines[fn.end_lineno:])


def sources(folder=HERE):
    return {f: (Path(folder) / f).read_text() for f in COPIED}


def with_answer(name, edits):
    """The copied files' sources with exercise `name`'s function edited by `edits` (None: blanked)."""
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
        for m in ("mlsh", "envs", "test_mlsh"):      # mlsh first: it sets the BLAS threads before NumPy loads
            mod = types.ModuleType(m)
            mod.__file__ = str(HERE / f"{m}.py")
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


def check(name, src, stop=False):
    """Run exercise `name`'s check (the tests of test_mlsh whose name holds `name`) on these sources.
    Returns [(test, the failure's message or None)] per test case; with stop, up to the first failure."""
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
            if stop and out[-1][1]:
                return out
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
                                      "-k", name, "test_mlsh.py"], cwd=cwd, capture_output=True, text=True)
    return run(out), run(HERE)


def main(argv=None):
    p = argparse.ArgumentParser(description="Write a student's handout for one exercise: the files a course copies "
                                            "with its function's body blanked, and show its check.")
    p.add_argument("exercise", choices=list(EXERCISES), help="the function the student writes")
    p.add_argument("--out", help="the handout's folder (default: handout-<exercise> here)")
    args = p.parse_args(argv)
    out = Path(args.out or HERE / f"handout-{args.exercise}")
    if out.exists() and any(out.iterdir()):
        p.exit(2, f"exercises: {out} is not empty: choose another --out, or remove it first\n")
    blanked, real = handout(args.exercise, out)
    shown = os.path.relpath(out)                         # short where the folder is below this one
    shown = str(out.resolve()) if shown.startswith("..") else shown
    said = lambda r: [line.replace(str(out.resolve()), shown) for line in r.stdout.splitlines()
                      if re.match(r"\S+\.py:\d+: \w+", line)]
    tail = lambda r: "\n".join(sorted(set(said(r)))[:2] + r.stdout.strip().splitlines()[-1:])
    print(f"wrote {', '.join(COPIED)} into {shown}, {args.exercise} ({EXERCISES[args.exercise]}) blanked\n\n"
          f"its check there (python -m pytest -q -k {args.exercise}), as the student starts:\n{tail(blanked)}\n\n"
          f"its check on the real function:\n{tail(real)}")
    return 0 if blanked.returncode == 1 and real.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
