"""The settings of a run: the task family's beside the algorithm's, the named presets, the checks
that refuse a bad one, and a saved run's settings in today's form.

mlsh.Config holds what the algorithm reads; Settings adds the task (which envs.py builds: make_family)
and the output folder. A checkpoint or results.json keeps all of them as one dict.
"""
import dataclasses
import json
from dataclasses import dataclass

import envs
import mlsh


@dataclass
class Settings(mlsh.Config):
    # the task family (envs.py)
    preset: str = "fourrooms"       # named settings (PRESETS): fourrooms, rooms, bandits, paper
    env: str = "fourrooms"          # task family: fourrooms | rooms | bandits
    rooms: int = 3                  # rooms: R, a maze of R x R rooms (T = 25 R^2 / 2 unless given)
    max_steps: int = 50             # T: episode step limit
    slip: float = 0.0               # chance that a move is replaced by one of the other three
    random_start: bool = False      # goal mazes: start anywhere, not at the fixed cell 'S'
    start_cell: int = -1            # fourrooms: start at this free cell (numbered row by row; -1: at 'S')
    goals: str = ""                 # fourrooms: goal cells TRAIN/TEST (68,80,90/103), or one list for both (103)
    second_move: float = 0.0        # goal mazes: after a move, a 2nd to a random free neighbour (the code's slip)
    reward: str = "reach"           # goal mazes: reach (+1, ends there) | every_step (+1 per step on it)
    maze: str = ""                  # fourrooms: a maze file of your own instead (legend in envs.py)
    # where the run is kept
    out: str = ""                   # folder for results, checkpoint, figures


TASK_FIELDS = [f.name for f in dataclasses.fields(Settings) if f.name not in
               {g.name for g in dataclasses.fields(mlsh.Config)}]

PRESETS = {  # named settings; --env E uses preset E, and any flag given on the command line wins
    # the default run, kept to a few minutes: MLSH's two masters and flat PPO at its best rate on
    # validation goals (0.01 of 0.003 / 0.01 / 0.03 / 0.1 over 5 seeds: RESULTS.md, "PPO's details");
    # --methods mlsh flat shared random_subs --flat-lrs 0.003 0.01 0.03 0.1 is the sweeps' full test
    "fourrooms": dict(env="fourrooms", subpolicies=4, macro=5, max_steps=50, warmup=10, joint=20,
                      rounds=20, methods=("mlsh", "flat"), flat_lrs=(1e-2,)),
    # chosen over 10 meta-training seeds; primitives cost a master here (RESULTS.md)
    "bandits": dict(env="bandits", subpolicies=2, macro=10, max_steps=50, warmup=5, joint=15,
                    rounds=20, sub_lr=3e-3, flat_lrs=(1e-2, 3e-2, 1e-1), master="paper"),
    # the paper's Four Rooms (Sec. 6.3): fixed start, a random goal, 1 for every step on it, T 100,
    # N 25, K 4, W 20, U 30, about 2,000 steps per iteration per task (16 x 128), 2 x 64
    # networks; the sub-policy entropy (with the reach reward), flat PPO's learning rates and the
    # interruption threshold (the lowest of 0.5, 0.7, 0.9, which score alike) were chosen on
    # validation goals (RESULTS.md)
    "paper": dict(env="fourrooms", reward="every_step", subpolicies=4, macro=25, max_steps=100,
                  warmup=20, joint=30, rounds=20, steps=128, layers=2, sub_lr=3e-3, sub_ent=0.03,
                  flat_lrs=(1e-3, 3e-3, 1e-2, 3e-2), interrupt=0.5),
    # R x R rooms, Four Rooms' settings; T and S follow R (rooms_budget), N stays 5, about the
    # steps to cross a room; flat PPO's rates bracket its best on validation goals at R = 3, and
    # so does the interruption threshold (0.1, 0.2, 0.3: RESULTS.md)
    "rooms": dict(env="rooms", rooms=3, subpolicies=4, macro=5, warmup=10, joint=20, rounds=20,
                  flat_lrs=(1e-3, 3e-3, 1e-2, 3e-2), interrupt=0.2),
}
# the paper's Four Rooms task as its released code ran it (openai/mlsh, test_envs fourrooms.py): every
# episode starts in the doorway between the right-hand rooms (cell 62), every task's goal, at
# meta-training and at test, is the bottom-right corner (cell 103, 6 moves away), and a move that
# succeeds is followed by a second to a random free neighbour with chance 1/3; the learner is the
# paper preset's (RESULTS.md lists where the code's learner differed)
PRESETS["paper-code"] = dict(PRESETS["paper"], start_cell=62, goals="103", second_move=1 / 3)
FAMILIES = ("fourrooms", "rooms", "bandits")
METHODS = {  # every method a run reports, in the order of its tables and colours: name -> label
    "mlsh": "MLSH", "mlsh_paper": "MLSH, the paper's master", "flat": "flat PPO",
    "shared": "shared policy", "random_subs": "random sub-policies",
}
CHOSEN = [m for m in METHODS if m != "mlsh_paper"]   # what --methods chooses (mlsh_paper comes with mlsh)


