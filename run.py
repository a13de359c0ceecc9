"""The command line of mlsh.py: flags built from the settings, --help, the progress line, the table,
and a run from start to end (main). It imports the algorithm (mlsh.py); the algorithm never imports it.

    python mlsh.py [flags]            # the same as python run.py [flags]
"""
import argparse
import dataclasses
import inspect
import json
import os
import re
import shlex
import sys
import time
import zlib

import numpy as np

import mlsh
import plots
import store
from measures import bench, reach, skills_alone, summarise
from mlsh import Net, Runner, stream
from settings import (FAMILIES, METHODS, PRESETS, TASK_FIELDS, META_TRAINING, Settings, cannot_act, check_config,
                      make_family, odd, rooms_budget)


QUICK = dict(rounds=2, tasks=2, warmup=2, joint=2, copies=4, eval_iters=3, eval_seeds=1, flat_lrs=(3e-3,))
QUICK_NOTE = ("--quick: a budget of seconds that checks that everything runs; its numbers say nothing "
              "about MLSH (python mlsh.py is the real run)")
RUN_OPTIONS = [  # flags that change what is shown or kept, not what is learned
    ("--quick", "a tiny budget that finishes in seconds (a smoke test)"),
    ("--bench", "print rollout and update speed, then exit"),
    ("--quiet", "no progress lines (the final table is still printed)"),
    ("--no-plots", "do not write the PNG figures"),
    ("--render", "print an episode of a trained master on a held-out task, as text"),
    ("--eval-only", "evaluate the sub-policies of --load FILE without meta-training"),
    ("--replace", "write over the run in the output folder (without it, the same command carries a stopped "
                  "run on, leaves a finished one as it is, and refuses a run of other settings)"),
]


def field_help():
    """The one-line comment beside each setting's field (mlsh.Config, settings.Settings), for --help."""
    helps = {}
    for line in (inspect.getsource(mlsh.Config) + inspect.getsource(Settings)).splitlines():
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
    task_first = lambda f: 0 if f.name in TASK_FIELDS and f.name != "out" else 1 + (f.name == "out")
    for f in sorted(dataclasses.fields(Settings), key=task_first):
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
    p.add_argument("--load", metavar="FILE", help="a checkpoint.npz: carry its meta-training on, to --rounds "
                                                  "(or, with --eval-only, only evaluate it)")
    args = vars(p.parse_args(argv))
    opts = argparse.Namespace(**{k: args.pop(k) for k in ["quick", "bench", "quiet", "no_plots",
                                                          "render", "eval_only", "replace", "load"]})
    if args["env"] is not None and args["env"] not in FAMILIES:
        p.error(f"--env {args['env']!r} is not a task family here; "
                f"choose one of {', '.join(FAMILIES)}")
    preset = args["preset"] or args["env"] or Settings.preset
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
    for f in dataclasses.fields(Settings):
        if isinstance(f.default, tuple) and f.name in values:
            values[f.name] = tuple(values[f.name])
    cfg = Settings(**values)
    given = [k for k, v in {**args, **vars(opts)}.items() if v is not None and v is not False]   # (0 is given)
    problems = check_config(cfg) + cannot_act(cfg, opts, given)
    if problems:
        p.error("; ".join(problems))                     # exit code 2, before anything is written
    for warning in odd(cfg):
        print(f"mlsh: warning: {warning}", file=sys.stderr)
    return cfg, opts


def finite(what, params):
    """Stop with a message naming `what` when a network's weights hold NaN or inf. A NaN anywhere in
    training (a reward, a value, an advantage) reaches the weights: ppo_loss passes it on."""
    if not all(np.isfinite(v).all() for v in params.values()):
        raise FloatingPointError(f"{what} became NaN or infinite")


def progress(cfg, log):
    """The progress line after each round of meta-training:

        round r/R  tasks M  warmup-success w  joint-success j  usage u_1..u_K  steps/s  elapsed  eta

    w and j are the success rates of the last warmup and the last joint iteration, u_k the share
    of steps sub-policy k acted in the round (u_k near 0: the masters ignore sub-policy k). Two
    sub-policies that learned the same skill do not show here; skills_alone shows them."""
    t0, first = time.time(), None
    steps_per_round = (cfg.warmup + cfg.joint) * cfg.tasks * cfg.copies * cfg.steps

    def line(rec):
        nonlocal first
        first = rec["round"] - 1 if first is None else first
        elapsed, done = time.time() - t0, rec["round"] - first
        warm = rec["warmup_success"]
        log(f"round {rec['round']:3d}/{cfg.rounds}  tasks {rec['tasks']}  "
            f"warmup-success {warm if warm is not None else float('nan'):.2f}  "
            f"joint-success {rec['joint_success']:.2f}  "
            f"usage {' '.join(f'{u:.2f}' for u in rec['usage'])}  "
            f"{done * steps_per_round / elapsed:,.0f} steps/s  elapsed {elapsed:.0f}s  "
            f"eta {elapsed / done * (cfg.rounds - rec['round']):.0f}s")

    return line


