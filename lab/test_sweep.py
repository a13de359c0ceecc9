"""Tests of the lab's sweeps (python -m lab.sweep): many meta-training seeds, one table.

Run from the repository's root: python -m pytest -q
"""
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

from lab import plots, run, store, sweep
from lab.test_run import copy_of_the_code

ROOT = Path(store.ROOT)


# ---------------------------------------------------------------------------
# sweep.py: many meta-training seeds, one table
# ---------------------------------------------------------------------------

QUICK_SWEEP = ["--quick", "--no-plots"]


def _sweep(*argv):
    """python -m lab.sweep as a user runs it: (exit code, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "lab.sweep", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Seeds 0 and 1 of the quick budget, two at a time, and the same two runs of python -m lab by hand."""
    root = tmp_path_factory.mktemp("sweep")
    code, out, err = _sweep("--seeds", "0-1", "--jobs", "2", *QUICK_SWEEP, "--out", str(root / "jobs2"))
    assert code == 0, out + err
    for s in (0, 1):
        run.main(QUICK_SWEEP + ["--quiet", "--seed", str(s), "--out", str(root / f"hand-{s}")])
    return root


def _numbers(res):
    return {m: {k: r[k] for k in ("auc", "auc_ci", "success_auc", "curve", "iters_to_80")}
            for m, r in res["methods"].items()}, res["skills_alone"]


