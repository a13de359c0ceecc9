"""Pictures of a run and of a sweep: one episode of a trained master (by the rollout's own decision
rule), the fine-tuning curves, the skills, meta-training, what the skills allow (reach), and the
sweep's seeds, curves and grids. PNG files, no window needed. It imports the algorithm (mlsh.py);
the algorithm never imports it."""
import dataclasses
import os

import numpy as np

import envs
from lab import stream
from lab.measures import band
from lab.settings import METHODS
from lab.store import save_png
from mlsh import Net, Runner, child_seed, log_softmax

ORDER = list(METHODS)    # a method's colour is C<its place here>


def legend(m):
    """A method's name in a figure, as tables and JSON name it, with what it is."""
    return f"{m}: {METHODS[m]}"


# ---- Watching a trained master: one episode, as text or as a picture --------

def play_episode(family, agent, m, seed, split="test", method="mlsh"):
    """One episode of learner m's master over the sub-policies (of `method`), on its held-out task, by the
    rollout's own decision rule (Runner.act). active[t] is the choice acting at step t, primitive[t]
    whether it was a primitive action (Agent.primitive) or a sub-policy; decisions the steps where the
    master chose."""
    tasks = family.held_out(split)
    rng = stream(seed, "episode")
    env = family.make([tasks[m % len(tasks)]], split, seed=child_seed(rng))
    env.autoreset = False
    one = dataclasses.replace(agent, master=Net({k: v[m:m + 1] for k, v in agent.master.p.items()}, 0.0,
                                                agent.master.one_hot), value=None, critic=None)
    runner = Runner(env, 1)
    obs, cells, active, decisions = runner.obs, [int(env.pos[0])], [], []
    for t in range(env.max_steps):
        decide, choice, _, act, _ = runner.act(one, obs, rng)
        obs, _, term, trunc, info = env.step(act)
        cells.append(int(env.pos[0]))
        active.append(int(choice[0]))
        if decide[0]:
            decisions.append(t)
        if term[0] or trunc[0]:
            break
    return {"cells": cells, "active": active, "decisions": decisions, "macro": agent.macro, "method": method,
            "primitive": agent.primitive(np.array(active)).tolist(),
            "success": bool(info["success"][0]), "best": int(env.best[0]),
            "landmarks": env.landmarks(0), "maze": env.maze}


def render_episode(ep):
    """The path as one text picture: each visited cell shows the sub-policy that acted there."""
    mark = ["+" if p else str(k) for k, p in zip(ep["active"], ep["primitive"])]
    marks = dict(zip(ep["cells"], mark))
    marks.update({ep["cells"][0]: "S", **ep["landmarks"]})
    steps = len(ep["active"])
    runs = "".join(mark)
    outcome = (f"reached the goal in {steps} steps (shortest {ep['best']})" if ep["success"]
               else f"did not reach the goal in {steps} steps")
    return (ep["maze"].render(marks) + f"\n{ep['method']}'s master; S start, digits: the sub-policy acting in that "
            f"cell, "
            f"+ a primitive action; {outcome}\nchoice per step (a sub-policy lasts {ep['macro']} "
            f"steps, a primitive 1): {runs}")


# ---- A run's figures: PNG files, no window needed ----------------------------

def pyplot():
    """matplotlib's pyplot, drawing to files only (no window needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_episode(plt, path, maze, ep, colours):
    """One episode of a trained master (play_episode), coloured by the acting sub-policy."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(~maze.free, cmap="Greys", vmin=0, vmax=1.6)
    rc = maze.cells[ep["cells"]]
    for t, (k, primitive) in enumerate(zip(ep["active"], ep["primitive"])):
        ax.plot(rc[t:t + 2, 1], rc[t:t + 2, 0], color="black" if primitive else colours(k),
                lw=1.5 if primitive else 3, ls=":" if primitive else "-", solid_capstyle="round")
    decided = [t for t in ep["decisions"] if t > 0 and not ep["primitive"][t]]   # where a skill began
    ax.scatter(rc[decided, 1], rc[decided, 0], s=60, facecolors="white", edgecolors="black", zorder=3,
               label="a decision of the master: a sub-policy" if decided else None)
    ax.scatter(rc[0, 1], rc[0, 0], marker="s", s=120, color="green", zorder=3, label="start")
    names = {"G": "goal", "$": "the mark that pays", "0": "the other mark", "1": "the other mark"}
    for cell, ch in ep["landmarks"].items():
        r, c = maze.cells[cell]
        ax.scatter(c, r, marker="*", s=250, color="red" if ch in "G$" else "gray", zorder=3,
                   label=names.get(ch, ch))
    for k in sorted({k for k, p in zip(ep["active"], ep["primitive"]) if not p}):
        ax.plot([], [], color=colours(k), lw=3, label=f"sub-policy {k}")
    if any(ep["primitive"]):
        ax.plot([], [], color="black", lw=1.5, ls=":", label="primitive action (one step)")
    outcome = (f"goal in {len(ep['active'])} steps (shortest {ep['best']})" if ep["success"]
               else "goal not reached")
    ax.set(title=f"A fine-tuned {ep['method']} master on a held-out task: {outcome}", xticks=[], yticks=[])
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    save_png(plt, fig, path)