def meta_train(cfg, family, ckpt, resume, log):
    """mlsh.meta_train, from the checkpoint `resume` when given (else afresh), saving the
    checkpoint and printing the progress line after every round. Returns φ, the round records and
    the seconds meta-training took in all (over every run that carried it on)."""
    rng, subs, runner, history, before = stream(cfg.seed, "meta_train"), None, None, [], 0.0
    t0 = time.time()
    if resume is not None:   # φ, its optimiser and both generators as saved
        subs = Net(resume["subs"], cfg.sub_lr, family.one_hot)
        subs.opt, history, before = resume["opt"], resume["history"], resume["seconds"]
        runner = Runner(family.make(np.zeros(cfg.tasks * cfg.copies, dtype=int), "train"), cfg.tasks)
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
    """mlsh.evaluate, keeping what each fine-tuning returns in the file `path` as it finishes, so
    that a stopped evaluation carries on where it stopped. A fine-tuning the file holds (for these
    settings and these very sub-policies) is not run again: it gives the kept curves and a stand-in
    for the learners, learner 0's master alone (all that play_episode needs). Each fine-tuning's
    generator starts from the seed, so kept and new results are the same numbers.
    key, kept: store.kept_key and store.kept_for."""
    done = []

    def tune(make_agent):
        if len(done) < len(kept):
            score, success, master = kept[len(done)]
            agent = make_agent(np.random.default_rng(0), 1)
            agent.master.p.update(master)
        else:
            score, success, agent = mlsh.fine_tune(cfg, family, make_agent, stream(cfg.seed, "fine_tune"))
        done.append((score, success, {k: v[:1] for k, v in agent.master.p.items()}))
        if len(done) > len(kept):
            store.save_kept(path, key, done)
        return score, success, agent

    auc = {}
    for name, lr, make_agent in mlsh.learners(cfg, family, subs):        # as mlsh.evaluate
        score, success, agent = tune(make_agent)
        if name == "flat":
            auc[lr] = score.mean(axis=1).mean()
        yield name, lr, score, success, agent
    if "shared" in cfg.methods:
        lr = mlsh.best_rate(auc)
        if len(done) < len(kept):
            yield ("shared", lr, *tune(mlsh.flat(cfg, family, lr)))
        else:
            shared = mlsh.pretrain_shared(cfg, family, lr, stream(cfg.seed, "shared"))
            yield ("shared", lr, *tune(mlsh.flat(cfg, family, lr, shared)))


def evaluate_all(cfg, family, subs, log, methods):
    """Summarise each method of `methods` (evaluations) as it finishes (flat PPO: its best rate),
    print a line. Returns the results per method and MLSH's trained masters (None without MLSH)."""
    results, flat, masters, t0 = {}, {}, None, time.time()
    for name, lr, score, success, learners in methods:
        label = {"flat": f"flat lr={lr:g}", "random_subs": "random subs",
                 "mlsh_paper": "mlsh (paper's)"}.get(name, name)
        finite(f"the masters' weights of {label}", learners.master.p)
        rng = stream(cfg.seed, "summary", zlib.crc32(label.encode()))   # order-free
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
        best = mlsh.best_rate({lr: r["auc"] for lr, r in flat.items()})
        sweep = {str(lr): r["auc"] for lr, r in flat.items()}
        results["flat"] = dict(flat[best], lr=best, sweep=sweep)
    return results, masters


def at_80(iteration):
    return "never" if iteration is None else f"iteration {iteration}"


def table(results):
    lines = [f"{'method':<14s} {'AUC':>6s}  {'95% CI':<16s} {'80% success at':>14s}"]
    for name in [m for m in METHODS if m in results]:
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
    """After Ctrl-C: say what is kept and the command that carries on, and exit with 130. The same
    command carries on (kept_run); one that loaded another run's checkpoint, from this run's own."""
    args = list(argv if argv is not None else sys.argv[1:])
    if ckpt and "--load" in args:
        args[args.index("--load") + 1] = ckpt
    print(f"\ninterrupted: {kept}\nresume with: python mlsh.py {shlex.join(args)}")
    raise SystemExit(130)