def rooms_budget(rooms):
    """The rooms preset's T and S for R x R rooms: T by envs.RoomTasks.horizon (25 R^2 / 2), S the
    first multiple of 64 that holds a whole episode."""
    T = envs.RoomTasks.horizon(rooms)
    return dict(max_steps=T, steps=64 * -(-T // 64))


META_TRAINING = ("rounds", "tasks", "warmup", "joint", "sub_lr", "sub_ent")   # settings of meta-training alone

ACTS = {  # when a setting or run option acts: one given on the command line that cannot act is refused
    # name: (when it acts, given the settings and the run options; why not, and what to do)
    "rooms": (lambda c, o: c.env == "rooms", "sets the size of a room maze: add --env rooms"),
    "maze": (lambda c, o: c.env == "fourrooms", "makes goal tasks on your maze: use it with --env fourrooms"),
    "random_start": (lambda c, o: c.env != "bandits", "is for goal mazes (fourrooms, rooms); Moving Bandits "
                                                      "already starts anywhere"),
    "start_cell": (lambda c, o: c.env == "fourrooms", "sets Four Rooms' start cell: use it with --env fourrooms"),
    "goals": (lambda c, o: c.env == "fourrooms", "sets Four Rooms' goals: use it with --env fourrooms"),
    "second_move": (lambda c, o: c.env != "bandits", "is for goal mazes (fourrooms, rooms)"),
    "reward": (lambda c, o: c.env != "bandits", "is for goal mazes (fourrooms, rooms); Moving Bandits pays "
                                                "for reaching a mark"),
    "master": (lambda c, o: bool({"mlsh", "random_subs"} & set(c.methods)),
               "chooses the master that MLSH fine-tunes: add mlsh or random_subs to --methods"),
    "interrupt": (lambda c, o: c.master == "options" and bool({"mlsh", "random_subs"} & set(c.methods)),
                  "stops the options master's skills early: it needs --master options and mlsh or random_subs "
                  "in --methods"),
    "flat_lrs": (lambda c, o: "flat" in c.methods, "are flat PPO's learning rates: add flat to --methods"),
    **{name: (lambda c, o: not o.eval_only, "is a setting of meta-training, which --eval-only does not run: "
                                           "leave it out, or leave out --eval-only")
       for name in META_TRAINING},
    "render": (lambda c, o: "mlsh" in c.methods, "prints an episode of MLSH's master: add mlsh to --methods"),
}


def cannot_act(cfg, opts, given):
    """Why each setting or run option in `given` (the names given on the command line) cannot act in
    this run (ACTS), as sentences; [] when every one can. A preset's own values are never checked."""
    flag = lambda name: "--" + name.replace("_", "-")
    return [f"{flag(name)} {why}" for name in given if name in ACTS
            for acts, why in [ACTS[name]] if not acts(cfg, opts)]


def odd(cfg):
    """Settings that are legal but probably not meant, as sentences (a warning each, not a refusal)."""
    return [f"--clip {cfg.clip:g} is 1 or more: the ratio is never clipped below (1 - clip <= 0), only above "
            f"{1 + cfg.clip:g}, so PPO's clip does little (0.1 to 0.3 is usual)"] if cfg.clip >= 1 else []


def check_config(cfg):
    """Every problem with a config, as sentences that say what to do; [] when it is fine."""
    problems = []
    flag = lambda name: "--" + name.replace("_", "-")
    at_least = {1: ["subpolicies", "macro", "hidden", "rounds", "tasks", "joint", "copies", "steps",
                    "epochs", "minibatches", "eval_iters", "eval_seeds", "max_steps"],
                0: ["warmup", "layers", "seed"]}
    for low, names in at_least.items():
        for name in names:
            if getattr(cfg, name) < low:
                problems.append(f"{flag(name)} is {getattr(cfg, name)}; it must be at least {low}")
    if cfg.macro > cfg.max_steps >= 1:
        problems.append(f"--macro {cfg.macro} is longer than an episode (--max-steps {cfg.max_steps}): a master "
                        f"would decide once per episode; give --macro {cfg.max_steps} or less")
    if not 0 <= cfg.interrupt < 1:
        problems.append(f"--interrupt is {cfg.interrupt}; it is a probability in [0, 1)")
    for name in ["slip", "second_move"]:
        if not 0 <= getattr(cfg, name) < 1:
            problems.append(f"{flag(name)} is {getattr(cfg, name)}; it is a probability in [0, 1)")
    if cfg.random_start and cfg.start_cell >= 0:
        problems.append(f"--random-start and --start-cell {cfg.start_cell}: choose one")
    if cfg.start_cell < -1:
        problems.append(f"--start-cell is {cfg.start_cell}; give a free cell's number (0 or more)")
    for name in ["master_lr", "sub_lr", "value_lr", "clip"]:
        if not 0 < getattr(cfg, name) < float("inf"):
            problems.append(f"{flag(name)} is {getattr(cfg, name)}; it must be a positive number")
    if not cfg.flat_lrs or not all(0 < lr < float("inf") for lr in cfg.flat_lrs):
        problems.append(f"--flat-lrs is {' '.join(map(str, cfg.flat_lrs))}; "
                        f"give one or more positive numbers")
    for name in ["master_ent", "sub_ent"]:
        if not 0 <= getattr(cfg, name) < float("inf"):
            problems.append(f"{flag(name)} is {getattr(cfg, name)}; it must be 0 or more")
    if not 0 < cfg.gamma <= 1 or not 0 <= cfg.lam <= 1:
        problems.append(f"--gamma {cfg.gamma} and --lam {cfg.lam}: gamma must be in (0, 1], "
                        f"lam in [0, 1]")
    if cfg.steps < cfg.max_steps:   # else an iteration may end no episode, and score 0
        problems.append(f"--steps {cfg.steps} is shorter than --max-steps {cfg.max_steps}; an "
                        f"iteration must be able to finish an episode: raise --steps")
    if cfg.env == "rooms" and cfg.rooms < 2:
        problems.append(f"--rooms is {cfg.rooms}; a room maze has at least 2 x 2 rooms")
    if cfg.env not in FAMILIES:
        problems.append(f"--env {cfg.env!r} is not a task family here; "
                        f"choose one of {', '.join(FAMILIES)}")
    if cfg.master not in ("options", "paper"):
        problems.append(f"--master {cfg.master!r}: choose options (the skills and every primitive action "
                        f"for one step) or paper (the skills only, as in the paper)")
    if cfg.reward not in envs.GoalMaze.REWARDS:
        problems.append(f"--reward {cfg.reward!r}: choose reach (+1 on reaching the goal, which ends "
                        f"the episode) or every_step (+1 for every step on the goal: the paper's)")
    if cfg.eval_split not in envs.TaskFamily.SPLITS:
        problems.append(f"--eval-split {cfg.eval_split!r}: choose test or validation")
    unknown = [m for m in cfg.methods if m not in CHOSEN]
    if unknown or not cfg.methods:
        problems.append(f"--methods {' '.join(cfg.methods)}: choose one or more of "
                        f"{', '.join(CHOSEN)}")
    elif "shared" in cfg.methods and "flat" not in cfg.methods:
        problems.append("--methods: shared needs flat too (the shared policy uses flat PPO's "
                        "best learning rate)")
    return problems


def make_family(cfg):
    """The task distribution the config names: goal cells of a maze, or Moving Bandits."""
    start = None if cfg.random_start else cfg.start_cell if cfg.start_cell >= 0 else "S"
    if cfg.env == "fourrooms":
        task = dict(start=start, slip=cfg.slip, max_steps=cfg.max_steps, reward=cfg.reward,
                    second_move=cfg.second_move, goals=parse_goals(cfg.goals) if cfg.goals else None)
        if cfg.goals and cfg.eval_split == "validation":
            raise ValueError(f"--goals {cfg.goals} has no validation split: evaluate on its test goals "
                             f"(leave out --eval-split)")
        try:
            return envs.GoalTasks(**task, **({"rows": envs.read_maze(cfg.maze)} if cfg.maze else {}))
        except (ValueError, OSError) as e:
            why = e.strerror if isinstance(e, OSError) else e
            raise ValueError(f"maze file {cfg.maze}: {why}" if cfg.maze else str(why)) from None
    if cfg.env == "rooms":
        return envs.RoomTasks(cfg.rooms, start=start, slip=cfg.slip, max_steps=cfg.max_steps,
                              reward=cfg.reward, second_move=cfg.second_move)
    if cfg.env == "bandits":
        return envs.BanditTasks(slip=cfg.slip, max_steps=cfg.max_steps)
    raise ValueError(f"unknown env {cfg.env!r}: choose one of {', '.join(FAMILIES)}")


def parse_goals(text):
    """--goals TRAIN/TEST ("68,80,90/103") or one list for both ("103") as (train, test) lists."""
    try:
        parts = [[int(c) for c in part.split(",")] for part in text.split("/")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise ValueError(f"--goals {text}: give cell numbers as TRAIN/TEST (68,80,90/103: meta-train on "
                         f"three, test on the fourth), or one list for both (103)")
    return parts[0], parts[-1]


RENAMED = {"seeds": "eval_seeds", "envs": "copies"}   # fields of older runs' configs, and their names now


def run_settings(config):
    """A run's config (a dict, as results.json and checkpoints hold it) in today's form: tuples as
    lists, renamed fields under their names now, and a field an older run did not have yet at its
    default (as that version behaved). The output folder is left out: it is where, not what."""
    config = {RENAMED.get(k, k): v for k, v in config.items()}
    config = json.loads(json.dumps({**dataclasses.asdict(Settings()), **config}))
    return {k: v for k, v in config.items() if k != "out"}


def differences(a, b):
    """'k is A there, B here; ...' for every setting in which config a (saved) and b (now) differ."""
    return "; ".join(f"{k} is {a.get(k)!r} there, {b.get(k)!r} here" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k))
