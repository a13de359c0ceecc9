"""The lab's command line, `python -m lab [flags]` from the repository's root: a run of mlsh.py's algorithm
from start to end, with presets, a folder that keeps it (checkpoints, resume, the evaluations finished),
every method, measures and figures. It imports the algorithm (mlsh.py); the algorithm never imports it.
"""
import argparse
import dataclasses
import functools
import inspect
import os
import re
import shlex
import sys
import time

import numpy as np

import mlsh
from lab import baselines, plots, store
from lab.measures import bench, reach, skills_alone, summarise
from lab.settings import (META_TRAINING, METHODS, PRESETS, TASK_FIELDS, Settings, cannot_act, check_config,
                          make_family, odd)

QUICK = dict(mlsh.QUICK)          # and flat PPO at its one rate, --flat-lr (parse_args)
QUICK_NOTE = ("--quick: a budget of seconds that checks that everything runs; its numbers say nothing "
              "about MLSH (python -m lab is the real run)")
RUN_OPTIONS = [  # flags that change what is shown or kept, not what is learned
    ("--quick", "a tiny budget that finishes in seconds (a smoke test)"),
    ("--bench", "print rollout and update speed, then exit"),
    ("--quiet", "no progress lines (the final table is still printed)"),
    ("--no-plots", "do not write the PNG figures"),
    ("--render", "print an episode of a trained master on a held-out task, as text"),
    ("--eval-only", "evaluate the sub-policies of --load FILE without meta-training"),
    ("--replace", "write over the run in the output folder (without it, the same command carries a stopped "
                  "run on, leaves a finished one as it is, and refuses a run of other settings or code)"),
]
ELEMENT = {"methods": str, "flat_lrs": float}      # the type of each element of a list setting


def field_help():
    """The one-line comment beside each setting's field (mlsh.Config, settings.Settings), for --help."""
    source = inspect.getsource(mlsh.Config) + inspect.getsource(Settings)
    return dict(re.findall(r"^\s+(\w+): [^=]+=.*?#\s*(.*)$", source, re.M))


@functools.lru_cache(maxsize=None)
def preset_values(name):
    """Every setting of preset `name` as a run takes it: the family's own settings (envs.py) under the
    preset's, T the family's, flat PPO's rates its rate alone unless the preset sweeps them."""
    task = {k: v for k, v in PRESETS[name].items() if k in TASK_FIELDS}
    family = make_family(Settings(**task))
    values = {**family.settings, **PRESETS[name], "preset": name, "max_steps": family.max_steps}
    values.setdefault("flat_lrs", (values.get("flat_lr", Settings.flat_lr),))
    return dataclasses.asdict(Settings(**values))