def finished(out):
    """A finished run of these settings is in `out`: show its table, say where it is, train nothing."""
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)["methods"]
    print(f"a finished run of these settings is in {out}: nothing to do (give --replace to run it again)\n\n"
          f"{table(results)}\n\n(from {os.path.join(out, 'results.json')})")


def main(argv=None):
    cfg, opts = parse_args(argv)
    log = (lambda s: None) if opts.quiet else print
    if opts.bench:
        bench(cfg)
        return
    out = os.path.abspath(cfg.out or store.default_out(cfg, opts.quick))
    ckpt = os.path.join(out, "checkpoint.npz")
    try:                                   # every check before anything is written
        family = make_family(cfg)
        if opts.eval_only:     # the results say how the skills evaluated were meta-trained
            resume = store.load_checkpoint(opts.load, cfg, family, resume=False)
            cfg = dataclasses.replace(cfg, **{k: resume["config"][k] for k in META_TRAINING if k in resume["config"]})
        state = store.kept_run(out, cfg, opts)
        store.check_writable(out)
        if not opts.eval_only:
            own = state == "interrupted" and os.path.isfile(ckpt)      # carry it on
            load = opts.load or (ckpt if own else None)
            resume = store.load_checkpoint(load, cfg, family, resume=True) if load else None
    except ValueError as e:
        print(f"mlsh: {e}", file=sys.stderr)
        raise SystemExit(2)
    if state == "finished":
        return finished(out)
    if resume is not None and not opts.eval_only:
        n = len(resume["history"])
        print(f"resuming round {n + 1} of {cfg.rounds} from {load}" if n < cfg.rounds else
              f"meta-training in {load} is complete ({n} of {cfg.rounds} rounds): carrying on with the evaluation")
    os.makedirs(out, exist_ok=True)
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
        subs, history, t_meta = Net(resume["subs"], cfg.sub_lr, family.one_hot), resume["history"], resume["seconds"]
        log(f"evaluating the sub-policies of {opts.load} ({len(history)} rounds of meta-training)")
    else:
        done = 0 if resume is None else len(resume["history"])
        try:
            subs, history, t_meta = meta_train(cfg, family, ckpt, resume, log)
        except KeyboardInterrupt:
            stopped(argv, ckpt, f"the last complete round is saved in {ckpt}")
        except FloatingPointError as e:
            kept = (f"the last good checkpoint is intact in {ckpt}" if os.path.exists(ckpt)
                    else "no round completed")
            print(f"mlsh: meta-training stopped: {e}; {kept}. Try a smaller learning rate",
                  file=sys.stderr)
            raise SystemExit(2)
        if done == cfg.rounds:
            log(f"meta-training was complete ({done} rounds, {t_meta:.0f}s)")
        else:
            log(f"meta-training took {time.time() - t0:.0f}s"
                + (f" (rounds {done + 1}-{cfg.rounds}; {t_meta:.0f}s in all)" if done else ""))
    t1 = time.time()
    log(f"fine-tuning a fresh learner on each held-out task, {cfg.eval_seeds} seed(s) each, "
        f"{cfg.eval_iters} iterations:")
    kept = os.path.join(out, store.KEPT)
    key = store.kept_key(cfg, subs)
    done = store.kept_for(kept, key)
    if done:
        log(f"  (carrying on: {len(done)} evaluation(s) kept in {kept} are not run again)")
    try:
        results, masters = evaluate_all(cfg, family, subs, log, evaluations(cfg, family, subs, kept, key, done))
    except KeyboardInterrupt:
        stopped(argv, None if opts.eval_only else ckpt,
                f"the evaluations that finished are kept in {kept}")
    except FloatingPointError as e:
        print(f"mlsh: evaluation stopped: {e}; the sub-policies are intact in {opts.load or ckpt}. "
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
    store.write_json(os.path.join(out, "results.json"),
               {"config": dataclasses.asdict(cfg), "methods": results, "skills_alone": skills,
                "reach": reached, "meta_training": history,
                "seconds": {"meta_training": t_meta, "evaluation": t_eval}, "quick": opts.quick,
                "cpu": store.cpu()})
    if os.path.exists(kept):
        os.remove(kept)                                      # results.json holds them now
    ep = (plots.play_episode(family, masters, 0, seed=cfg.seed, split=cfg.eval_split)
          if masters is not None else None)
    if not opts.no_plots:
        plots.plot_all(out, family, results, history, subs, ep, maps, held)
    if opts.render and ep is not None:
        print("\n" + plots.render_episode(ep))
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
