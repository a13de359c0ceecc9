"""The statistics of a claim (lab/stats.py) and the tables made from kept scores (lab/report.py)."""
import itertools
import os

import numpy as np
import pytest
from scipy import stats as sps

from lab import report, stats, store
from mlsh import interval


# ---- The verdict's interval keeps its coverage ------------------------------------------------

NORMAL = lambda rng, shape: rng.normal(0.0, 0.1, shape)
SKEWED = lambda rng, shape: rng.gamma(4.0, 0.05, shape) - 0.2          # gamma, shape 4, mean 0


@pytest.mark.parametrize("seeds", [5, 10])
def test_the_verdicts_interval_covers_the_truth_at_five_and_ten_seeds(seeds):
    rng = np.random.default_rng(seeds)
    assert stats.coverage(seeds, NORMAL, rng, reps=4000) >= 0.93
    assert stats.coverage(seeds, SKEWED, rng, reps=4000) >= 0.90


def test_a_percentile_bootstrap_over_five_seed_means_covers_less():
    """Why the verdict is not a bootstrap over seeds: simulated alike, the percentile bootstrap over five seed
    means covers well under 95%."""
    assert stats.coverage(5, NORMAL, np.random.default_rng(1), reps=1000, method="bootstrap", boot=500) < 0.88


def test_t_interval_is_mlshs_for_one_sample_and_batches_alike():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7))
    mean, low, high = stats.t_interval(x)
    for i in range(3):
        m, (lo, hi) = interval(x[i])
        assert np.allclose([mean[i], low[i], high[i]], [m, lo, hi])
    m, lo, hi = stats.t_interval([0.4, 0.4, 0.4])
    assert lo == m == hi and m == pytest.approx(0.4)
    assert stats.t_interval([0.3]) == (0.3, 0.3, 0.3)


def test_paired_differences_are_per_seed_means():
    a = np.array([[[0.5, 0.7]], [[0.2, 0.4]], [[0.9, 0.9]]])          # (seeds, eval seeds, tasks)
    b = np.array([[[0.4, 0.4]], [[0.3, 0.3]], [[0.5, 0.7]]])
    d = stats.paired(a, b)
    assert np.allclose(d["per_seed"], [0.2, 0.0, 0.3])
    m, (lo, hi) = interval([0.2, 0.0, 0.3])
    assert np.isclose(d["mean"], m) and np.allclose(d["ci"], [lo, hi])


@pytest.mark.parametrize("ci, said", [([0.01, 0.2], "ahead"), ([-0.2, -0.01], "behind"), ([-0.1, 0.1], "level"),
                                      ([0.0, 0.1], "level")])
def test_the_word_follows_the_interval(ci, said):
    assert stats.word(ci) == said


def test_iqm_is_the_mean_of_the_middle_half():
    x = np.arange(16.0).reshape(2, 8)                                   # 16 scores: the middle 8 are 4..11
    assert stats.iqm(x[None])[0] == pytest.approx(7.5)
    assert stats.iqm(x[None])[0] == pytest.approx(sps.trim_mean(x.ravel(), 0.25))


def test_probability_of_improvement_counts_every_pair_of_runs_per_task():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 4, (5, 3)).astype(float), rng.integers(0, 4, (4, 3)).astype(float)   # ties too
    by_hand = np.mean([np.mean([1.0 if a > b else 0.5 if a == b else 0.0
                                for a, b in itertools.product(x[:, t], y[:, t])]) for t in range(3)])
    assert stats.improvement(x[None], y[None])[0] == pytest.approx(by_hand)
    u = [sps.mannwhitneyu(x[:, t], y[:, t], alternative="greater").statistic / 20 for t in range(3)]
    assert by_hand == pytest.approx(np.mean(u))
    assert stats.improvement(x[None], x[None])[0] == pytest.approx(0.5)


def test_paired_improvement_pairs_learners_of_one_seed():
    a = np.array([[[1.0, 0.0, 0.5]], [[1.0, 1.0, 1.0]]])
    b = np.array([[[0.0, 1.0, 0.5]], [[0.0, 0.0, 0.0]]])
    p = stats.paired_improvement(a, b)
    assert np.allclose(p["per_seed"], [0.5, 1.0]) and p["mean"] == pytest.approx(0.75)


def test_stratified_bootstrap_resamples_runs_within_each_task():
    """Every replication's matrix takes each task's column from that task's own runs, so a statistic of one
    task alone sees only its values; and the generator given is the only randomness."""
    x = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    seen = []
    stats.stratified([x], lambda b: seen.append(b) or b[..., 0].mean(axis=-1), np.random.default_rng(0), reps=200)
    batch = seen[-1]
    assert set(np.unique(batch[..., 0])) <= {0.0, 1.0, 2.0} and set(np.unique(batch[..., 1])) <= {10.0, 11.0, 12.0}
    one = stats.stratified([x], stats.mean, np.random.default_rng(5), reps=300)
    two = stats.stratified([x], stats.mean, np.random.default_rng(5), reps=300)
    assert one == two and one[0] == pytest.approx(x.mean()) and one[1][0] < x.mean() < one[1][1]


def test_split_gives_each_kind_of_seed_its_mean():
    k = stats.split([0.95, 0.5, 0.9, 0.52], [0.3, -0.1, 0.2, -0.2], 0.8)
    assert (k["above"], k["n"]) == (2, 4)
    assert k["mean_above"] == pytest.approx(0.25) and k["mean_below"] == pytest.approx(-0.15)


# ---- Tables from kept scores -------------------------------------------------------------------