def help_default(field):
    """A setting's default for --help: its value in each preset where they differ (rooms' T and S follow
    --rooms), else the one value."""
    if field.name == "out":
        return "runs/<preset> at the repository's root; runs/maze-<file name> with --maze, runs/family-<Class> " \
               "with --family; -quick added for --quick"
    show = lambda v: " ".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v) if v != "" else "none"
    values = {name: preset_values(name)[field.name] for name in PRESETS}
    if field.name in ("env", "preset", "family") or len(set(map(show, values.values()))) == 1:
        return show(field.default if field.name in ("env", "preset", "family") else values["fourrooms"])
    follows = " (follows --rooms)" * (field.name in ("max_steps", "steps"))
    return ", ".join(f"{name} {show(v)}{follows if name == 'rooms' else ''}" for name, v in values.items()) + "*"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit code 2), without the long usage block."""

    def error(self, message):
        self.exit(2, f"lab: {message} (python -m lab --help lists every option)\n")


def parse_args(argv=None):
    """The settings from the command line, the run options and the task family. The settings are the
    family's own (envs.py), under the preset's (--env E uses preset E), under --quick's, under the
    flags given."""
    p = Parser(prog="python -m lab", allow_abbrev=False,
               description="Meta Learning Shared Hierarchies on grid mazes: meta-train sub-policies, then "
                           "compare how fast fresh learners learn held-out tasks: the paper's master (mlsh) and "
                           "the options master (mlsh_options) over the skills, flat PPO from scratch, and (with "
                           "--methods) two more baselines. Defaults marked * come from the preset.")
    helps = field_help()
    task_first = lambda f: 0 if f.name in TASK_FIELDS else 1 + (f.name == "out")
    for f in sorted(dataclasses.fields(Settings), key=task_first):
        flag = "--" + f.name.replace("_", "-")
        h = f"{helps.get(f.name, '')} (default: {help_default(f)})"
        if f.type in (bool, "bool"):
            p.add_argument(flag, action="store_true", default=None, help=h)
        elif f.name in ELEMENT:
            p.add_argument(flag, type=ELEMENT[f.name], nargs="+", default=None, help=h)
        else:
            p.add_argument(flag, type=type(f.default), default=None, help=h)
    for flag, h in RUN_OPTIONS:
        p.add_argument(flag, action="store_true", help=h)
    p.add_argument("--load", metavar="FILE", help="a checkpoint.npz: carry its meta-training on, to --rounds "
                                                  "(or, with --eval-only, only evaluate it)")
    args = vars(p.parse_args(argv))
    opts = argparse.Namespace(**{k: args.pop(k) for k in ["quick", "bench", "quiet", "no_plots",
                                                          "render", "eval_only", "replace", "load"]})
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if v is not None}
    if opts.eval_only and not opts.load:
        p.error("--eval-only evaluates a trained checkpoint: give it with --load FILE")
    if "env" in given and "family" in given:
        p.error("--env and --family: choose one (--family module:Class is a family of your own)")
    if "flat_lr" in given and "flat_lrs" in given:
        p.error("--flat-lr and --flat-lrs: give one (--flat-lrs X is the one rate X)")
    env = given.get("env")     # --env E uses preset E; a family with no preset of the lab's runs its own settings
    preset = given.get("preset") or (env if env in PRESETS else "" if env or "family" in given else Settings.preset)
    if preset and preset not in PRESETS:
        p.error(f"--preset {preset!r} is not a preset here; choose one of {', '.join(PRESETS)}")
    if "env" in given and given["env"] != PRESETS.get(preset, {}).get("env", given["env"]):
        p.error(f"--preset {preset} is for --env {PRESETS[preset]['env']}: leave out --env, or choose another preset")
    if "family" in given and "preset" in given:
        p.error("--preset names settings of the built-in families: leave it out with --family")
    chosen = {**PRESETS.get(preset, {"env": env or ""}), "preset": preset, **given}
    try:
        family = make_family(Settings(**{k: v for k, v in chosen.items() if k in TASK_FIELDS}), given)
    except ValueError as e:
        p.error(str(e))
    values = {**family.settings, **chosen, **(QUICK if opts.quick else {}), **given, "max_steps": family.max_steps}
    if "flat_lr" in given or not values.get("flat_lrs") or (opts.quick and "flat_lrs" not in given):
        values["flat_lrs"] = (values.get("flat_lr", Settings.flat_lr),)
    cfg = Settings(**values)
    names = [k for k, v in {**given, **vars(opts)}.items() if v is not None and v is not False]   # (0 is given)
    problems = check_config(cfg, family) + cannot_act(cfg, opts, names)
    if problems:
        p.error("; ".join(problems))                     # exit code 2, before anything is written
    for warning in odd(cfg):
        print(f"lab: warning: {warning}", file=sys.stderr)
    return cfg, opts, family


def finite(what, params):
    """Stop with a message naming `what` when a network's weights hold NaN or inf. A NaN anywhere in
    training (a reward, a value, an advantage) reaches the weights: ppo_loss passes it on."""
    if not all(np.isfinite(v).all() for v in params.values()):
        raise FloatingPointError(f"{what} became NaN or infinite")


def progress(cfg, log):
    """The progress line after each round of meta-training: mlsh.progress's fields, then the speed, the
    time so far and the time left (two sub-policies that learned the same skill do not show here;
    skills_alone shows them)."""
    t0, first = time.time(), None
    steps_per_round = (cfg.warmup + cfg.joint) * cfg.tasks * cfg.copies * cfg.steps

    def line(rec):
        nonlocal first
        first = rec["round"] - 1 if first is None else first
        elapsed, done = time.time() - t0, rec["round"] - first
        log(f"{mlsh.progress(rec, cfg.rounds)}  {done * steps_per_round / elapsed:,.0f} steps/s  "
            f"elapsed {elapsed:.0f}s  eta {elapsed / done * (cfg.rounds - rec['round']):.0f}s")

    return line


def meta_train(cfg, family, ckpt, resume, log):
    """mlsh.meta_train, from the checkpoint `resume` when given (else afresh), saving the
    checkpoint and printing the progress line after every round. Returns φ, the round records and
    the seconds meta-training took in all (over every run that carried it on)."""
    rng, subs, runner, history, before = mlsh.stream(cfg.seed, "meta_train"), None, None, [], 0.0
    t0 = time.time()
    if resume is not None:   # φ, its optimiser and both generators as saved
        subs = mlsh.Net(resume["subs"], cfg.sub_lr, family.one_hot)
        subs.opt, history, before = resume["opt"], resume["history"], resume["seconds"]
        runner = mlsh.Runner(family.make(np.zeros(cfg.tasks * cfg.copies, dtype=int), "train"), cfg.tasks)
        rng.bit_generator.state = resume["rng"]
        runner.env.rng.bit_generator.state = resume["env_rng"]
    line = progress(cfg, log)
    for subs, runner, rec in mlsh.meta_train(cfg, family, rng, subs, runner, done=len(history)):
        history.append(rec)
        finite(f"the sub-policies' weights in round {rec['round']}", subs.p)
        store.save_checkpoint(ckpt, cfg, family, subs, history, rng, runner.env.rng, before + time.time() - t0)
        line(rec)
    return subs, history, before + time.time() - t0


def evaluations(cfg, family, subs, path, key, kept):
    """Every method's fine-tuning, by mlsh.evaluate: baselines.learners, then the shared policy at flat PPO's
    rate (cfg.flat_lr, chosen on validation tasks). Each is kept in the file `path` as it finishes
    (store.save_kept, by method and rate), so that a stopped evaluation carries on where it stopped: one kept
    for these settings, this code and these very sub-policies (`kept`: store.kept_for) is not run again, and
    gives the kept curves and a stand-in for the learners, learner 0's master alone (all that play_episode
    needs). Every fine-tuning
    starts from the seed's stream, so kept and new results are the same numbers. Yields (name, lr, score,
    success, learners) as each finishes."""
    done = dict(kept)

    def tune(name, lr, make_agent):
        k = store.method_key(name, lr)
        if k in kept:
            score, success, master = kept[k]
            agent = make_agent(np.random.default_rng(0), 1)
            agent.master.p.update(master)
            return name, lr, score, success, agent
        result = next(mlsh.evaluate(cfg, family, [(name, lr, make_agent)]))
        done[k] = (result[2], result[3], {w: v[:1] for w, v in result[4].master.p.items()})
        store.save_kept(path, key, done)
        return result

    for name, lr, make_agent in baselines.learners(cfg, family, subs):
        yield tune(name, lr, make_agent)
    if "shared" in cfg.methods:
        lr = cfg.flat_lr
        yield tune(*baselines.shared(cfg, family, lr, pretrained=store.method_key("shared", lr) not in kept))


def evaluate_all(cfg, log, methods):
    """Summarise each method of `methods` (evaluations) as it finishes, print a line. Flat PPO is reported at
    cfg.flat_lr, its rate chosen on validation tasks; its whole sweep is kept beside it, and on the test
    tasks the sweep's best too, marked as chosen on them. Returns the results per method, the name and
    trained masters of the first master over the skills (mlsh, else mlsh_options; None without either),
    and every learner's curves {method_key: (score, success)} (store.save_scores)."""
    results, flat, masters, curves, t0 = {}, {}, {}, {}, time.time()
    for name, lr, score, success, learners in methods:
        label = f"flat lr={lr:g}" if name == "flat" else name
        finite(f"the masters' weights of {label}", learners.master.p)
        res = summarise(score, success)
        log(f"  {label:<14s} AUC {res['auc']:.3f} [{res['auc_ci'][0]:.3f}, {res['auc_ci'][1]:.3f}]"
            f"  80% success at {at_80(res['iters_to_80'])}  ({time.time() - t0:.0f}s)")
        if name == "flat":
            flat[lr] = res
        else:
            results[name] = res
        masters[name] = learners
        curves[store.method_key(name, lr)] = (score, success)
    if flat:
        sweep = {str(lr): r["auc"] for lr, r in flat.items()}
        results["flat"] = dict(flat[cfg.flat_lr], lr=cfg.flat_lr, sweep=sweep)
        best = baselines.best_rate({lr: r["auc"] for lr, r in flat.items()})
        if cfg.eval_split == "test" and best != cfg.flat_lr:
            results["flat"]["best_on_test"] = {"lr": best, "auc": flat[best]["auc"], "auc_ci": flat[best]["auc_ci"]}
    shown = next((m for m in ("mlsh", "mlsh_options") if m in masters), None)
    return results, (shown, masters.get(shown)), curves


