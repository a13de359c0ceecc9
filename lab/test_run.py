"""Tests of what runs the algorithm: the command line (run.py), settings and presets (settings.py),
checkpoints and run folders (store.py), the measures (measures.py), figures (plots.py), every error
message in the README, and the README's names.

Run: python -m pytest -q
"""
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import envs
from lab import measures
import mlsh
from lab import run
from lab import settings
from lab import store

HERE = Path(__file__).resolve().parent
PROGRAM = ["mlsh.py", "envs.py", "run.py", "settings.py", "store.py", "measures.py", "plots.py"]   # what runs
MY_MAZE = """\
###########
#S....#...#
#.###.#.#.#
#...#...#.#
###.#####.#
#.........#
###########
"""


def _fixed_skills(fam, actions, hidden=8):
    """Sub-policies that always take one action each, whatever they see (a huge bias on that action)."""
    p = mlsh.mlp_init(np.random.default_rng(0), len(actions), [fam.obs_dim, hidden, 4], dtype=np.float64)
    p["W1"][:] = 0.0
    p["b1"][:] = -50.0
    p["b1"][np.arange(len(actions)), 0, actions] = 50.0
    return mlsh.Net(p, 0.0)


def test_rooms_preset_scales_the_episode_with_the_maze():
    for R, T, S in [(2, 50, 64), (3, 112, 128), (4, 200, 256), (5, 312, 320)]:
        cfg, _ = run.parse_args(["--env", "rooms", "--rooms", str(R)])
        assert (cfg.preset, cfg.rooms, cfg.max_steps, cfg.steps, cfg.macro) == ("rooms", R, T, S, 5)
        assert settings.make_family(cfg).maze.n_cells == envs.RoomTasks(R).maze.n_cells
    cfg, _ = run.parse_args(["--env", "rooms", "--rooms", "4", "--max-steps", "100"])
    assert (cfg.max_steps, cfg.steps) == (100, 256)            # a flag given wins over the rule


@pytest.mark.parametrize("reward, start", [("reach", -1), ("every_step", -1), ("every_step", 62)])
def test_reach_with_primitives_can_always_do_the_best(reward, start):
    # primitives alone can take the shortest path (and then stay, bumping, where the reward pays for it)
    cfg = settings.Settings(max_steps=12, macro=4, reward=reward, start_cell=start)
    fam = settings.make_family(cfg)
    maze, s = fam.maze, fam.start_cell
    got = measures.reach(cfg, fam, _fixed_skills(fam, [1, 2, 0]), rollouts=1)
    near = (maze.dist[s] <= 12) & (np.arange(maze.n_cells) != s)
    assert s == (62 if start == 62 else maze.start) and np.isnan(got["best_score"][s])
    assert np.allclose(got["best_score"][near], 1.0) and np.allclose(got["best_success"][near], 1.0)
    only = got["skills_only"]["best_score"]
    assert (only[near] <= 1.0 + 1e-12).all() and (only[near] < 1.0).any()


def test_reach_is_the_best_over_every_sequence_of_choices():
    # deterministic skills from a fixed start: the best master is the best sequence of K^(T/N) choices
    cfg = settings.Settings(max_steps=12, macro=4, master="paper")
    fam = settings.make_family(cfg)
    maze = fam.maze
    subs = _fixed_skills(fam, [1, 2, 0])                          # right, down, up
    got = measures.reach(cfg, fam, subs, rollouts=1)
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
    cfg = settings.Settings(max_steps=12, macro=4, reward="every_step", master="paper")
    fam = settings.make_family(cfg)
    got = measures.reach(cfg, fam, subs, rollouts=1)
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
    assert res["config"]["env"] == "bandits"
    for name in ["mlsh", "flat", "shared", "random_subs"]:
        r = res["methods"][name]
        assert set(r) >= {"auc", "auc_ci", "curve", "iters_to_80"}
        assert r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1]
        assert len(r["curve"]) == res["config"]["eval_iters"]
    assert np.array(res["skills_alone"]["success"]).shape == (res["config"]["subpolicies"], 2)