def fake_row(folder, seeds=5, lead=0.2, flat_lr=0.01):
    """A row's scores.npz as a sweep pools them, with mlsh ahead of flat PPO by `lead` on every seed."""
    rng = np.random.default_rng(0)
    shape = (seeds, 2, 4, 6)                                            # seeds, eval seeds, tasks, iterations
    seed_effect = rng.normal(0, 0.05, (seeds, 1, 1, 1))
    flat = np.clip(0.4 + seed_effect + rng.normal(0, 0.05, shape), 0, 1)
    score = {"mlsh@0.01": np.clip(flat + lead + rng.normal(0, 0.01, shape), 0, 1),
             f"flat@{flat_lr:g}": flat, "flat@0.1": flat * 0.5}
    config = {"warmup": 10, "joint": 20, "tasks": 8, "copies": 16, "steps": 64, "rounds": 20, "eval_iters": 30}
    meta = {"command": "python -m lab.sweep --seeds 0-4", "seeds": list(range(seeds)), "tasks": [1, 2, 3, 4],
            "config": config, "flat_lr": flat_lr, "quick": False,
            "runs": [{"seed": s, "cpu": "a CPU", "commit": "abc1234", "best_alone": 0.9} for s in range(seeds)]}
    os.makedirs(folder, exist_ok=True)
    store.save_scores(os.path.join(folder, "scores.npz"), score, {k: v > 0.5 for k, v in score.items()}, meta)
    return folder


def test_a_rows_table_says_ahead_with_its_paired_interval(tmp_path):
    meta, score, success = store.load_scores(os.path.join(fake_row(str(tmp_path / "sweep")), "scores.npz"))
    s = report.row_stats(meta, score)
    v = s["vs_flat"]["mlsh"]
    assert v["word"] == "ahead" and v["diff"]["mean"] == pytest.approx(0.2, abs=0.02)
    assert v["p_paired"]["mean"] == pytest.approx(1.0) and v["ahead_seeds"] == 5
    assert s["methods"]["flat"]["key"] == "flat@0.01"                  # the validation rate, not the best
    text = report.table("x", meta, score)
    assert "| mlsh |" in text and "ahead" in text and "flat PPO (lr 0.01, chosen on validation tasks)" in text
    assert "meta-training: 4.92 M env steps; a new task: 30,720; meta-training pays for itself after 160" in text


def test_report_remakes_marked_tables_and_check_finds_stale_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "SCORES", str(tmp_path / "scores"))
    report.add("demo", fake_row(str(tmp_path / "sweep")))
    with pytest.raises(report.BadInput, match="already kept"):
        report.add("demo", str(tmp_path / "sweep"))
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# R\n\n<!-- table demo -->\nold\n<!-- end -->\n\n<!-- verdict demo -->\n<!-- end -->\n")
    assert report.stale(doc.read_text()) == ["table demo", "verdict demo"]
    report.main(["--document", str(doc)])
    assert report.stale(doc.read_text()) == []
    assert "**ahead**" in doc.read_text()
    with pytest.raises(SystemExit) as e:
        report.main(["--document", str(doc), "--check"])
    assert e.value.code == 0


def test_rates_table_names_the_best_and_whether_it_is_inside_the_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "SCORES", str(tmp_path / "scores"))
    report.add("v", fake_row(str(tmp_path / "s")))                      # rates 0.01 (the best) and 0.1
    report.add("w", fake_row(str(tmp_path / "t"), flat_lr=0.03))        # rates 0.03 (the best) and 0.1
    head, rule, v, w = report.rates(["v", "w"]).splitlines()
    assert head.split(" | ")[3:6] == ["0.01", "0.03", "0.1"] and rule.count("---") == 7
    assert v.startswith("| v | `--seeds 0-4` | seeds 0-4; commit abc1234; a CPU | **0.")
    assert v.split(" | ")[4] == "" and v.endswith("| 0.01, at the sweep's edge: widen the sweep |")
    assert w.split(" | ")[3] == "" and w.split(" | ")[4].startswith("**") and "0.03, at the sweep's edge" in w
    _, score, _ = report.read("v")
    m, lo, hi = stats.t_interval(stats.seed_means(report.auc(score["flat@0.1"])))
    assert v.split(" | ")[5] == f"{m:.3f} [{lo:.3f}, {hi:.3f}]"            # not the best: not bold


@pytest.mark.parametrize("document", report.DOCUMENTS)
def test_the_results_documents_tables_and_the_readmes_verdict_are_what_their_kept_scores_give(document):
    with open(document) as f:
        assert report.stale(f.read()) == []


def test_a_row_whose_seeds_split_into_two_kinds_gets_a_description_not_a_word(tmp_path):
    meta, score, _ = store.load_scores(os.path.join(fake_row(str(tmp_path / "s")), "scores.npz"))
    for r, alone in zip(meta["runs"], [0.95, 0.45, 0.93, 0.94, 0.5]):
        r["best_alone"] = alone
    v = report.row_stats(meta, score, name="bandits-w9u1")["vs_flat"]["mlsh"]
    assert v["word"] == "two kinds of seed" and (v["split"]["above"], v["split"]["n"]) == (3, 5)
    assert report.row_stats(meta, score, name="fourrooms")["vs_flat"]["mlsh"]["word"] == "ahead"
    for r in meta["runs"]:
        r["best_alone"] = 0.95                                            # one kind: the word stands
    assert report.row_stats(meta, score, name="bandits")["vs_flat"]["mlsh"]["word"] == "ahead"
