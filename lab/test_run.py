"""Tests of the lab's run (python -m lab): the command line (lab/run.py), settings, presets and task
families (lab/settings.py), checkpoints, run folders and the code a run was made by (lab/store.py), the
measures (lab/measures.py), figures (lab/plots.py), every error message of lab/README.md, and the README's
names.

Run from the repository's root: python -m pytest -q
"""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import envs
import mlsh
from lab import measures, run, settings, store

ROOT = Path(store.ROOT)
MY_MAZE = """\
###########
#S....#...#
#.###.#.#.#
#...#...#.#
###.#####.#
#.........#
###########
"""


def lab(*argv, cwd=ROOT, env=None):
    """python -m lab as a user runs it: (exit code, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "lab", *argv], cwd=cwd, capture_output=True, text=True, timeout=600,
                       env=env)
    return r.returncode, r.stdout, r.stderr


def copy_of_the_code(folder):
    """mlsh.py, envs.py and the lab package, copied into `folder`: a repository of its own to edit and run."""
    folder.mkdir(exist_ok=True)
    for f in ("mlsh.py", "envs.py"):
        shutil.copy(ROOT / f, folder / f)
    shutil.copytree(ROOT / "lab", folder / "lab", ignore=shutil.ignore_patterns("__pycache__", "figures", "*.md"))
    return folder


def _fixed_skills(fam, actions, hidden=8):
    """Sub-policies that always take one action each, whatever they see (a huge bias on that action)."""
    p = mlsh.mlp_init(np.random.default_rng(0), len(actions), [fam.obs_dim, hidden, 4], dtype=np.float64)
    p["W1"][:] = 0.0
    p["b1"][:] = -50.0
    p["b1"][np.arange(len(actions)), 0, actions] = 50.0
    return mlsh.Net(p, 0.0)


def test_rooms_preset_scales_the_episode_with_the_maze():
    for R, T, S in [(2, 50, 64), (3, 112, 128), (4, 200, 256), (5, 312, 320)]:
        cfg, _, family = run.parse_args(["--env", "rooms", "--rooms", str(R)])
        assert (cfg.preset, cfg.rooms, cfg.max_steps, cfg.steps, cfg.macro, cfg.interrupt) == ("rooms", R, T, S, 5, 0.2)
        assert family.maze.n_cells == envs.RoomTasks(R).maze.n_cells and family.name == f"rooms ({R} x {R})"
    cfg, _, _ = run.parse_args(["--env", "rooms", "--rooms", "4", "--max-steps", "100"])
    assert (cfg.max_steps, cfg.steps) == (100, 128)            # T given wins over the rule; S holds an episode
    cfg, _, _ = run.parse_args(["--env", "rooms", "--steps", "512"])
    assert (cfg.max_steps, cfg.steps) == (112, 512)


@pytest.mark.parametrize("reward, start", [("reach", -1), ("every_step", -1), ("every_step", 62)])
def test_reach_with_primitives_can_always_do_the_best(reward, start):
    # primitives alone can take the shortest path (and then stay, bumping, where the reward pays for it)
    cfg = settings.Settings(max_steps=12, macro=4, reward=reward, start_cell=start)
    fam = settings.make_family(cfg)
    maze, s = fam.maze, fam.start_cell
    got = measures.reach(cfg, fam, _fixed_skills(fam, [1, 2, 0]), rollouts=1)["mlsh_options"]
    near = (maze.dist[s] <= 12) & (np.arange(maze.n_cells) != s)
    assert s == (62 if start == 62 else maze.start) and np.isnan(got["best_score"][s])
    assert np.allclose(got["best_score"][near], 1.0) and np.allclose(got["best_success"][near], 1.0)
    only = measures.reach(cfg, fam, _fixed_skills(fam, [1, 2, 0]), rollouts=1)["mlsh"]["best_score"]
    assert (only[near] <= 1.0 + 1e-12).all() and (only[near] < 1.0).any()


def test_reach_is_the_best_over_every_sequence_of_choices():
    # deterministic skills from a fixed start: the best master is the best sequence of K^(T/N) choices
    cfg = settings.Settings(max_steps=12, macro=4)
    fam = settings.make_family(cfg)
    maze = fam.maze
    subs = _fixed_skills(fam, [1, 2, 0])                          # right, down, up
    maps = measures.reach(cfg, fam, subs, rollouts=1)
    got = {**maps["mlsh"], "walk_visit": maps["random_walk_meets"]}     # the paper's master
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
    assert np.allclose(got["random_meets"][others], visit[others])
    assert best_success.sum() >= 10 and np.isnan(got["best_score"][maze.start])
    walk = got["walk_visit"]                                      # a random walk meets near cells more often
    assert walk[maze.next_cell[maze.start, 1]] > 0.9 > 0.1 > np.nanmax(walk[fam.test_tasks])
    # the paper's reward: every step on g pays; the best sequence collects the most steps on g
    cfg = settings.Settings(max_steps=12, macro=4, reward="every_step")
    fam = settings.make_family(cfg)
    got = measures.reach(cfg, fam, subs, rollouts=1)["mlsh"]
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
    run.main(["--quick", "--env", "bandits", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["format"] == store.FORMAT and res["config"]["env"] == "bandits"
    assert res["code"] == store.code(envs.BanditTasks()) and set(res["code"]) == {"mlsh.py", "envs.py"}
    for name in ["mlsh", "mlsh_options", "flat", "shared", "random_subs"]:
        r = res["methods"][name]
        assert set(r) >= {"auc", "auc_ci", "curve", "iters_to_80"}
        assert r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1]
        assert len(r["curve"]) == res["config"]["eval_iters"]
    assert np.array(res["skills_alone"]["success"]).shape == (res["config"]["subpolicies"], 2)
    # every learner's curves are kept, (evaluation seeds, tasks, iterations) per method and rate, and give
    # the AUCs of results.json; flat PPO is reported at its rate chosen on validation tasks
    meta, score, success = store.load_scores(tmp_path / store.SCORES)
    c = res["config"]
    assert meta["tasks"] == res["skills_alone"]["tasks"] and meta["flat_lr"] == c["flat_lr"] == 0.01
    assert set(score) == set(success) == {f"{m}@{lr:g}" for m, lr in [("mlsh", c["master_lr"]), ("flat", 0.01),
        ("mlsh_options", c["master_lr"]), ("shared", 0.01), ("random_subs", c["master_lr"])]}
    for key, x in score.items():
        assert x.shape == (c["eval_seeds"], 2, c["eval_iters"]) and score[key].dtype == np.float64
        assert np.isclose(x.mean(), res["methods"][key.split("@")[0]]["auc"], atol=1e-6)
        assert np.isclose(success[key].mean(), res["methods"][key.split("@")[0]]["success_auc"], atol=1e-3)
    assert res["commit"] == meta["commit"] and res["scores"] == store.SCORES


def test_flat_ppo_is_reported_at_its_validation_rate_and_the_best_on_test_only_beside_it(tmp_path):
    run.main(["--quick", "--methods", "flat", "--flat-lrs", "0.001", "0.01", "0.1", "--quiet", "--no-plots",
              "--out", str(tmp_path)])
    flat = json.loads((tmp_path / "results.json").read_text())["methods"]["flat"]
    assert flat["lr"] == 0.01 and set(flat["sweep"]) == {"0.001", "0.01", "0.1"}
    assert flat["auc"] == flat["sweep"]["0.01"]
    best = max(flat["sweep"], key=flat["sweep"].get)
    assert flat.get("best_on_test", {"lr": 0.01})["lr"] == float(best)


def test_the_lab_runs_mlsh_py_s_test_and_prints_what_mlsh_py_prints(tmp_path):
    # the same settings (the family's own, then --quick's): the same methods, the same AUCs and intervals
    code, out, err = lab("--quick", "--env", "bandits", "--methods", "mlsh", "mlsh_options", "flat", "--flat-lr",
                         "0.01", "--no-plots", "--out", str(tmp_path))
    assert code == 0, err
    by_mlsh = subprocess.run([sys.executable, "mlsh.py", "--quick", "--env", "bandits"], cwd=ROOT, capture_output=True,
                             text=True).stdout
    row = lambda text, m: re.search(rf"^{m}\s.*?(\d\.\d{{3}})  \[(-?\d\.\d{{3}}), (-?\d\.\d{{3}})\]", text, re.M).groups()
    for m in ("mlsh", "mlsh_options", "flat"):
        assert row(out, m) == row(by_mlsh, m), m
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["methods"]["flat"]["lr"] == 0.01 and res["config"]["flat_lrs"] == [0.01]


def test_methods_and_the_validation_split(tmp_path):
    run.main(["--quick", "--methods", "mlsh", "random_subs", "--eval-split", "validation", "--quiet",
              "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["methods"]) == {"mlsh", "random_subs"}                     # the methods asked for, no more
    assert res["skills_alone"]["tasks"] == envs.GoalTasks().val_tasks.tolist()
    assert (tmp_path / "curves.png").exists() and (tmp_path / "episode.png").exists()
    assert not list(tmp_path.glob("*.tmp"))      # each figure written through a temporary file


def test_presets_set_the_task_and_flags_still_win():
    cfg, _, family = run.parse_args(["--preset", "paper"])
    assert (cfg.env, cfg.max_steps, cfg.macro, cfg.subpolicies, cfg.warmup, cfg.joint, cfg.layers) == \
        ("fourrooms", 100, 25, 4, 20, 30, 2) and cfg.copies * cfg.steps == 2048 and family.reward == "every_step"
    assert run.parse_args(["--preset", "paper", "--macro", "10"])[0].macro == 10
    # a family's own settings (envs.py) are the preset's, and python mlsh.py --env bandits runs them too
    cfg, _, family = run.parse_args(["--env", "bandits"])
    assert cfg.preset == "bandits" and family.settings == envs.BanditTasks.settings
    assert {k: getattr(cfg, k) for k in envs.BanditTasks.settings} == envs.BanditTasks.settings
    assert cfg.random_subs_master == "paper" and cfg.flat_lrs == (0.01, 0.03, 0.1)
    # the default run: both masters and flat PPO at its validated rate; the flags give the sweeps' full test
    cfg, _, _ = run.parse_args([])
    assert (cfg.methods, cfg.flat_lrs, cfg.flat_lr) == (("mlsh", "mlsh_options", "flat"), (0.01,), 0.01)
    cfg, _, _ = run.parse_args(["--methods", "mlsh", "flat", "shared", "random_subs", "--flat-lrs", "0.003", "0.01"])
    assert (cfg.methods, cfg.flat_lrs) == (("mlsh", "flat", "shared", "random_subs"), (0.003, 0.01))
    assert run.parse_args(["--preset", "rooms"])[0].methods == settings.Settings().methods   # every method
    # the paper's task as its code ran it: the paper preset's learner, the code's start, goal and slip
    cfg, _, fam = run.parse_args(["--preset", "paper-code"])
    paper, _, _ = run.parse_args(["--preset", "paper"])
    assert {k: v for k, v in vars(cfg).items() if getattr(paper, k) != v} == \
        dict(preset="paper-code", start_cell=62, goals="103", second_move=1 / 3)
    assert fam.train_tasks.tolist() == fam.test_tasks.tolist() == [103] and fam.make([103]).start == 62
    _, _, fam = run.parse_args(["--preset", "paper-code", "--goals", "68,80,90/103", "--second-move", "0"])
    assert (fam.train_tasks.tolist(), fam.test_tasks.tolist(), fam.make([103]).second_move) == ([68, 80, 90], [103], 0)


def test_help_lists_every_setting_with_its_comment_and_each_presets_default(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    helps = run.field_help()
    missing = [f.name for f in dataclasses.fields(settings.Settings) if not helps.get(f.name)]
    assert not missing, f"settings without the one-line comment that --help shows: {missing}"
    for f in dataclasses.fields(settings.Settings):
        flag = f"--{f.name.replace('_', '-')} "
        assert flag in text and helps[f.name] in text, f"--help lacks {flag} or its comment"
    for name in settings.PRESETS:             # a setting the presets differ in shows each preset's value
        assert f"{name} {run.preset_values(name)['sub_lr']}" in text[text.index(helps["sub_lr"]):][:300]
    out_help = text[text.index("--out OUT "):text.index("--quick ")]
    assert out_help.count("default") == 1 and "runs/<preset>" in out_help


# ---------------------------------------------------------------------------
# Checkpoints, your own maze, figures
# ---------------------------------------------------------------------------

QUICK_BANDITS = ["--quick", "--env", "bandits", "--quiet", "--no-plots"]


def test_checkpoint_round_trip_gives_the_same_sub_policies(tmp_path):
    cfg, _, fam = run.parse_args(QUICK_BANDITS)
    rng = np.random.default_rng(0)
    subs = mlsh.Net.new(rng, cfg.subpolicies, fam, 4, cfg, cfg.sub_lr)
    subs.opt.t = 7
    path = str(tmp_path / "c.npz")
    store.save_checkpoint(path, cfg, fam, subs, [{"round": 1}], rng, np.random.default_rng(1))
    saved_state = rng.bit_generator.state
    loaded = store.load_checkpoint(path, cfg, fam, resume=True)
    x = rng.standard_normal((1, 20, fam.obs_dim))
    assert np.array_equal(mlsh.mlp_forward(loaded["subs"], x)[0], subs(x))
    assert loaded["opt"].t == 7 and loaded["history"] == [{"round": 1}]
    assert loaded["rng"] == saved_state
    assert not list(tmp_path.glob("*.tmp"))                # written through a temporary file, then renamed


def test_a_checkpoint_from_another_config_is_refused(tmp_path):
    run.main(QUICK_BANDITS + ["--out", str(tmp_path)])
    ckpt = str(tmp_path / "checkpoint.npz")
    with pytest.raises(SystemExit) as e:
        run.main(QUICK_BANDITS + ["--subpolicies", "3", "--load", ckpt, "--eval-only", "--out", str(tmp_path / "b")])
    assert e.value.code == 2
    cfg, _, fam = run.parse_args(QUICK_BANDITS + ["--hidden", "32"])
    with pytest.raises(ValueError, match="hidden is 64 there, 32 here"):
        store.load_checkpoint(ckpt, cfg, fam, resume=False)
    cfg, _, fam = run.parse_args(["--quick"])              # Four Rooms: another env, another maze
    with pytest.raises(ValueError, match="env is 'bandits' there, 'fourrooms' here"):
        store.load_checkpoint(ckpt, cfg, fam, resume=False)


SAVE_CHECKPOINT = store.save_checkpoint


def _stop_after_round(monkeypatch, n):
    """Ctrl-C right after the checkpoint of round n is saved (n None: never)."""
    real_save = SAVE_CHECKPOINT

    def save_then_interrupt(path, cfg, family, subs, history, *rest):
        real_save(path, cfg, family, subs, history, *rest)
        if len(history) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_checkpoint", save_then_interrupt if n else real_save)


def _rounds(ckpt):
    with np.load(ckpt) as z:
        return len(json.loads(str(z["meta"]))["history"])


def test_the_same_command_again_carries_on_a_stopped_run_and_keeps_every_saved_round(tmp_path, monkeypatch, capsys):
    out, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoint.npz"
    argv = QUICK_BANDITS + ["--rounds", "5", "--out", str(out)]
    for stop_at, first_line in [(2, None), (4, "resuming round 3 of 5"), (None, "resuming round 5 of 5")]:
        _stop_after_round(monkeypatch, stop_at)
        if stop_at:
            with pytest.raises(SystemExit) as e:
                run.main(argv)
            assert e.value.code == 130 and _rounds(ckpt) == stop_at         # every saved round is kept
            said = capsys.readouterr().out
            assert f"resume with: python -m lab {' '.join(argv)}" in said     # the same command
        else:
            run.main(argv)
            said = capsys.readouterr().out
        assert first_line is None or said.startswith(f"{first_line} from {ckpt}"), said
    run.main(QUICK_BANDITS + ["--rounds", "5", "--out", str(tmp_path / "whole")])   # in one go
    res, whole = (json.loads((d / "results.json").read_text()) for d in (out, tmp_path / "whole"))
    assert [h["round"] for h in res["meta_training"]] == [1, 2, 3, 4, 5]
    assert res["meta_training"] == whole["meta_training"] and res["methods"] == whole["methods"]
    assert res["reach"] == whole["reach"] and res["skills_alone"] == whole["skills_alone"]
    with np.load(ckpt) as a, np.load(tmp_path / "whole" / "checkpoint.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "meta")
    # a finished run of the same settings: the same command prints its table and trains nothing
    kept, _ = _kept(out), capsys.readouterr()
    run.main(argv)
    said = capsys.readouterr().out
    assert said.startswith(f"a finished run of these settings and this code is in {out}: nothing to do (give "
                           f"--replace")
    assert "mlsh_options " in said and _kept(out) == kept
    # extended with --load, stopped, and carried on by the printed command (which loads the run's own checkpoint)
    _stop_after_round(monkeypatch, 6)
    with pytest.raises(SystemExit) as e:
        run.main(QUICK_BANDITS + ["--rounds", "7", "--out", str(tmp_path / "more"), "--load", str(ckpt)])
    assert e.value.code == 130 and _rounds(tmp_path / "more" / "checkpoint.npz") == 6 and _rounds(ckpt) == 5
    again = capsys.readouterr().out.split("resume with: python -m lab ")[1].split()
    assert again == QUICK_BANDITS + ["--rounds", "7", "--out", str(tmp_path / "more"), "--load",
                                     str(tmp_path / "more" / "checkpoint.npz")]
    _stop_after_round(monkeypatch, None)
    run.main(again)
    assert capsys.readouterr().out.startswith("resuming round 7 of 7")
    # no command shortens a checkpoint's history
    with pytest.raises(SystemExit) as e:
        run.main(QUICK_BANDITS + ["--rounds", "3", "--out", str(out), "--load", str(ckpt)])
    assert e.value.code == 2 and "holds 5 rounds, more than --rounds 3" in capsys.readouterr().err
    assert _kept(out) == kept


def test_eval_only_reproduces_the_evaluation(tmp_path):
    run.main(QUICK_BANDITS + ["--out", str(tmp_path / "a")])
    run.main(QUICK_BANDITS + ["--out", str(tmp_path / "b"), "--eval-only",
                               "--load", str(tmp_path / "a" / "checkpoint.npz")])
    a = json.loads((tmp_path / "a" / "results.json").read_text())["methods"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["methods"]
    assert a == b


def test_eval_only_records_how_its_skills_were_meta_trained_and_is_the_same_run_again(tmp_path, capsys):
    run.main(QUICK_BANDITS + ["--warmup", "3", "--joint", "1", "--rounds", "2", "--out", str(tmp_path / "a")])
    again = QUICK_BANDITS + ["--out", str(tmp_path / "b"), "--eval-only", "--load", str(tmp_path / "a" / "checkpoint.npz"),
                             "--methods", "mlsh_options", "--interrupt", "0.3"]
    run.main(again)
    config = json.loads((tmp_path / "b" / "results.json").read_text())["config"]
    assert (config["warmup"], config["joint"], config["rounds"], config["interrupt"]) == (3, 1, 2, 0.3)
    capsys.readouterr()
    run.main(again)                       # the same command again: the run is finished, nothing replaced
    assert "finished" in capsys.readouterr().out


def test_an_interrupted_evaluation_carries_on_where_it_stopped(tmp_path, monkeypatch, capsys):
    argv = QUICK_BANDITS + ["--methods", "mlsh", "random_subs", "flat", "--flat-lrs", "0.01", "0.03",
                            "--render"]
    run.main(argv + ["--out", str(tmp_path / "full")])
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
        run.main(again)
    out = capsys.readouterr().out
    assert e.value.code == 130 and f"the evaluations that finished are kept in {part}" in out
    assert f"resume with: python -m lab {' '.join(again)}" in out    # the same command
    assert sorted(os.listdir(part)) == [store.KEPT]
    assert sorted(store.read_kept(part / store.KEPT)[1]) == ["mlsh@0.01", "random_subs@0.01"]   # method and rate
    # a run of other settings does not replace what was kept
    kept = (part / store.KEPT).read_bytes()
    with pytest.raises(SystemExit) as e:
        run.main(again + ["--seed", "1"])
    assert e.value.code == 2 and "seed is 0 there, 1 here" in capsys.readouterr().err
    assert (part / store.KEPT).read_bytes() == kept
    # the same command carries on: only the two evaluations not kept run, and the numbers (and
    # the episode of learner 0's master, from the kept MLSH evaluation) are the uninterrupted run's
    calls.clear()
    stop_at[0] = 0
    run.main(again)
    assert len(calls) == 2 and not (part / store.KEPT).exists()
    resumed = capsys.readouterr().out
    assert "sub-policy acting" in full and resumed[:resumed.index("AUC =")] == full[:full.index("AUC =")]
    a, b = (json.loads((tmp_path / f / "results.json").read_text())["methods"] for f in ("full", "part"))
    assert a == b


def _kept(folder):
    """A run's results and checkpoint, byte for byte."""
    return {f: (folder / f).read_bytes() for f in ("results.json", "checkpoint.npz")}


