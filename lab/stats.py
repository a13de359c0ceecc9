"""The statistics of a claim about MLSH: what a comparison over meta-training seeds reports.

The unit of replication is the meta-training seed. One seed's skills serve every held-out task, so the
tasks of a seed are not independent draws: a seed that learned poor skills is poor on all of them. A
method's scores on one row are therefore an array (seeds, tasks, ...), and

- the verdict rests on the paired difference of two methods, one value per seed (the mean over that
  seed's tasks and evaluation seeds: the methods meet the same tasks and streams), with a 95%
  t-interval over seeds (`paired`), which keeps its coverage at 5 and at 10 seeds (test_stats
  simulates it). Percentile bootstraps over five seed means cover about 0.83 of the time, not 0.95;
- its word follows the interval (`word`): ahead above 0, behind below, level where it holds 0;
- beside it, as the field reports them (Agarwal et al. 2021, whose library is rliable): the mean and
  the interquartile mean (IQM) over seeds and tasks, and the probability of improvement, each with a
  stratified bootstrap interval (`stratified`): runs resampled within each task. Those intervals are
  labelled as what they are; at five seeds they cover less than their nominal 95%.

Everything takes arrays whose first axis is the meta-training seed, and randomness only from the
generator it is given.
"""
import numpy as np
from scipy import stats as sps

LEVEL = 0.95
REPS = 5000          # bootstrap replications (rliable's default is 50,000; the Monte Carlo error at 5,000
                     # is about 0.002 on the intervals' edges here)


def seed_means(x):
    """The mean of each seed's scores: x (seeds, ...) -> (seeds,)."""
    x = np.asarray(x, dtype=float)
    return x.reshape(len(x), -1).mean(axis=1)


def t_interval(x, level=LEVEL):
    """The mean of x over its last axis and the t-interval about it: (mean, low, high), arrays of x's
    other axes (floats for a 1-D x). A sample that cannot vary (one value, or all alike) gets the mean
    as both edges."""
    x = np.asarray(x, dtype=float)
    n, mean = x.shape[-1], x.mean(axis=-1)
    sd = x.std(axis=-1, ddof=1) if n > 1 else np.zeros_like(mean)
    half = sps.t.ppf(0.5 + level / 2, max(n - 1, 1)) * sd / np.sqrt(n) if n > 1 else 0.0 * sd
    half = np.where(np.ptp(x, axis=-1) > 0, half, 0.0)
    low, high = mean - half, mean + half
    return (float(mean), float(low), float(high)) if x.ndim == 1 else (mean, low, high)


def paired(a, b):
    """Method a minus method b on the same seeds, tasks and streams, a and b (seeds, ...): the
    per-seed differences of the seed means, their mean and its 95% t-interval over seeds."""
    d = seed_means(a) - seed_means(b)
    mean, low, high = t_interval(d)
    return {"mean": mean, "ci": [low, high], "per_seed": d.tolist()}


def word(ci):
    """The verdict's word for a paired interval [low, high]: ahead, behind or level."""
    return "ahead" if ci[0] > 0 else "behind" if ci[1] < 0 else "level"


def per_task(x):
    """rliable's score matrix: (seeds, tasks), each cell the mean over that (seed, task)'s evaluation
    seeds. x: (seeds, evaluation seeds, tasks) AUCs, as the lab keeps them."""
    return np.asarray(x, dtype=float).mean(axis=1)


# ---- The field's aggregates, each of a batch of score matrices (..., runs, tasks) -----------

def mean(x):
    """The mean over runs and tasks."""
    return x.mean(axis=(-2, -1))


def iqm(x):
    """The interquartile mean: the mean of the middle half of all runs' x tasks' scores (scipy's
    trim_mean, a quarter cut at each end, as rliable computes it)."""
    return sps.trim_mean(x.reshape(*x.shape[:-2], -1), 0.25, axis=-1)


def improvement(x, y):
    """rliable's probability of improvement P(X > Y), unpaired: per task, the chance that a run of X
    beats a run of Y (ties count one half: the Mann-Whitney U over nx ny), averaged over tasks.
    x (..., nx, tasks), y (..., ny, tasks)."""
    xx, yy = x[..., :, None, :], y[..., None, :, :]
    return ((xx > yy) + 0.5 * (xx == yy)).mean(axis=(-3, -2)).mean(axis=-1)


def paired_improvement(a, b):
    """The paired probability of improvement: per seed, the share of its learners (task and evaluation
    seed: the same task and stream for both) on which a beats b (ties one half); the mean over seeds and
    its 95% t-interval. a, b (seeds, ...)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    wins = ((a > b) + 0.5 * (a == b)).reshape(len(a), -1).mean(axis=1)
    mean, low, high = t_interval(wins)
    return {"mean": mean, "ci": [max(low, 0.0), min(high, 1.0)], "per_seed": wins.tolist()}   # a probability


def stratified(arrays, statistic, rng, reps=REPS, level=LEVEL):
    """The statistic of score matrices (runs, tasks) and its stratified bootstrap interval, as rliable
    draws it: in each replication every array's runs are drawn with replacement, independently within
    each task (column), and independently of the other arrays; the percentile interval of the
    replications. statistic takes the arrays with a leading batch axis: statistic(*batches) -> (reps,).
    Returns (point, [low, high])."""
    arrays = [np.asarray(x, dtype=float) for x in arrays]
    point = float(statistic(*[x[None] for x in arrays])[0])
    batches = []
    for x in arrays:
        runs, tasks = x.shape
        batches.append(x[rng.integers(0, runs, size=(reps, runs, tasks)), np.arange(tasks)])
    values = statistic(*batches)
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return point, [float(low), float(high)]


def split(measure, values, at):
    """A row whose seeds split into two kinds by a per-seed measure (bandit skills that split, or not):
    how many seeds have measure >= at, and the mean of `values` (per seed) over each kind. A t-interval
    over such seeds covers far less than 95% (two kinds are not one normal spread), so the row's word
    is this description, not a test."""
    measure, values = np.asarray(measure, dtype=float), np.asarray(values, dtype=float)
    high = measure >= at
    kind = lambda m: float(values[m].mean()) if m.any() else None
    return {"at": at, "n": len(values), "above": int(high.sum()), "mean_above": kind(high),
            "mean_below": kind(~high)}


def coverage(n_seeds, draw, rng, reps=4000, tasks=16, truth=0.1, level=LEVEL, method="t", boot=2000):
    """How often an interval over seeds holds the true mean difference, simulated: `reps` rows of n_seeds
    seeds x `tasks` tasks, each difference truth + a seed effect shared by all tasks of the seed
    (draw(rng, shape), mean 0) + independent task noise. method "t": the verdict's interval (paired's
    t-interval over seed means); "bootstrap": the percentile bootstrap over seed means (`boot` replications)
    that the older tables drew."""
    effect = draw(rng, (reps, n_seeds, 1))
    noise = rng.normal(0.0, 0.1, size=(reps, n_seeds, tasks))
    diffs = (truth + effect + noise).mean(axis=-1)                   # (reps, seeds): the seed means
    if method == "t":
        _, low, high = t_interval(diffs, level)
    else:
        means = np.take_along_axis(diffs[:, None, :], rng.integers(0, n_seeds, (reps, boot, n_seeds)), 2).mean(-1)
        low, high = np.percentile(means, [50 * (1 - level), 50 * (1 + level)], axis=1)
    return float(np.mean((low <= truth) & (truth <= high)))