def at_80(iteration):
    return "never" if iteration is None else f"iteration {iteration}"


def table(results):
    lines = [f"{'method':<14s} {'AUC':>6s}  {'95% interval':<16s} {'80% success at':>14s}"]
    for name in [m for m in METHODS if m in results]:
        r = results[name]
        label = name + (f" lr={r['lr']:g}" if name == "flat" else "")
        lines.append(f"{label:<14s} {r['auc']:6.3f}  [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]"
                     f"  {at_80(r['iters_to_80']):>14s}")
        if name == "flat" and r.get("best_on_test"):
            b = r["best_on_test"]
            lines.append(f"{'  lr=' + format(b['lr'], 'g'):<14s} {b['auc']:6.3f}  [{b['auc_ci'][0]:.3f}, "
                         f"{b['auc_ci'][1]:.3f}]  (the sweep's best on the test tasks themselves: not a result)")
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


def reach_line(reached):
    """What the skills allow each master on the held-out goals, in words."""
    paper, options = reached["mlsh"], reached["mlsh_options"]
    return (f"what the skills allow on the held-out goals (reach): the best mlsh scores "
            f"{paper['best_score']['mean']:.2f} (success {paper['best_success']['mean']:.2f}), the best "
            f"mlsh_options {options['best_score']['mean']:.2f} (success {options['best_success']['mean']:.2f}); "
            f"a random mlsh master meets a goal in {paper['random_meets']['mean']:.2f} of its episodes, a random "
            f"mlsh_options master in {options['random_meets']['mean']:.2f}, a random walk in "
            f"{reached['random_walk_meets']['mean']:.2f}")