def test_a_run_of_other_settings_never_replaces_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    run.main(QUICK_BANDITS + ["--out", str(out)])
    kept = _kept(out)
    others = {"seed is 0 there, 1 here": QUICK_BANDITS + ["--seed", "1"],
              "env is 'bandits' there, 'fourrooms' here": ["--quick", "--quiet", "--no-plots"],
              "methods is": QUICK_BANDITS + ["--eval-only", "--load", str(out / "checkpoint.npz"), "--methods", "mlsh"],
              "rounds is 2 there, 3 here": QUICK_BANDITS + ["--rounds", "3"]}
    for said, argv in others.items():
        with pytest.raises(SystemExit) as e:
            run.main(argv + ["--out", str(out)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert f"{out} holds a run of other settings" in err and said in err and "give --replace" in err, err
        assert _kept(out) == kept, f"{argv} changed the earlier run's files"
    assert f"to carry on its meta-training with these settings, give --load {out / 'checkpoint.npz'}" in err
    # a run that stopped (its checkpoint, no results yet) is kept the same way, and so from --load of another
    (out / "results.json").unlink()
    with pytest.raises(SystemExit) as e:
        run.main(QUICK_BANDITS + ["--macro", "3", "--out", str(out)])
    assert e.value.code == 2 and "macro is 10 there, 3 here" in capsys.readouterr().err
    run.main(QUICK_BANDITS + ["--out", str(tmp_path / "other")])
    with pytest.raises(SystemExit) as e:
        run.main(QUICK_BANDITS + ["--out", str(out), "--load", str(tmp_path / "other" / "checkpoint.npz")])
    assert e.value.code == 2 and "that stopped, and --load" in capsys.readouterr().err
    assert (out / "checkpoint.npz").read_bytes() == kept["checkpoint.npz"]
    # a folder whose run cannot be read is kept too
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "results.json").write_text("{not json")
    with pytest.raises(SystemExit) as e:
        run.main(QUICK_BANDITS + ["--out", str(tmp_path / "damaged")])
    assert e.value.code == 2 and "holds a run that cannot be read" in capsys.readouterr().err
    assert (tmp_path / "damaged" / "results.json").read_text() == "{not json"
    # --replace writes over it
    run.main(QUICK_BANDITS + ["--seed", "1", "--replace", "--out", str(out)])
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 1


def test_quick_and_maze_runs_have_folders_of_their_own(tmp_path):
    copy_of_the_code(tmp_path)
    (tmp_path / "my.txt").write_text(MY_MAZE)
    go = lambda *argv: lab(*argv, "--quiet", "--no-plots", cwd=tmp_path)[0]
    default = tmp_path / "runs" / "fourrooms"
    assert go("--quick", "--out", str(default)) == 0     # a run in the default run's folder
    kept = _kept(default)
    assert go("--quick") == 0
    assert go("--quick", "--maze", "my.txt") == 0
    assert _kept(default) == kept
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["fourrooms", "fourrooms-quick", "maze-my-quick"]
    for argv, folder in [([], "fourrooms"), (["--maze", str(tmp_path / "my.txt")], "maze-my"),
                         (["--env", "bandits"], "bandits"), (["--preset", "paper"], "paper")]:
        cfg, _, _ = run.parse_args(argv)
        assert store.default_out(cfg, quick=False) == str(ROOT / "runs" / folder)


def test_your_own_maze_runs_end_to_end_with_figures(tmp_path):
    f = tmp_path / "maze.txt"
    f.write_text(MY_MAZE)
    run.main(["--quick", "--quiet", "--maze", str(f), "--out", str(tmp_path), "--render"])
    res = json.loads((tmp_path / "results.json").read_text())
    fam = settings.make_family(settings.Settings(maze=str(f)))
    assert len(fam.test_tasks) >= 1 and not set(fam.test_tasks) & set(fam.train_tasks) and fam.name == str(f)
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
        settings.make_family(settings.Settings(maze=str(f)))
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
        settings.make_family(settings.Settings(maze=str(tmp_path / "none.txt")))


@pytest.mark.parametrize("flags, expected", [
    (["--subpolicies", "0"], "--subpolicies is 0; it must be at least 1"),
    (["--macro", "-1"], "--macro is -1"),
    (["--warmup", "-2"], "--warmup is -2"),
    (["--joint", "0"], "--joint is 0"),
    (["--eval-seeds", "0"], "--eval-seeds is 0"),
    (["--eval-iters", "0"], "--eval-iters is 0"),
    (["--slip", "1"], "--slip is 1.0; it is a probability in [0, 1)"),
    (["--slip", "-0.1"], "--slip is -0.1"),
    (["--env", "mujoco"], "--env 'mujoco' is not a task family here; choose one of fourrooms, rooms, bandits"),
    (["--eval-only"], "--eval-only evaluates a trained checkpoint: give it with --load FILE"),
    (["--eval-seeds", "three"], "invalid int value: 'three'"),
    (["--max-steps", "100"], "--steps is 64; it must be at least an episode's length, T = 100"),
    (["--preset", "paper", "--env", "bandits"], "--preset paper is for --env fourrooms"),
    (["--preset", "large"], "--preset 'large' is not a preset here"),
    (["--methods", "mlsh", "ppo"], "--methods mlsh ppo: choose one or more of mlsh, mlsh_options, flat, shared, "
                                   "random_subs"),
    (["--methods", "shared"], "shared needs flat too"),
    (["--eval-split", "train"], "--eval-split train: choose test or validation"),
    (["--env", "rooms", "--rooms", "1"], "rooms is 1; a room maze has at least 2 x 2 rooms"),
    (["--reward", "stay"], "--reward 'stay': choose reach"),
    (["--random-subs-master", "flat"], "--random-subs-master 'flat': choose options"),
    (["--master", "paper"], "unrecognized arguments: --master paper"),      # MLSH is the paper's master: no choice
    (["--seed", "-1"], "--seed is -1; it must be 0 or more"),
    (["--macro", "500"], "--macro is 500; it must be at most an episode's length, T = 50"),
    (["--preset", "paper", "--macro", "101"], "--macro is 101; it must be at most an episode's length, T = 100"),
    (["--second-move", "1"], "--second-move is 1.0; it is a probability in [0, 1)"),
    (["--random-start", "--start-cell", "62"], "--random-start and --start-cell 62: choose one"),
    (["--start-cell", "104"], "start cell 104: the maze's free cells are numbered 0 to 103"),
    (["--goals", "68,80/x"], "--goals 68,80/x: give cell numbers as TRAIN/TEST"),
    (["--goals", "1/2/3"], "--goals 1/2/3: give cell numbers as TRAIN/TEST"),
    (["--goals", "68,103/103"], "share some: hold the test goals out"),
    (["--goals", "0/103"], "training goals [0]: give one or more free cells, numbered 0 to 103, other than "
                           "the start cell 0"),
    (["--preset", "paper-code", "--eval-split", "validation"], "--eval-split validation: these tasks have no "
                                                               "validation split"),
    (["--flat-lr", "0.01", "--flat-lrs", "0.03"], "--flat-lr and --flat-lrs: give one"),
    (["--flat-lrs", "0.003", "0.03"], "--flat-lrs 0.003 0.03 leaves out flat PPO's rate 0.01, the one reported"),
    (["--env", "bandits", "--family", "x:Y"], "--env and --family: choose one"),
    (["--family", "no_such_module:Tasks"], "--family no_such_module:Tasks: ModuleNotFoundError"),
    (["--family", "envs:Maze"], "--family envs:Maze is not a task family: subclass envs.TaskFamily"),
    (["--family", "envs:GoalTasks", "--preset", "paper"], "--preset names settings of the built-in families"),
])
def test_bad_flags_are_refused_before_training(capsys, flags, expected, tmp_path):
    with pytest.raises(SystemExit) as e:
        run.main(flags + ["--quick", "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lab: ") and expected in err and err.count("\n") == 1, err   # one line, no usage block
    assert not (tmp_path / "out").exists()                    # and nothing written


ACTING = {  # for each row of settings.ACTS: flags that give it where it cannot act
    "random_subs_master": ["--methods", "flat", "--random-subs-master", "paper"],
    "interrupt": ["--methods", "mlsh", "flat", "--interrupt", "0.2"],
    "flat_lrs": ["--methods", "mlsh", "--flat-lrs", "0.1"], "flat_lr": ["--methods", "mlsh", "--flat-lr", "0.1"],
    "render": ["--methods", "flat", "--render"],
    **{name: ["--eval-only", "--load", "c.npz", "--" + name.replace("_", "-"), "3"]
       for name in ("rounds", "tasks", "warmup", "joint", "sub_lr", "sub_ent")},
}
NOT_TAKEN = {  # a task setting the chosen family's constructor does not take
    "rooms": ["--rooms", "4"], "maze": ["--env", "rooms", "--maze", "lab/mazes/example.txt"],
    "random_start": ["--env", "bandits", "--random-start"], "reward": ["--env", "bandits", "--reward", "every_step"],
    "start_cell": ["--env", "bandits", "--start-cell", "3"], "goals": ["--env", "rooms", "--goals", "103"],
    "second_move": ["--env", "bandits", "--second-move", "0.3"],
}


def test_every_setting_that_cannot_act_is_refused_and_a_presets_own_values_never_are(capsys, tmp_path):
    assert sorted(ACTING) == sorted(settings.ACTS)                   # a refusal test for every row
    for name, flags in {**ACTING, **NOT_TAKEN}.items():
        with pytest.raises(SystemExit) as e:
            run.main(flags + ["--quick", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"lab: --{name.replace('_', '-')} ") or err.startswith(f"lab: --{name.replace('_', '-')}:"), err
        assert not (tmp_path / "out").exists()
    # the same settings from a preset, or given where they act, pass
    for argv in [["--preset", "paper", "--interrupt", "0.3"], ["--env", "bandits"], ["--env", "rooms", "--rooms", "4"],
                 ["--methods", "random_subs", "--random-subs-master", "paper"], ["--env", "rooms", "--start-cell", "3"],
                 ["--load", "c.npz", "--rounds", "30"], ["--eval-only", "--load", "c.npz", "--eval-iters", "5"]]:
        run.parse_args(argv)
    assert capsys.readouterr().err == ""


def test_an_odd_but_legal_setting_gets_one_warning(capsys):
    cfg, _, _ = run.parse_args(["--clip", "1.5"])
    err = capsys.readouterr().err
    assert cfg.clip == 1.5 and err.startswith("lab: warning: --clip 1.5 is 1 or more") and err.count("\n") == 1
    run.parse_args(["--clip", "0.3"])
    assert capsys.readouterr().err == ""


def test_an_output_folder_that_cannot_be_made_or_written_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, says in [(blocker / "sub", "cannot write into the output folder"),
                      ("/proc/mlsh-run", "cannot make the output folder /proc/mlsh-run"),
                      (tmp_path / ("x" * 300), "cannot make the output folder")]:
        with pytest.raises(SystemExit) as e:
            run.main(QUICK_BANDITS + ["--out", str(out)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as e:                          # a checkpoint refused: no folder made
        run.main(QUICK_BANDITS + ["--out", str(tmp_path / "new"), "--load", str(tmp_path / "missing.npz")])
    assert e.value.code == 2 and "no such file" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_bad_checkpoints_are_refused(tmp_path, capsys):
    run.main(QUICK_BANDITS + ["--out", str(tmp_path)])
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
            run.main(QUICK_BANDITS + ["--out", str(tmp_path / "o"), "--eval-only", "--load", str(tmp_path / name)])
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
        run.main(QUICK_BANDITS + ["--rounds", "3", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lab: meta-training stopped") and "weights in round 2 became NaN or infinite" in err
    assert "last good checkpoint is intact" in err
    monkeypatch.setattr(envs.GridEnv, "step", real_step)
    cfg, _, fam = run.parse_args(QUICK_BANDITS + ["--rounds", "3"])
    ck = store.load_checkpoint(str(tmp_path / "checkpoint.npz"), cfg, fam, resume=True)
    assert len(ck["history"]) == 1 and all(np.isfinite(v).all() for v in ck["subs"].values())


def test_same_seed_same_checkpoint_and_results(tmp_path):
    for name in "ab":
        run.main(QUICK_BANDITS + ["--out", str(tmp_path / name)])
    strip = lambda r: {**{k: v for k, v in r.items() if k != "seconds"}, "config": {**r["config"], "out": ""}}
    a, b = (json.loads((tmp_path / name / "results.json").read_text()) for name in "ab")
    assert strip(a) == strip(b)
    with np.load(tmp_path / "a" / "checkpoint.npz") as x, np.load(tmp_path / "b" / "checkpoint.npz") as y:
        assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files if k != "meta")
        mx, my = json.loads(str(x["meta"])), json.loads(str(y["meta"]))
        assert mx["config"].pop("out") != my["config"].pop("out") and mx.pop("seconds") > 0 and my.pop("seconds") > 0
        assert mx == my                                       # all but the folder and the time it took


def test_settings_of_older_runs_read_as_they_are_now():
    old = {k: v for k, v in dataclasses.asdict(settings.Settings(eval_seeds=3)).items() if k not in ("eval_seeds", "reward")}
    now = settings.run_settings({**old, "seeds": 3})           # --seeds was renamed; --reward came later
    assert now["eval_seeds"] == 3 and "seeds" not in now and now["reward"] == "reach" and "out" not in now


# ---------------------------------------------------------------------------
# The README's algorithm box names code that exists
# ---------------------------------------------------------------------------

def _exists(name):
    """A name from the box: a function or class of mlsh.py or envs.py (envs.X), or Class.attribute /
    Class.field."""
    head, _, attr = name.removeprefix("envs.").partition(".")
    obj = getattr(mlsh, head, None) or getattr(envs, head, None)
    if obj is None or not attr:
        return obj is not None
    fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
    return hasattr(obj, attr) or attr in fields


def test_every_name_in_the_readme_box_exists():
    text = (ROOT / "README.md").read_text()
    box = text.split("<!-- algorithm box -->")[1].split("```")[1]
    names = []
    for line in box.strip().splitlines()[1:]:
        right = re.split(r"\s{2,}", line.strip())[-1]                 # the column of code names
        names += [re.sub(r"\(.*\)", "", n).strip() for n in right.split(",")]
    assert len(names) >= 15
    missing = [n for n in names if not _exists(n)]
    assert not missing, f"the README's box names what mlsh.py and envs.py do not have: {missing}"


def test_a_small_maze_still_gets_a_validation_split():
    fam = envs.GoalTasks(rows=envs.read_maze(ROOT / "lab" / "mazes" / "example.txt"))
    assert len(fam.val_tasks) == len(fam.test_tasks) == 12 and not set(fam.val_tasks) & set(fam.test_tasks)
    assert len(fam.train_tasks) == fam.maze.n_cells - 1 - 24


# ---------------------------------------------------------------------------
# The code a run was made by, a family of your own, results of an older format
# ---------------------------------------------------------------------------

def test_an_edited_mlsh_py_is_named_by_the_next_run_of_the_same_command_never_hidden(tmp_path):
    repo = copy_of_the_code(tmp_path / "repo")
    argv = ["--quick", "--env", "bandits", "--quiet", "--no-plots", "--out", str(tmp_path / "run")]
    assert lab(*argv, cwd=repo)[0] == 0
    code, out, _ = lab(*argv, cwd=repo)
    assert code == 0 and "a finished run of these settings and this code" in out       # the same code: finished
    src = (repo / "mlsh.py").read_text()
    (repo / "mlsh.py").write_text(src.replace('    """PPO-clip policy loss', '    """The PPO-clip policy loss'))
    assert lab(*argv, cwd=repo)[1].startswith("a finished run")                # a docstring is no change
    (repo / "mlsh.py").write_text(src.replace("np.clip(ratio, 1 - clip, 1 + clip)", "np.clip(ratio, 1 - 2 * clip, 1 + clip)"))
    kept = _kept(tmp_path / "run")
    code, out, err = lab(*argv, cwd=repo)
    assert code == 2 and err.count("\n") == 1 and "made by other code (mlsh.py has changed since)" in err, err
    assert "give --replace" in err and "another --out" in err and _kept(tmp_path / "run") == kept
    # a stopped run's checkpoint is not carried on by other code either
    (tmp_path / "run" / "results.json").unlink()
    code, _, err = lab(*argv, cwd=repo)
    assert code == 2 and "mlsh.py has changed since" in err
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == kept["checkpoint.npz"]
    # its skills may be evaluated by this code: the results record both
    code, _, err = lab(*argv[:-1], str(tmp_path / "eval"), "--eval-only", "--load", str(tmp_path / "run" / "checkpoint.npz"),
                       cwd=repo)
    assert code == 0, err
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["code"]["mlsh.py"] != res["skills_code"]["mlsh.py"] and res["code"]["envs.py"] == res["skills_code"]["envs.py"]
    assert (tmp_path / "eval" / "results.json").exists() and lab(*argv, "--replace", cwd=repo)[0] == 0


TOY_ROWS = ["##########", "#S.......#", "#####.####", "#####...##", "##########"]
TOY = """\
import envs


class Corridor(envs.GoalTasks):
    \"\"\"Goal cells of a corridor with a room at its end: a family of one's own.\"\"\"

    settings = dict(subpolicies=2, macro=3, flat_lr=0.03)

    def __init__(self, max_steps=24):
        super().__init__(rows=["##########", "#S.......#", "#####.####", "#####...##", "##########"],
                         max_steps=max_steps, n_test=2, min_dist=5, name="corridor")
"""


def test_a_task_family_of_ones_own_runs_end_to_end_and_resumes(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "toy.py").write_text(TOY)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "mine")}
    argv = ["--family", "toy:Corridor", "--quick", "--rounds", "3", "--out", str(tmp_path / "run")]
    code, out, err = lab(*argv, "--max-steps", "30", "--no-plots", "--quiet", cwd=ROOT, env=env)
    assert code == 0, err
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (res["config"]["family"], res["config"]["subpolicies"], res["config"]["macro"], res["config"]["max_steps"]) \
        == ("toy:Corridor", 2, 3, 30) and set(res["code"]) == {"mlsh.py", "envs.py", "toy.py"}
    assert set(res["methods"]) == set(settings.METHODS) and res["reach"]["mlsh"]["best_score"]["mean"] >= 0
    code, _, err = lab(*argv, "--slip", "0.1", cwd=ROOT, env=env)
    assert code == 2 and "--slip: the toy:Corridor family takes no such setting" in err
    # meta-trained for 2 rounds, then carried on from its checkpoint to 3: the same run as in one go
    part = ["--family", "toy:Corridor", "--quick", "--max-steps", "30", "--no-plots", "--out", str(tmp_path / "part")]
    assert lab(*part, "--rounds", "2", cwd=ROOT, env=env)[0] == 0
    code, out, err = lab(*part, "--rounds", "3", "--load", str(tmp_path / "part" / "checkpoint.npz"), cwd=ROOT, env=env)
    assert code == 0 and out.startswith(f"resuming round 3 of 3 from {tmp_path / 'part' / 'checkpoint.npz'}"), out + err
    whole, carried = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("run", "part"))
    assert carried["meta_training"] == whole["meta_training"] and carried["methods"] == whole["methods"]


class Corridor(envs.GoalTasks):
    """A family added to envs.FAMILIES, with no preset of the lab's: its own settings are the run's."""

    settings = dict(subpolicies=2, macro=3)

    def __init__(self, max_steps=24):
        super().__init__(rows=TOY_ROWS, max_steps=max_steps, n_test=2, min_dist=5, name="corridor")


def test_a_family_named_in_envs_families_needs_no_preset_of_the_lab(monkeypatch, tmp_path):
    monkeypatch.setitem(envs.FAMILIES, "corridor", Corridor)
    cfg, _, family = run.parse_args(["--env", "corridor", "--quick"])
    assert (cfg.env, cfg.preset, cfg.subpolicies, cfg.macro, family.name) == ("corridor", "", 2, 3, "corridor")
    assert store.default_out(cfg, quick=True) == str(ROOT / "runs" / "corridor-quick")
    run.main(["--env", "corridor", "--quick", "--quiet", "--no-plots", "--max-steps", "30", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text())["config"]["max_steps"] == 30


def _old_format(results):
    """A results.json as the code before the format version wrote it, with the options master as 'mlsh'."""
    old = json.loads(json.dumps(results))
    old.pop("format"), old.pop("code")
    old["methods"] = {{"mlsh": "mlsh_paper", "mlsh_options": "mlsh"}.get(m, m): r for m, r in old["methods"].items()}
    old["config"]["master"] = old["config"].pop("random_subs_master")
    old["config"]["methods"] = [m for m in old["config"]["methods"] if m != "mlsh_options"]   # 'mlsh': both then
    r = old["reach"]
    old["reach"] = {"best_score": r["mlsh_options"]["best_score"], "best_success": r["mlsh_options"]["best_success"],
                    "master_visit": r["mlsh_options"]["random_meets"], "walk_visit": r["random_walk_meets"],
                    "skills_only": {k: r["mlsh"][k] for k in ("best_score", "best_success")}}
    return old


def test_results_of_the_older_names_are_read_through_the_map_never_under_the_wrong_name(tmp_path, capsys):
    run.main(["--quick", "--quiet", "--no-plots", "--out", str(tmp_path / "new")])
    new = json.loads((tmp_path / "new" / "results.json").read_text())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(_old_format(new)))
    read = store.read_results(tmp_path / "old")
    assert read["methods"] == new["methods"] and read["config"]["random_subs_master"] == "options"
    assert read["reach"]["mlsh_options"] == new["reach"]["mlsh_options"]
    assert read["reach"]["mlsh"]["best_score"] == new["reach"]["mlsh"]["best_score"]
    # an older run whose master was the paper's: its 'mlsh' is the paper's master, and it has no options master
    paper = _old_format(new)
    paper["config"]["master"] = "paper"
    paper["methods"] = {"mlsh": new["methods"]["mlsh"], "flat": new["methods"]["flat"]}
    assert store.upgrade(paper)["methods"] == {"mlsh": new["methods"]["mlsh"], "flat": new["methods"]["flat"]}
    with pytest.raises(ValueError, match="results of format 3: this code reads formats 1 and 2"):
        store.upgrade({**new, "format": 3})
    # the same command on an older run's folder names it as made by other code, and replaces nothing
    with pytest.raises(SystemExit) as e:
        run.main(["--quick", "--quiet", "--no-plots", "--out", str(tmp_path / "old")])
    assert e.value.code == 2 and "an older run, whose code is not recorded" in capsys.readouterr().err


def test_the_fingerprint_of_two_runs_matches_method_by_method_under_the_map(tmp_path):
    from lab import fingerprint
    run.main(["--quick", "--quiet", "--no-plots", "--out", str(tmp_path / "new")])
    new = json.loads((tmp_path / "new" / "results.json").read_text())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(_old_format(new)))
    rows, same = fingerprint.compare(tmp_path / "old", tmp_path / "new")
    assert same and [r[0] for r in rows] == ["mlsh", "mlsh_options", "flat", "meta-training"]
    assert all(r[1] == r[2] for r in rows)
    moved = _old_format(new)
    moved["methods"]["mlsh"]["curve"][-1] += 0.001       # the options master's last point, in the old names
    (tmp_path / "old" / "results.json").write_text(json.dumps(moved))
    rows, same = fingerprint.compare(tmp_path / "old", tmp_path / "new")
    assert not same and [r[0] for r in rows if r[1] != r[2]] == ["mlsh_options"]
    r = subprocess.run([sys.executable, "-m", "lab.fingerprint", str(tmp_path / "old"), str(tmp_path / "new")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "DIFFERENT" in r.stdout and "they differ" in r.stdout