def plot_reach(plt, path, maze, maps, held, start):
    """reach()'s maps over the maze: per goal cell, a random walk's and a fresh (random) paper's master's
    chance of meeting it, and the best score of the paper's master over the skills (what they allow); the
    held-out goals framed. The options master may also take single moves, so it can always take the
    shortest path: its best (all 1 under the reach reward) is a number in the last title."""
    both = f"\n(mlsh_options, with single moves too: {np.nanmean(maps['mlsh_options']['best_score'][held]):.2f})"
    panels = [(maps["random_walk_meets"], "a random walk meets the goal\n(flat PPO at its start)", ""),
              (maps["mlsh"]["random_meets"], "a random master over the skills\nmeets the goal (a fresh mlsh)", ""),
              (maps["mlsh"]["best_score"], "the best score of a master over\nthe skills (what they allow mlsh)",
               both)]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6))
    for ax, (values, title, more) in zip(axes, panels):
        grid = np.full(maze.free.shape, np.nan)
        grid[maze.cells[:, 0], maze.cells[:, 1]] = values
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
        ax.imshow(np.where(maze.free, np.nan, 1.0), cmap="Greys", vmin=0, vmax=1.6)
        for g in held:
            r, c = maze.cells[g]
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red",
                                       lw=1.5))
        if start is not None:
            r, c = maze.cells[start]
            ax.text(c, r, "S", ha="center", va="center", color="black", fontweight="bold")
        ax.set_title(f"{title}\nheld-out goals (red): mean {np.nanmean(values[held]):.2f}{more}", fontsize=9)
        ax.set(xticks=[], yticks=[])
    fig.colorbar(im, ax=axes, shrink=0.8,
                 label="chance of meeting the goal (left, middle);\nnormalised return (right)")
    save_png(plt, fig, path)