def stopped(argv, ckpt, kept):
    """After Ctrl-C: say what is kept and the command that carries on, and exit with 130. The same
    command carries on (kept_run); one that loaded another run's checkpoint, from this run's own."""
    args = list(argv if argv is not None else sys.argv[1:])
    if ckpt and "--load" in args:
        args[args.index("--load") + 1] = ckpt
    print(f"\ninterrupted: {kept}\nresume with: python -m lab {shlex.join(args)}")
    raise SystemExit(130)


def finished(out):
    """A finished run of these settings and this code is in `out`: show its table, say where it is, train
    nothing."""
    results = store.read_results(out)["methods"]
    print(f"a finished run of these settings and this code is in {out}: nothing to do (give --replace to run "
          f"it again)\n\n{table(results)}\n\n(from {os.path.join(out, 'results.json')})")


def main(argv=None):
    cfg, opts, family = parse_args(argv)
    log = (lambda s: None) if opts.quiet else print
    if opts.bench:
        bench(cfg)
        return
    out = os.path.abspath(cfg.out or store.default_out(cfg, opts.quick))
    ckpt, code, commit = os.path.join(out, "checkpoint.npz"), store.code(family), store.commit()
    skills_code = None
    try:                                   # every check before anything is written
        if opts.eval_only:     # the results say how the skills evaluated were meta-trained, and by what code
            resume = store.load_checkpoint(opts.load, cfg, family, resume=False)
            cfg = dataclasses.replace(cfg, **{k: resume["config"][k] for k in META_TRAINING if k in resume["config"]})
            skills_code = resume["code"]
        state = store.kept_run(out, cfg, opts, code)
        store.check_writable(out)
        if not opts.eval_only:
            own = state == "interrupted" and os.path.isfile(ckpt)      # carry it on
            load = opts.load or (ckpt if own else None)
            resume = store.load_checkpoint(load, cfg, family, resume=True) if load else None
        if state != "finished":
            store.make_folder(out)
    except ValueError as e:
        print(f"lab: {e}", file=sys.stderr)
        raise SystemExit(2)
    if state == "finished":
        return finished(out)
    if resume is not None and not opts.eval_only:
        n = len(resume["history"])
        print(f"resuming round {n + 1} of {cfg.rounds} from {load}" if n < cfg.rounds else
              f"meta-training in {load} is complete ({n} of {cfg.rounds} rounds): carrying on with the evaluation")
    t0 = time.time()
    log(f"MLSH on {family.name}: K={cfg.subpolicies} sub-policies, N={cfg.macro}, T={family.max_steps}, "
        f"S={cfg.steps}, W={cfg.warmup}, U={cfg.joint}, {cfg.rounds} rounds of {cfg.tasks} tasks side by side; "
        f"held-out tasks: {len(family.held_out(cfg.eval_split))} ({cfg.eval_split})")
    if opts.quick:
        log(QUICK_NOTE)
    if opts.eval_only:
        subs = mlsh.Net(resume["subs"], cfg.sub_lr, family.one_hot)
        history, t_meta = resume["history"], resume["seconds"]
        log(f"evaluating the sub-policies of {opts.load} ({len(history)} rounds of meta-training"
            + (f"; made by other code: {store.changed(skills_code, code)})" if store.changed(skills_code, code)
               else ")"))
    else:
        done = 0 if resume is None else len(resume["history"])
        try:
            subs, history, t_meta = meta_train(cfg, family, ckpt, resume, log)
        except KeyboardInterrupt:
            stopped(argv, ckpt, f"the last complete round is saved in {ckpt}")
        except FloatingPointError as e:
            kept = (f"the last good checkpoint is intact in {ckpt}" if os.path.exists(ckpt)
                    else "no round completed")
            print(f"lab: meta-training stopped: {e}; {kept}. Try a smaller learning rate", file=sys.stderr)
            raise SystemExit(2)
        if done == cfg.rounds:
            log(f"meta-training was complete ({done} rounds, {t_meta:.0f}s)")
        else:
            log(f"meta-training took {time.time() - t0:.0f}s"
                + (f" (rounds {done + 1}-{cfg.rounds}; {t_meta:.0f}s in all)" if done else ""))
    t1 = time.time()
    log(f"fine-tuning a fresh learner on each held-out task, {cfg.eval_seeds} seed(s) each, "
        f"{cfg.eval_iters} iterations:")
    kept_path = os.path.join(out, store.KEPT)
    key = store.kept_key(cfg, subs, code)
    kept = store.kept_for(kept_path, key)
    if kept:
        log(f"  (carrying on: {len(kept)} evaluation(s) kept in {kept_path} are not run again)")
    try:
        results, (method, masters), curves = evaluate_all(cfg, log, evaluations(cfg, family, subs, kept_path, key,
                                                                                       kept))
    except KeyboardInterrupt:
        stopped(argv, None if opts.eval_only else ckpt,
                f"the evaluations that finished are kept in {kept_path}")
    except FloatingPointError as e:
        print(f"lab: evaluation stopped: {e}; the sub-policies are intact in {opts.load or ckpt}. "
              f"Try a smaller learning rate", file=sys.stderr)
        raise SystemExit(2)
    t_eval = time.time() - t1
    alone = skills_alone(cfg, family, subs)
    held = family.held_out(cfg.eval_split)
    skills = {"tasks": held.tolist(), "success": alone.round(3).tolist(),
              "best_per_task": float(alone.max(axis=0).mean())}
    maps = reach(cfg, family, subs)
    on_held = lambda maps: {k: on_held(v) if isinstance(v, dict) else
                            {"mean": float(np.nanmean(v[held])), "per_task": v[held].round(3).tolist()}
                            for k, v in maps.items()}
    reached = None if maps is None else on_held(maps)
    store.save_scores(os.path.join(out, store.SCORES),
                      {k: store.learners(score, cfg.eval_seeds) for k, (score, _) in curves.items()},
                      {k: store.learners(success, cfg.eval_seeds) for k, (_, success) in curves.items()},
                      {"tasks": held.tolist(), "seed": cfg.seed, "config": dataclasses.asdict(cfg), "code": code,
                       "commit": commit, "cpu": store.cpu(), "seconds": {"meta_training": t_meta, "evaluation": t_eval},
                       "flat_lr": cfg.flat_lr, "quick": opts.quick})
    store.write_json(os.path.join(out, "results.json"),
                     {"format": store.FORMAT, "config": dataclasses.asdict(cfg), "methods": results,
                      "skills_alone": skills, "reach": reached, "meta_training": history,
                      "seconds": {"meta_training": t_meta, "evaluation": t_eval}, "quick": opts.quick,
                      "cpu": store.cpu(), "code": code, "commit": commit, "scores": store.SCORES,
                      **({"skills_code": skills_code} if opts.eval_only else {})})
    if os.path.exists(kept_path):
        os.remove(kept_path)                                      # scores.npz and results.json hold them now
    ep = (plots.play_episode(family, masters, 0, seed=cfg.seed, split=cfg.eval_split, method=method)
          if masters is not None else None)
    if not opts.no_plots:
        plots.plot_all(out, family, results, history, subs, ep, maps, held)
    if opts.render and ep is not None:
        print("\n" + plots.render_episode(ep))
    print("\n" + table(results))
    print(skills_table(skills))
    if reached is not None:
        print(reach_line(reached))
    optimum = ("the best return any policy could get" if cfg.reward == "every_step"
               else "always the shortest path")
    written = ["results"] + ["checkpoint"] * (not opts.eval_only) + ["figures"] * (not opts.no_plots)
    print(f"\nAUC = mean normalised return over {cfg.eval_iters} fine-tuning iterations (1 = {optimum}), "
          f"its 95% t-interval over learners.\n" + "".join(f"{m}: {label}\n" for m, label in METHODS.items()
                                                           if m in results)
          + ("" if opts.eval_only else f"meta-training {t_meta:.0f}s, ") +
          f"evaluation {t_eval:.0f}s; {', '.join(written[:-1])}{' and ' * (len(written) > 1)}"
          f"{written[-1]} in {out}")
    if opts.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