def test_methods_and_the_validation_split(tmp_path):
    run.main(["--quick", "--methods", "mlsh", "random_subs", "--eval-split", "validation", "--quiet",
               "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["methods"]) == {"mlsh", "mlsh_paper", "random_subs"}      # the paper's master beside MLSH's
    assert res["skills_alone"]["tasks"] == envs.GoalTasks().val_tasks.tolist()
    assert (tmp_path / "curves.png").exists() and (tmp_path / "episode.png").exists()
    assert not list(tmp_path.glob("*.tmp"))      # each figure written through a temporary file


def test_presets_set_the_task_and_flags_still_win():
    cfg, _ = run.parse_args(["--preset", "paper"])
    assert (cfg.env, cfg.max_steps, cfg.macro, cfg.subpolicies, cfg.warmup, cfg.joint, cfg.layers) == \
        ("fourrooms", 100, 25, 4, 20, 30, 2) and cfg.copies * cfg.steps == 2048
    assert run.parse_args(["--preset", "paper", "--macro", "10"])[0].macro == 10
    assert run.parse_args(["--env", "bandits"])[0].preset == "bandits"
    # the default run: MLSH and flat PPO at its validated rate; the flags give the sweeps' full test
    cfg, _ = run.parse_args([])
    assert (cfg.methods, cfg.flat_lrs) == (("mlsh", "flat"), (0.01,))
    cfg, _ = run.parse_args(["--methods", "mlsh", "flat", "shared", "random_subs", "--flat-lrs", "0.003", "0.01"])
    assert (cfg.methods, cfg.flat_lrs) == (("mlsh", "flat", "shared", "random_subs"), (0.003, 0.01))
    assert run.parse_args(["--preset", "rooms"])[0].methods == settings.Settings().methods   # every baseline
    # the paper's task as its code ran it: the paper preset's learner, the code's start, goal and slip
    cfg, _ = run.parse_args(["--preset", "paper-code"])
    paper, _ = run.parse_args(["--preset", "paper"])
    assert {k: v for k, v in vars(cfg).items() if getattr(paper, k) != v} == \
        dict(preset="paper-code", start_cell=62, goals="103", second_move=1 / 3)
    fam = settings.make_family(cfg)
    assert fam.train_tasks.tolist() == fam.test_tasks.tolist() == [103] and fam.make([103]).start == 62
    cfg, _ = run.parse_args(["--preset", "paper-code", "--goals", "68,80,90/103", "--second-move", "0"])
    fam = settings.make_family(cfg)
    assert (fam.train_tasks.tolist(), fam.test_tasks.tolist(), fam.make([103]).second_move) == ([68, 80, 90], [103], 0)


def test_help_lists_every_config_field(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--help"])
    text = capsys.readouterr().out
    helps = run.field_help()
    missing = [f.name for f in dataclasses.fields(settings.Settings) if not helps.get(f.name)]
    assert not missing, f"settings without the one-line comment that --help shows: {missing}"
    # every preset's default where they differ, Four Rooms' among them; one default for --out
    flat = " ".join(text.split())
    assert "--sub-lr SUB_LR Adam step for φ (the paper's 3e-4 was too slow: RESULTS.md) (default: fourrooms 0.001, " \
           "bandits 0.003, paper 0.003, rooms 0.001, paper-code 0.003*)" in flat
    assert "(default: fourrooms 50, bandits 50, paper 100, rooms 112 (follows --rooms), paper-code 100*)" in flat
    assert "--hidden HIDDEN units per hidden layer (tanh) (default: 64)" in flat
    out_help = flat[flat.index("--out OUT folder"):flat.index("--quick a tiny")]
    assert out_help.count("default") == 1 and "runs/<preset>" in out_help


# ---------------------------------------------------------------------------
# Checkpoints, your own maze, figures
# ---------------------------------------------------------------------------

QUICK_BANDITS = ["--quick", "--env", "bandits", "--quiet", "--no-plots"]


def test_checkpoint_round_trip_gives_the_same_sub_policies(tmp_path):
    cfg, _ = run.parse_args(QUICK_BANDITS)
    fam = settings.make_family(cfg)
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
    cfg, _ = run.parse_args(QUICK_BANDITS + ["--hidden", "32"])
    with pytest.raises(ValueError, match="hidden is 64 there, 32 here"):
        store.load_checkpoint(ckpt, cfg, settings.make_family(cfg), resume=False)
    cfg, _ = run.parse_args(["--quick"])                   # Four Rooms: another env, another maze
    with pytest.raises(ValueError, match="env is 'bandits' there, 'fourrooms' here"):
        store.load_checkpoint(ckpt, cfg, settings.make_family(cfg), resume=False)


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
            assert f"resume with: python mlsh.py {' '.join(argv)}" in said     # the same command
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
    assert said.startswith(f"a finished run of these settings is in {out}: nothing to do (give --replace")
    assert "mlsh " in said and _kept(out) == kept
    # extended with --load, stopped, and carried on by the printed command (which loads the run's own checkpoint)
    _stop_after_round(monkeypatch, 6)
    with pytest.raises(SystemExit) as e:
        run.main(QUICK_BANDITS + ["--rounds", "7", "--out", str(tmp_path / "more"), "--load", str(ckpt)])
    assert e.value.code == 130 and _rounds(tmp_path / "more" / "checkpoint.npz") == 6 and _rounds(ckpt) == 5
    again = capsys.readouterr().out.split("resume with: python mlsh.py ")[1].split()
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
                             "--methods", "mlsh", "--master", "options"]
    run.main(again)
    config = json.loads((tmp_path / "b" / "results.json").read_text())["config"]
    assert (config["warmup"], config["joint"], config["rounds"], config["master"]) == (3, 1, 2, "options")
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
    assert f"resume with: python mlsh.py {' '.join(again)}" in out    # the same command
    assert sorted(os.listdir(part)) == [store.KEPT] and len(store.read_kept(part / store.KEPT)[1]) == 2
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
    for f in PROGRAM:
        (tmp_path / f).write_text((HERE / f).read_text())
    (tmp_path / "my.txt").write_text(MY_MAZE)
    go = lambda *argv: subprocess.run([sys.executable, "mlsh.py", *argv, "--quiet", "--no-plots"], cwd=tmp_path,
                                      capture_output=True, text=True, timeout=600)
    default = tmp_path / "runs" / "fourrooms"
    assert go("--quick", "--out", str(default)).returncode == 0     # a run in the default run's folder
    kept = _kept(default)
    assert go("--quick").returncode == 0
    assert go("--quick", "--maze", "my.txt").returncode == 0
    assert _kept(default) == kept
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["fourrooms", "fourrooms-quick", "maze-my-quick"]
    for argv, folder in [([], "fourrooms"), (["--maze", "my.txt"], "maze-my"), (["--env", "bandits"], "bandits"),
                         (["--preset", "paper"], "paper")]:
        cfg, _ = run.parse_args(argv)
        assert store.default_out(cfg, quick=False).endswith(os.path.join("runs", folder))


def test_your_own_maze_runs_end_to_end_with_figures(tmp_path):
    f = tmp_path / "maze.txt"
    f.write_text(MY_MAZE)
    run.main(["--quick", "--quiet", "--maze", str(f), "--out", str(tmp_path), "--render"])
    res = json.loads((tmp_path / "results.json").read_text())
    fam = settings.make_family(settings.Settings(maze=str(f)))
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
    (["--reward", "stay"], "--reward 'stay': choose reach"),
    (["--master", "flat"], "--master 'flat': choose options"),
    (["--seed", "-1"], "--seed is -1; it must be at least 0"),
    (["--macro", "500"], "--macro 500 is longer than an episode (--max-steps 50)"),
    (["--preset", "paper", "--macro", "101"], "--macro 101 is longer than an episode (--max-steps 100)"),
    (["--second-move", "1"], "--second-move is 1.0; it is a probability in [0, 1)"),
    (["--random-start", "--start-cell", "62"], "--random-start and --start-cell 62: choose one"),
    (["--start-cell", "104"], "start cell 104: the maze's free cells are numbered 0 to 103"),
    (["--goals", "68,80/x"], "--goals 68,80/x: give cell numbers as TRAIN/TEST"),
    (["--goals", "1/2/3"], "--goals 1/2/3: give cell numbers as TRAIN/TEST"),
    (["--goals", "68,103/103"], "share some: hold the test goals out"),
    (["--goals", "0/103"], "training goals [0]: give one or more free cells, numbered 0 to 103, other than "
                           "the start cell 0"),
    (["--preset", "paper-code", "--eval-split", "validation"], "--goals 103 has no validation split"),
])
def test_bad_flags_are_refused_before_training(capsys, flags, expected, tmp_path):
    with pytest.raises(SystemExit) as e:
        run.main(flags + ["--quick", "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1          # one line, no usage block, no traceback
    assert not (tmp_path / "out").exists()                    # and nothing written


ACTING = {  # for each row of settings.ACTS: flags that give it where it cannot act
    "rooms": ["--rooms", "4"], "maze": ["--env", "rooms", "--maze", "mazes/example.txt"],
    "random_start": ["--env", "bandits", "--random-start"], "reward": ["--env", "bandits", "--reward", "every_step"],
    "master": ["--methods", "flat", "--master", "paper"], "interrupt": ["--master", "paper", "--interrupt", "0.2"],
    "flat_lrs": ["--methods", "mlsh", "--flat-lrs", "0.1"], "render": ["--methods", "flat", "--render"],
    "start_cell": ["--env", "rooms", "--start-cell", "3"], "goals": ["--env", "rooms", "--goals", "103"],
    "second_move": ["--env", "bandits", "--second-move", "0.3"],
    **{name: ["--eval-only", "--load", "c.npz", "--" + name.replace("_", "-"), "3"]
       for name in ("rounds", "tasks", "warmup", "joint", "sub_lr", "sub_ent")},
}


def test_every_setting_that_cannot_act_is_refused_and_a_presets_own_values_never_are(capsys, tmp_path):
    assert sorted(ACTING) == sorted(settings.ACTS)                   # a refusal test for every row
    for name, flags in ACTING.items():
        with pytest.raises(SystemExit) as e:
            run.main(flags + ["--quick", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"mlsh: --{name.replace('_', '-')} "), err
        assert not (tmp_path / "out").exists()
    # the same settings from a preset, or given where they act, pass
    for argv in [["--preset", "paper", "--master", "paper"], ["--env", "bandits"], ["--env", "rooms", "--rooms", "4"],
                 ["--preset", "paper", "--interrupt", "0.3"], ["--methods", "mlsh", "--master", "paper"],
                 ["--load", "c.npz", "--rounds", "30"], ["--eval-only", "--load", "c.npz", "--eval-iters", "5"]]:
        run.parse_args(argv)
    assert capsys.readouterr().err == ""


def test_an_odd_but_legal_setting_gets_one_warning(capsys):
    cfg, _ = run.parse_args(["--clip", "1.5"])
    err = capsys.readouterr().err
    assert cfg.clip == 1.5 and err.startswith("mlsh: warning: --clip 1.5 is 1 or more") and err.count("\n") == 1
    run.parse_args(["--clip", "0.3"])
    assert capsys.readouterr().err == ""


def test_an_output_folder_that_cannot_be_written_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        run.main(QUICK_BANDITS + ["--out", str(blocker / "sub")])
    assert e.value.code == 2 and "cannot write into the output folder" in capsys.readouterr().err
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
    assert "weights in round 2 became NaN or infinite" in err and "last good checkpoint is intact" in err
    monkeypatch.setattr(envs.GridEnv, "step", real_step)
    cfg, _ = run.parse_args(QUICK_BANDITS + ["--rounds", "3"])
    ck = store.load_checkpoint(str(tmp_path / "checkpoint.npz"), cfg, settings.make_family(cfg), resume=True)
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
    """A name from the box: a function or class of mlsh.py, envs.py (envs.X) or settings.py, or
    Class.attribute / Class.field."""
    head, _, attr = name.removeprefix("envs.").partition(".")
    obj = getattr(mlsh, head, None) or getattr(envs, head, None) or getattr(settings, head, None)
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
    assert not missing, f"the README's box names what mlsh.py, envs.py and settings.py do not have: {missing}"




def test_a_small_maze_still_gets_a_validation_split():
    fam = envs.GoalTasks(rows=envs.read_maze(Path(__file__).resolve().parent / "mazes" / "example.txt"))
    assert len(fam.val_tasks) == len(fam.test_tasks) == 12 and not set(fam.val_tasks) & set(fam.test_tasks)
    assert len(fam.train_tasks) == fam.maze.n_cells - 1 - 24