def plot_all(out, family, results, history, subs, ep, maps=None, held=()):
    """Write curves.png, subpolicies.png, episode.png (when a master over the skills was evaluated), meta_training.png
    and, for goal tasks, reach.png into `out`."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    # 1. fine-tuning curves with 95% bands
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for i, name in enumerate(METHODS):
        if name not in results:
            continue
        r = results[name]
        x = np.arange(1, len(r["curve"]) + 1)
        ax.plot(x, r["curve"], color=f"C{i}",
                label=f"{legend(name)}: AUC {r['auc']:.2f} [{r['auc_ci'][0]:.2f}, {r['auc_ci'][1]:.2f}]")
        ax.fill_between(x, *r["curve_band"], color=f"C{i}", alpha=0.2)
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    ax.text(1, 1.01, "optimum", color="gray", va="bottom")
    ax.set(xlabel="iteration of fine-tuning on a held-out task", ylabel="normalised return",
           ylim=(0, 1.1), title="Learning held-out tasks (mean and 95% band over seeds and tasks)")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.14), fontsize=8, frameon=False)   # below
    save_png(plt, fig, os.path.join(out, "curves.png"))

    # 2. sub-policy maps: the most likely action in every free cell, its probability as length
    maze = family.maze
    env = family.make([family.test_tasks[0]], "test", seed=0)   # any task: the maps ignore the goal
    env.reset()
    probs = np.exp(log_softmax(subs(env.obs_at(np.arange(maze.n_cells))[None])))   # (K, cells, A)
    K = len(probs)
    fig, axes = plt.subplots(1, K, figsize=(3.2 * K, 3.4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        best, p = probs[k].argmax(-1), probs[k].max(-1)
        d = envs.MOVES[best] * (0.85 * p)[:, None]
        ax.imshow(~maze.free, cmap="Greys", vmin=0, vmax=1.6)
        ax.quiver(maze.cells[:, 1] - d[:, 1] / 2, maze.cells[:, 0] - d[:, 0] / 2, d[:, 1], d[:, 0],
                  p, cmap="viridis", clim=(0.25, 1), angles="xy", scale_units="xy", scale=1,
                  width=0.012)
        for cell, ch in (() if family.goal_cells else env.landmarks(0).items()):
            ax.text(maze.cells[cell, 1], maze.cells[cell, 0], ch, ha="center", va="center",
                    color="red", fontweight="bold")
        ax.set(title=f"sub-policy {k}", xticks=[], yticks=[])
    seen = ("the two marks of one episode, which they see: $ the one that pays, the other by its "
            "number" if not family.goal_cells else "they know no goal")
    fig.suptitle(f"Most likely action per cell (arrow length and colour: its probability)\n{seen}",
                 fontsize=10, y=1.06)
    save_png(plt, fig, os.path.join(out, "subpolicies.png"))

    # 3. one episode of a trained master: the path coloured by the active sub-policy
    colours = plt.get_cmap("tab10")
    if ep is not None:
        plot_episode(plt, os.path.join(out, "episode.png"), maze, ep, colours)

    # 4. meta-training: success at the end of warmup and of joint, and sub-policy usage per round
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    rounds = [h["round"] for h in history]
    a1.plot(rounds, [h["warmup_success"] for h in history], "o-", label="end of warmup (θ only)")
    a1.plot(rounds, [h["joint_success"] for h in history], "s-", label="end of joint (θ and φ)")
    for a in (a1, a2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.set(xlabel="round", ylabel="success rate", ylim=(0, 1.05),
           title="A fresh master on training tasks")
    a1.legend(fontsize=8)
    usage = np.array([h["usage"] for h in history])
    bottom = np.zeros(len(rounds))
    for k in range(usage.shape[1]):
        a2.bar(rounds, usage[:, k], bottom=bottom, color=colours(k), label=f"sub-policy {k}")
        bottom += usage[:, k]
    a2.set(xlabel="round", ylabel="share of steps", ylim=(0, 1),
           title="How often each sub-policy acts")
    a2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_png(plt, fig, os.path.join(out, "meta_training.png"))

    # 5. what the skills allow: a random walk, a random master, the best master
    if maps is not None:
        plot_reach(plt, os.path.join(out, "reach.png"), maze, maps, held,
                   family.start_cell)


# ---- A sweep's figures: AUC per seed, curves over seeds, grids -------------

def plot_seeds(path, rows, title):
    """Every method's AUC per seed: a dot per seed, a grey line joining one seed's methods, the mean as a bar."""
    plt = pyplot()

    ok = [r for r in rows if "error" not in r]
    shown = [m for m in METHODS if m in ok[0]["methods"]]
    x = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(6.4 + 1.2 * (len(shown) > 4), 4))
    for r in ok:
        ax.plot(x, [r["methods"][m]["auc"] for m in shown], color="grey", lw=0.8, alpha=0.6, zorder=1)
    # each seed's number left of its first dot, moved apart where dots are close, with a leader line
    first = sorted((r["methods"][shown[0]]["auc"], r["seed"]) for r in ok)
    at = spread([y for y, _ in first], gap=0.035)
    for (y, seed), y_text in zip(first, at):
        ax.text(x[0] - 0.3, y_text, str(seed), fontsize=7, color="grey", va="center", ha="right")
        ax.plot([x[0] - 0.28, x[0] - 0.06], [y_text, y], color="grey", lw=0.5)
    for i, m in enumerate(shown):
        y = [r["methods"][m]["auc"] for r in ok]
        ax.scatter(np.full(len(y), i), y, s=25, color=f"C{ORDER.index(m)}", zorder=2)
        if y:
            ax.hlines(np.mean(y), i - 0.25, i + 0.25, color="black", lw=2.5, zorder=3)
            ax.text(i + 0.27, np.mean(y), f"{np.mean(y):.2f}", va="center", fontsize=8)
    ax.set(xticks=x, xticklabels=shown, ylabel="AUC on held-out tasks",
           ylim=(-0.03, 1.03), xlim=(-0.8, len(shown) - 0.3))
    ax.set_title(title, fontsize=9)
    ax.text(0.0, -0.22, f"{len(ok)} meta-training seeds (dots; a line joins one seed's methods; bar: mean)",
            transform=ax.transAxes, fontsize=8)
    save_png(plt, fig, path)


def spread(ys, gap):
    """Label heights for sorted values ys: each at its value, pushed up to `gap` above the one below,
    then the whole column moved down by half of what it grew, to stay centred on the values."""
    out = []
    for y in ys:
        out.append(max(y, out[-1] + gap) if out else y)
    shift = (out[-1] - ys[-1]) / 2 if ys else 0.0
    return [y - shift for y in out]


def draw_curves(ax, rows):
    """On ax, every method's fine-tuning curve over rows (a sweep's runs): the mean with a 95% band."""
    for m in [m for m in METHODS if m in rows[0]["methods"]]:
        mean, half = band([r["methods"][m]["curve"] for r in rows])
        x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, color=f"C{ORDER.index(m)}", label=legend(m))
        ax.fill_between(x, mean - half, mean + half, color=f"C{ORDER.index(m)}", alpha=0.2, lw=0)


def plot_sweep_curves(path, rows, title):
    """Every method's fine-tuning curve, the mean over seeds with a 95% band (1.96 standard errors)."""
    plt = pyplot()

    ok = [r for r in rows if "error" not in r]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    draw_curves(ax, ok)
    ax.set(xlabel="fine-tuning iteration", ylabel="normalised return on held-out tasks", ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{title}\nmean over {len(ok)} meta-training seeds, 95% band over seeds", fontsize=9)
    save_png(plt, fig, path)


def plot_compare(path, steps):
    """Fine-tuning curves of several settings side by side, one panel each: [(name, rows)], every method's
    mean over the runs with a 95% band, as the paper draws its figures."""
    plt = pyplot()

    cols = min(len(steps), 4)
    nrows = -(-len(steps) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.6 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(steps):]:
        ax.axis("off")
    for ax, (name, rows) in zip(axes.flat, steps):
        draw_curves(ax, rows)
        ax.set(xlabel="fine-tuning iteration", ylim=(0, 1.02))
        ax.set_title(f"{name}\n{len(rows)} runs", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("normalised return on the test tasks")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_png(plt, fig, path)


def gap_panels(names):
    """Settings named "<setting> <value>" ("K 2", "K 4", "W 0", ...) -> one panel per setting, in order:
    [(setting, [(index, value), ...])]. Names that share no setting with a neighbour: one panel of them all."""
    panels = []
    for i, name in enumerate(names):
        head, _, value = name.rpartition(" ")
        if panels and head and panels[-1][0] == head:
            panels[-1][1].append((i, value))
        else:
            panels.append((head, [(i, value)]))
    if all(len(p) == 1 for _, p in panels):
        return [("", [(i, n) for i, n in enumerate(names)])]
    return panels


def plot_gaps(path, data):
    """Each setting's lead over flat PPO: each master's AUC minus flat's (mlsh, mlsh_options), mean over
    runs with the 95% interval (the `data` of sweep.compare); a panel per setting when the settings are
    values of a few (gap_panels)."""
    plt = pyplot()

    panels = gap_panels([d["name"] for d in data])
    width = [max(2.4, 0.7 * len(p) + 1) for _, p in panels] if len(panels) > 1 else [max(4.8, 0.9 * len(data) + 1.5)]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(width) + 0.6, 3.8), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": width})
    for ax, (setting, cells) in zip(axes[0], panels):
        x = np.arange(len(cells))
        for k, m in enumerate(("mlsh", "mlsh_options")):
            mean = np.array([data[i][f"{m}_minus_flat"][0] for i, _ in cells])
            err = np.abs(np.array([data[i][f"{m}_minus_flat"][1] for i, _ in cells]).T - mean)
            ax.errorbar(x + (k - 0.5) * 0.12, mean, yerr=err, fmt="o-" if setting else "o", color=f"C{ORDER.index(m)}",
                        capsize=3, label=legend(m))
        ax.axhline(0, color="grey", lw=0.8)
        tilt = not setting and len(cells) > 5
        ax.set_xticks(x)
        ax.set_xticklabels([v for _, v in cells], rotation=30 if tilt else 0, ha="right" if tilt else "center",
                           fontsize=8)
        ax.set(xlabel=setting, xlim=(-0.5, len(cells) - 0.5))
    axes[0][0].set_ylabel("AUC minus flat PPO's (95% interval over runs)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_png(plt, fig, path)


def plot_grid(path, grid, table, title):
    """Every method's AUC over the grid: one panel per value of the first name (if two), the other
    along the x axis; mean over seeds with its 95% interval."""
    plt = pyplot()

    (outer, outer_values), (inner, inner_values) = ((None, [None]), grid[0]) if len(grid) == 1 else grid
    fig, axes = plt.subplots(1, len(outer_values), figsize=(4.2 * len(outer_values), 3.8), squeeze=False, sharey=True)
    for ax, ov in zip(axes[0], outer_values):
        cells = [c for c in table if outer is None or c["values"][outer] == ov]
        x = np.arange(len(cells))
        for i, m in enumerate(METHODS):
            have = [(j, c[m]) for j, c in zip(x, cells) if c[m] is not None]
            if have:
                j, a = zip(*have)
                mean = np.array([v[0] for v in a])
                err = np.abs(np.array([v[1] for v in a]).T - mean)
                ax.errorbar(np.array(j) + (i - 1.5) * 0.06, mean, yerr=err, fmt="o-", color=f"C{i}", capsize=3,
                            label=legend(m))
        ax.set(xticks=x, xticklabels=[c["values"][inner] for c in cells], xlabel=f"--{inner}", ylim=(0, 1.02),
               title=f"--{outer} {ov}" if outer else "")
    axes[0][0].set_ylabel("AUC on held-out tasks (mean over seeds, 95% interval)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_png(plt, fig, path)