def _untimed(sweep_json):
    """A sweep.json's rows without the seconds each run took, which no two runs share."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in sweep_json["runs"]]


def test_sweep_gives_the_numbers_of_mlsh_run_by_hand(swept):
    for s in (0, 1):
        by_sweep = json.loads((swept / "jobs2" / f"seed-{s}" / "results.json").read_text())
        by_hand = json.loads((swept / f"hand-{s}" / "results.json").read_text())
        assert by_sweep["config"]["seed"] == s
        assert _numbers(by_sweep) == _numbers(by_hand)
    summary = json.loads((swept / "jobs2" / "sweep.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [0, 1] and summary["summary"]["n"] == 2
    assert summary["flags"] == QUICK_SWEEP and summary["config"]["rounds"] == run.QUICK["rounds"]
    assert "| seed | mlsh | mlsh_options | flat (lr) |" in (swept / "jobs2" / "sweep.md").read_text()
    assert summary["format"] == sweep.FORMAT and summary["runs"][0]["code"] == json.loads(
        (swept / "hand-0" / "results.json").read_text())["code"]
    assert (swept / "jobs2" / "sweep.png").stat().st_size > 1000


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
    assert made["summary"] == swept_json["summary"] and _untimed(made) == _untimed(swept_json)
    assert made["config"] == swept_json["config"]
    assert sweep.settings(dataclasses.asdict(run.parse_args(made["flags"])[0])) == made["config"]
    assert sweep.code_line(made["runs"]) == ""                 # one code made them all


def test_the_listed_commands_run_anywhere_give_the_sweeps_table_bit_for_bit(swept, tmp_path):
    code, out, err = _sweep("--seeds", "0-1", *QUICK_SWEEP, "--list", "--out", str(tmp_path / "cluster"))
    assert code == 0 and not (tmp_path / "cluster").exists(), out + err     # a listing runs nothing
    commands = out.splitlines()
    assert [c.split()[:3] for c in commands] == [["python", "-m", "lab"]] * 2 and "--seed 1 --out" in commands[1]
    jobs = [subprocess.Popen(command.replace("python", sys.executable, 1), shell=True, cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for command in commands]
    for job in jobs:                             # as a cluster's jobs would run each line, at the root, side by side
        assert job.wait(timeout=600) == 0, job.communicate()[0]
    code, out, err = _sweep("--summarise", *(str(tmp_path / "cluster" / f"seed-{s}") for s in (0, 1)))
    assert code == 0, out + err
    def table(folder):                            # from the table on (summarise spells --quick's flags out)
        text = (folder / "sweep.md").read_text()
        return re.sub(r"^`python -m lab.sweep .*$", "", text[text.index("| seed |"):], flags=re.M)

    assert table(tmp_path / "cluster") == table(swept / "jobs2") and "| mean |" in table(swept / "jobs2")
    made, swept_json = (json.loads((d / "sweep.json").read_text()) for d in (tmp_path / "cluster", swept / "jobs2"))
    assert _untimed(made) == _untimed(swept_json) and made["summary"] == swept_json["summary"]
    assert made["runs"][0]["cpu"] == made["runs"][1]["cpu"] != "not recorded"


def test_flat_ppo_taken_from_another_sweep_is_the_flat_ppo_these_settings_would_run(swept, tmp_path, capsys):
    # flat PPO learns from scratch: K does not change it, bit for bit, so a grid over K may share it
    run.main(QUICK_SWEEP + ["--quiet", "--subpolicies", "2", "--methods", "flat", "--out", str(tmp_path / "flat-K2")])
    by_hand = json.loads((tmp_path / "flat-K2" / "results.json").read_text())["methods"]["flat"]
    source = json.loads((swept / "jobs2" / "seed-0" / "results.json").read_text())["methods"]["flat"]
    assert by_hand == source
    code, out, err = _sweep("--seeds", "0-1", *QUICK_SWEEP, "--methods", "mlsh", "--subpolicies", "2",
                            "--flat-from", str(swept / "jobs2"), "--out", str(tmp_path / "K2"))
    assert code == 0, out + err
    made = json.loads((tmp_path / "K2" / "sweep.json").read_text())
    jobs2 = json.loads((swept / "jobs2" / "sweep.json").read_text())
    assert [r["methods"]["flat"] for r in made["runs"]] == [r["methods"]["flat"] for r in jobs2["runs"]]
    assert made["summary"]["mlsh"]["above_flat"] is not None and "Flat PPO: each seed's from" in out
    assert "flat" not in json.loads((tmp_path / "K2" / "seed-0" / "results.json").read_text())["methods"]
    for argv, says in [(["--hidden", "32", "--methods", "mlsh"], "is not flat PPO of these settings (hidden is 64 there"),
                       (["--subpolicies", "2"], "leave flat out of --methods"),
                       (["--seeds", "0-2", "--methods", "mlsh"], "no finished seed 2 there")]:
        seeds = [] if "--seeds" in argv else ["--seeds", "0-1"]
        with pytest.raises(SystemExit) as e:
            sweep.main(seeds + argv + QUICK_SWEEP + ["--flat-from", str(swept / "jobs2"), "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()


def test_compare_sets_sweeps_side_by_side_and_pools_a_settings_sweeps(swept, tmp_path):
    code, out, err = _sweep("--compare", f"one={swept / 'jobs2'}", f"twice={swept / 'jobs2'},{swept / 'jobs2'}",
                            "--out", str(tmp_path))
    assert code == 0, out + err
    one, twice = json.loads((tmp_path / "compare.json").read_text())["settings"]
    swept_json = json.loads((swept / "jobs2" / "sweep.json").read_text())
    summary, summary_config = swept_json["summary"], swept_json["config"]
    assert one["runs"] == 2 and twice["runs"] == 4
    for m in ("mlsh", "mlsh_options"):
        assert one[f"{m}_minus_flat"] == [summary[m]["minus_flat"], summary[m]["minus_flat_ci"]]
        assert one[f"{m}_above_flat"] == summary[m]["above_flat"] and \
            twice[f"{m}_above_flat"] == 2 * summary[m]["above_flat"]
    for m in ("mlsh", "mlsh_options", "flat"):
        assert one[m][0] == pytest.approx(summary["mean_auc"][m]) and twice[m][0] == pytest.approx(one[m][0])
    assert "| one | 2 |" in (tmp_path / "compare.md").read_text() and sweep.QUICK_NOTE in (tmp_path / "compare.md").read_text()
    q = run.QUICK
    assert one["env_steps"] == (q["warmup"] + q["joint"]) * q["tasks"] * q["copies"] * summary_config["steps"] * q["rounds"]
    assert one["seconds"] > 0 and 1 <= one["skills_used"][0] <= summary_config["subpolicies"] and 0 < one["skills_used"][1] <= 1
    assert (tmp_path / "compare.png").stat().st_size > 1000 and (tmp_path / "gaps.png").stat().st_size > 1000


def test_the_gaps_figure_has_a_panel_per_setting_when_the_names_are_values_of_a_few(tmp_path):
    assert plots.gap_panels(["K 2", "K 4", "W 0", "W 5", "rounds 40"]) == [
        ("K", [(0, "2"), (1, "4")]), ("W", [(2, "0"), (3, "5")]), ("rounds", [(4, "40")])]
    assert plots.gap_panels(["the code's task", "far goals", "near goals"]) == [
        ("", [(0, "the code's task"), (1, "far goals"), (2, "near goals")])]
    gap = lambda d: [d, [d - 0.1, d + 0.1]]
    data = [{"name": n, "mlsh_minus_flat": gap(-0.1), "mlsh_options_minus_flat": gap(0.2)} for n in ("K 2", "K 4", "W 0")]
    plots.plot_gaps(str(tmp_path / "gaps.png"), data)
    assert (tmp_path / "gaps.png").stat().st_size > 1000


@pytest.mark.parametrize("items, expected", [(["near"], "give each setting as NAME=DIR"),
                                             (["near=nowhere"], "holds no sweep.json")])
def test_compare_refuses_what_it_cannot_set_side_by_side(items, expected, tmp_path):
    code, out, err = _sweep("--compare", *items, "--out", str(tmp_path / "c"))
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c").exists()


def test_a_table_of_seeds_from_different_cpus_or_code_says_so():
    rows = [{"seed": 0, "cpu": "A"}, {"seed": 1, "cpu": "B"}, {"seed": 2, "cpu": "A"}]
    assert sweep.cpu_line(rows) == ("These seeds ran on 2 CPUs (A: seed 0, 2; B: seed 1): per-seed numbers "
                                    "differ between CPUs; read the summary over seeds.\n")
    assert sweep.cpu_line(rows[::2]) == ""
    code = [{"seed": 0, "code": {"mlsh.py": "a"}}, {"seed": 1, "code": {"mlsh.py": "b"}}, {"seed": 2, "code": None}]
    assert sweep.code_line(code).startswith("These seeds ran on 3 versions of the code (") and \
        "per-seed numbers differ between versions of the code" in sweep.code_line(code)
    assert sweep.code_line(code[:1]) == ""


def test_summary_takes_a_t_interval_of_the_paired_difference_over_seeds_and_counts_seeds_ahead_as_a_description():

    def run(seed, mlsh_ci, flat_ci, ahead_of):
        m = lambda ci: {"auc": sum(ci) / 2, "auc_ci": ci, "success_auc": 0.5, "iters_to_80": None}
        return {"seed": seed, "methods": {"mlsh": m(mlsh_ci), "mlsh_options": m([0.0, 0.1]),
                                          "flat": {**m(flat_ci), "lr": 0.01}, "shared": m([0.1, 0.2]),
                                          "random_subs": m([0.0, 0.1])}, "best_alone": 1.0,
                "ahead": {"mlsh": {b: b in ahead_of for b in ("flat", "shared", "random_subs")},
                          "mlsh_options": {b: False for b in ("flat", "shared", "random_subs")}}}
    rows = [run(0, [0.6, 0.8], [0.3, 0.5], {"flat", "shared", "random_subs"}),   # ahead of flat and of all
            run(1, [0.6, 0.8], [0.3, 0.5], {"flat", "random_subs"}),             # ahead of flat, not of shared
            run(2, [0.4, 0.6], [0.3, 0.5], set()),                               # ahead of none
            {"seed": 3, "error": "exit code 2: lab: meta-training stopped"}]
    s = sweep.summary(rows)
    m = s["mlsh"]
    assert (s["n"], s["failed"], m["above_flat"], m["above_all"]) == (3, 1, 2, 1)
    diffs = [0.3, 0.3, 0.1]
    half = 4.302652729911275 * np.std(diffs, ddof=1) / np.sqrt(3)          # t(0.975, 2 degrees of freedom)
    assert m["minus_flat"] == pytest.approx(np.mean(diffs)) and m["minus_flat_ci"] == pytest.approx(
        [np.mean(diffs) - half, np.mean(diffs) + half])
    assert s["mlsh_options"]["above_flat"] == 0 and s["mlsh_options"]["minus_flat"] < 0
    text = sweep.table(rows, s)
    assert "| 0 | **0.700 [0.600, 0.800]** |" in text and "| 2 | 0.500 [0.400, 0.600] |" in text
    assert "| 3 | failed: exit code 2" in text and "1 seed(s) failed" in text
    assert "3 seeds, mlsh: AUC minus flat's +0.233" in text and "), level; ahead of flat PPO on 2 of 3 seeds" in text
    assert m["ratio"] == pytest.approx((0.7 + 0.7 + 0.5) / 3 / 0.4) and m["twice_flat"] == 0
    twice = sweep.summary([run(0, [0.8, 0.9], [0.3, 0.5], {"flat"}), run(1, [0.6, 0.9], [0.3, 0.5], {"flat"})])
    assert twice["mlsh"]["twice_flat"] == 1                # 0.85 >= 2 x 0.4; 0.75 is not
    assert "mlsh at least twice flat PPO and ahead of it on 1 of 2 seeds" in sweep.table(rows[:1], twice)
    unknown = sweep.summary([{**r, "ahead": {}} for r in rows[:2]])      # runs that kept no scores
    assert unknown["mlsh"]["above_flat"] is None and "ahead of flat PPO on - of 2" in sweep.table(rows[:2], unknown)


def test_ahead_on_a_seed_is_a_paired_comparison_over_its_tasks(tmp_path):
    """A master whose every task's learners beat flat PPO's on the same task and stream is ahead on the
    seed, though its learners' spread (unpaired intervals) overlaps flat's."""
    rng = np.random.default_rng(0)
    task = rng.uniform(0.1, 0.9, size=(1, 8, 1))                           # tasks of very different difficulty
    flat = np.repeat(task + rng.normal(0, 0.01, (2, 8, 1)), 5, axis=2)     # (eval seeds, tasks, iterations)
    score = {"mlsh@0.01": flat + 0.03, "mlsh_options@0.01": flat - 0.03, "flat@0.01": flat}
    store.save_scores(str(tmp_path / store.SCORES), score, score, {"flat_lr": 0.01, "tasks": list(range(8))})
    ahead = sweep.paired_ahead({"folder": str(tmp_path)})
    assert ahead == {"mlsh": {"flat": True}, "mlsh_options": {"flat": False}}
    assert sweep.paired_ahead({"folder": str(tmp_path / "none")}) == {}


@pytest.mark.parametrize("argv, flags", [
    ([], []),
    (["--env", "rooms", "--rooms", "4", "--random-start"], ["--env", "rooms", "--rooms", "4", "--random-start"]),
    (["--preset", "rooms", "--rooms", "2", "--max-steps", "60"], ["--env", "rooms", "--rooms", "2", "--max-steps", "60"]),
    (["--env", "bandits", "--macro", "1"], ["--env", "bandits", "--macro", "1"]),
    (["--preset", "paper", "--sub-ent", "0.1"], ["--preset", "paper", "--sub-ent", "0.1"]),
    (["--eval-seeds", "3"], ["--eval-seeds", "3"]),                 # the evaluation seeds pass through
])
def test_the_flags_a_sweep_prints_give_its_settings_back(argv, flags):
    config = dataclasses.asdict(run.parse_args(argv)[0])
    assert sweep.flags_of(config) == flags           # only what differs from the preset (T and S follow --rooms)
    assert sweep.settings(dataclasses.asdict(run.parse_args(flags)[0])) == sweep.settings(config)


def test_a_sweep_has_a_folder_of_its_own_per_kind_of_run():
    for argv, grid, folder in [([], False, "sweep-fourrooms"), (["--maze", "lab/mazes/example.txt"], False,
                               "sweep-maze-example"), (["--env", "bandits"], True, "grid-bandits"),
                               (["--quick"], False, "sweep-fourrooms-quick")]:
        assert sweep.default_folder(run.parse_args(argv)[0], grid, "--quick" in argv).endswith(
            os.path.join("runs", folder))


def test_a_quick_sweep_leaves_a_real_sweeps_folder_as_it_was(swept, tmp_path):
    copy_of_the_code(tmp_path)
    real = tmp_path / "runs" / "sweep-fourrooms"                 # a real sweep's folder, with a finished seed
    (real / "seed-0").mkdir(parents=True)
    (real / "seed-0" / "results.json").write_text((swept / "hand-0" / "results.json").read_text())
    before = {p: p.read_bytes() for p in real.rglob("*") if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "lab.sweep", "--seeds", "0", "--quick"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {p: p.read_bytes() for p in real.rglob("*") if p.is_file()} == before
    quick = tmp_path / "runs" / "sweep-fourrooms-quick"
    assert (quick / "seed-0" / "results.json").exists() and "--quick: a smoke test" in r.stdout
    assert (quick / "sweep.md").read_text().startswith("**--quick: a smoke test; these numbers say nothing about MLSH**")
    assert json.loads((quick / "sweep.json").read_text())["quick"] is True


def test_seed_lists():
    assert sweep.parse_seeds("0-9") == list(range(10))
    assert sweep.parse_seeds("0,3,7") == [0, 3, 7]
    assert sweep.parse_seeds("7, 0-2,1") == [0, 1, 2, 7]


def test_a_failed_seed_is_a_row_and_the_others_go_on(tmp_path):
    code, out, err = _sweep("--seeds", "0-1", *QUICK_SWEEP, "--value-lr", "1e30", "--out", str(tmp_path))
    assert code == 1, out + err
    rows = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert [r["seed"] for r in rows] == [0, 1]
    assert all("NaN or infinite" in r["error"] for r in rows)
    assert "| 0 | failed: exit code 2: lab: meta-training stopped" in out


@pytest.mark.parametrize("how", ["ctrl-c", "kill in the background"])
def test_ctrl_c_keeps_finished_seeds_and_says_how_to_carry_on(tmp_path, how):
    argv = ["--seeds", "0-1", "--jobs", "1", *QUICK_SWEEP, "--env", "bandits", "--methods", "mlsh", "--rounds", "12",
            "--out", str(tmp_path)]
    # a shell starts a background job with Ctrl-C ignored; kill (SIGTERM) must still stop it, workers included
    background = how != "ctrl-c"
    p = subprocess.Popen([sys.executable, "-m", "lab.sweep", *argv], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         # Ctrl-C reaches a job in the foreground, whatever pytest itself inherited
                         # (pytest run from a script in the background ignores it, and so would the sweep)
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN if background else signal.SIG_DFL))
    while not (tmp_path / "seed-0" / "results.json").exists() and p.poll() is None:
        time.sleep(0.05)
    while not (tmp_path / "seed-1" / "checkpoint.npz").exists() and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM if background else signal.SIGINT)   # seed 1 is in round 2 of 12: a second or more to go
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 130, out
    assert "interrupted: 1 of 2 seeds are finished" in out and "carry on with: python -m lab.sweep --seeds 0-1" in out
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
    assert "| macro | mlsh | mlsh_options | flat | mlsh minus flat |" in (tmp_path / "grid.md").read_text()
    assert (tmp_path / "grid.png").exists()


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
    ([], "give --seeds to run a sweep, --summarise DIR ... to summarise run folders, or --compare"),
    (["--summarise", "nowhere"], "nowhere holds no results.json"),
    (["--compare", "a=x", "--seeds", "0"], "(one of the three)"),
    (["--compare", "a=x", "--macro", "5"], "--compare takes NAME=DIR[,DIR] items and --out only (--macro 5)"),
    (["--seeds", "0", "--grid", "macro"], "--grid 'macro': write NAME=V1,V2"),
    (["--seeds", "0", "--grid", "macro=1,,5"], "--grid 'macro=1,,5'"),
    (["--seeds", "0", "--macro", "5", "--grid", "macro=1,5"], "--macro is given both as a flag and in --grid"),
    (["--seeds", "0", "--grid", "macro=1,0"], "--macro is 0; it must be at least 1"),
    (["--seeds", "0", "--eval-seeds", "0"], "--eval-seeds is 0; it must be at least 1"),
    (["--seeds", "0", "--replace"], "--replace is not for a sweep"),
])
def test_sweep_refuses_bad_input_in_one_line_before_any_worker(argv, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(argv + (["--out", str(tmp_path / "out")] if "--summarise" not in argv else []))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sweep: ") and expected in err and err.count("\n") == 1, err
    assert not list(tmp_path.glob("out/seed-*"))


def test_summarise_refuses_folders_of_different_settings(swept, tmp_path, capsys):
    run.main(QUICK_SWEEP + ["--quiet", "--macro", "3", "--out", str(tmp_path / "other")])
    with pytest.raises(SystemExit) as e:
        sweep.main(["--summarise", str(swept / "hand-0"), str(tmp_path / "other"), "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "are runs of different settings (macro is 3 there, 5 here)" in err and err.count("\n") == 1


def test_a_sweep_refuses_a_folder_of_other_settings_or_code(swept, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(["--seeds", "0", *QUICK_SWEEP, "--macro", "3", "--out", str(swept / "jobs2")])
    assert e.value.code == 2
    assert "holds a run of other settings (macro is 5 there, 3 here)" in capsys.readouterr().err
    other = tmp_path / "other" / "seed-0"
    other.mkdir(parents=True)
    res = json.loads((swept / "jobs2" / "seed-0" / "results.json").read_text())
    (other / "results.json").write_text(json.dumps({**res, "code": {**res["code"], "mlsh.py": "0" * 16}}))
    with pytest.raises(SystemExit) as e:
        sweep.main(["--seeds", "0", *QUICK_SWEEP, "--out", str(tmp_path / "other")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "holds a run made by other code (mlsh.py has changed since)" in err, err


