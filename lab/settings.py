"""The settings of a lab run: the task's beside the algorithm's (mlsh.Config), the named presets, the
checks that refuse a bad one, the task family they make, and a saved run's settings in today's form.

mlsh.Config holds what the algorithm reads and a family's own settings (envs.py) fill it; Settings adds
the task (the family's constructor takes it: make_family), the lab's methods and the output folder. A
checkpoint or results.json keeps all of them as one dict.
"""
import dataclasses
import importlib
import inspect
import json
from dataclasses import dataclass

import envs
import mlsh


@dataclass
class Settings(mlsh.Config):
    # the task family (envs.py)
    preset: str = "fourrooms"       # named settings (PRESETS): fourrooms, rooms, bandits, paper, paper-code
    env: str = "fourrooms"          # task family: a name of envs.FAMILIES (fourrooms, rooms, bandits)
    family: str = ""                # a task family of your own instead, module:Class (an envs.TaskFamily)
    rooms: int = 3                  # rooms: R, a maze of R x R rooms (T = 25 R^2 / 2 unless given)
    max_steps: int = 0              # T: episode step limit (0: the family's own, 50; rooms: 25 R^2 / 2)
    slip: float = 0.0               # chance that a move is replaced by one of the other three
    random_start: bool = False      # goal mazes: start anywhere, not at the fixed cell 'S'
    start_cell: int = -1            # goal mazes: start at this free cell (numbered row by row; -1: at 'S')
    goals: str = ""                 # fourrooms: goal cells TRAIN/TEST (68,80,90/103), or one list for both (103)
    second_move: float = 0.0        # goal mazes: after a move, a 2nd to a random free neighbour (the code's slip)
    reward: str = "reach"           # goal mazes: reach (+1, ends there) | every_step (+1 per step on it)
    maze: str = ""                  # fourrooms: a maze file of your own instead (legend in envs.py)
    # what the lab evaluates
    methods: tuple = ("mlsh", "mlsh_options", "flat", "shared", "random_subs")   # methods evaluated (METHODS)
    flat_lrs: tuple = ()            # flat PPO's rates run, --flat-lr among them (a validation run chooses from them)
    random_subs_master: str = "options"   # random_subs' master over untrained skills: options | paper
    # where the run is kept
    out: str = ""                   # folder for results, checkpoint, figures


TASK_FIELDS = ["preset", "env", "family", "rooms", "max_steps", "slip", "random_start", "start_cell", "goals",
               "second_move", "reward", "maze"]                          # the settings of the task

PRESETS = {  # named settings over a family's own (envs.py); --env E uses preset E; a flag given wins
    # the default run, a few minutes: both masters and flat PPO at its rate on validation goals;
    # --methods mlsh mlsh_options flat shared random_subs --flat-lrs 0.003 0.01 0.03 0.1 is the sweeps' test
    "fourrooms": dict(env="fourrooms", methods=("mlsh", "mlsh_options", "flat")),
    # flat PPO's rate is the family's (0.01, the best on validation layouts), two more beside it; the master
    # over untrained skills is the paper's, as it was when this preset's tables were made (lab/RESULTS.md)
    "bandits": dict(env="bandits", flat_lrs=(1e-2, 3e-2, 1e-1), random_subs_master="paper"),
    # the paper's Four Rooms (Sec. 6.3): fixed start, a random goal, 1 for every step on it, T 100, N 25,
    # K 4, W 20, U 30, about 2,000 steps per iteration per task (16 x 128), 2 x 64 networks; the
    # sub-policy entropy (with the reach reward), flat PPO's rates and the interruption threshold (the
    # lowest of 0.5, 0.7, 0.9, which score alike) were chosen on validation goals (lab/RESULTS.md)
    "paper": dict(env="fourrooms", reward="every_step", subpolicies=4, macro=25, max_steps=100, warmup=20,
                  joint=30, rounds=20, steps=128, layers=2, sub_lr=3e-3, sub_ent=0.03, flat_lr=3e-3,
                  flat_lrs=(1e-3, 3e-3, 1e-2, 3e-2), interrupt=0.5),
    # R x R rooms (envs.RoomTasks: T and S follow R); flat PPO's rates bracket its best on validation goals
    "rooms": dict(env="rooms", rooms=3, flat_lrs=(1e-3, 3e-3, 1e-2, 3e-2)),
}
# the paper's Four Rooms task as its released code ran it (openai/mlsh, test_envs fourrooms.py): every
# episode starts in the doorway between the right-hand rooms (cell 62), every task's goal, at
# meta-training and at test, is the bottom-right corner (cell 103, 6 moves away), and a move that
# succeeds is followed by a second to a random free neighbour with chance 1/3; the learner is the
# paper preset's (lab/RESULTS.md lists where the code's learner differed)
PRESETS["paper-code"] = dict(PRESETS["paper"], start_cell=62, goals="103", second_move=1 / 3)
METHODS = {**mlsh.METHODS,   # every method a run reports, in the order of its tables and colours: name -> label
           "shared": "one flat policy pre-trained on the training tasks, then fine-tuned",
           "random_subs": "a master over untrained sub-policies (what learning them bought)"}
META_TRAINING = ("rounds", "tasks", "warmup", "joint", "sub_lr", "sub_ent")   # settings of meta-training alone

ACTS = {  # when a setting or run option acts: one given on the command line that cannot act is refused
    # name: (when it acts, given the settings and the run options; why not, and what to do)
    "random_subs_master": (lambda c, o: "random_subs" in c.methods, "chooses random_subs' master: add random_subs "
                                                                    "to --methods"),
    "interrupt": (lambda c, o: "mlsh_options" in c.methods or ("random_subs" in c.methods and
                                                                c.random_subs_master == "options"),
                  "stops the options master's skills early: it needs mlsh_options in --methods (or random_subs "
                  "with its options master)"),
    "flat_lrs": (lambda c, o: "flat" in c.methods, "are flat PPO's learning rates: add flat to --methods"),
    "flat_lr": (lambda c, o: "flat" in c.methods, "is flat PPO's learning rate: add flat to --methods"),
    **{name: (lambda c, o: not o.eval_only, "is a setting of meta-training, which --eval-only does not run: "
                                           "leave it out, or leave out --eval-only")
       for name in META_TRAINING},
    "render": (lambda c, o: bool({"mlsh", "mlsh_options"} & set(c.methods)),
               "prints an episode of a master over the skills: add mlsh or mlsh_options to --methods"),
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


def check_config(cfg, family):
    """Every problem with a lab run's settings, as sentences that say what to do; [] when it is fine. The
    algorithm's settings are mlsh.check's; the task's, the family's constructor (make_family) checks."""
    problems = mlsh.check(cfg, family)
    flag = lambda name: "--" + name.replace("_", "-")
    for name in ["slip", "second_move"]:
        if not 0 <= getattr(cfg, name) < 1:
            problems.append(f"{flag(name)} is {getattr(cfg, name)}; it is a probability in [0, 1)")
    if cfg.max_steps < 0:
        problems.append(f"--max-steps is {cfg.max_steps}; give the episode limit T (0: the family's own)")
    if cfg.random_start and cfg.start_cell >= 0:
        problems.append(f"--random-start and --start-cell {cfg.start_cell}: choose one")
    if cfg.start_cell < -1:
        problems.append(f"--start-cell is {cfg.start_cell}; give a free cell's number (0 or more)")
    if not cfg.flat_lrs or not all(0 < lr < float("inf") for lr in cfg.flat_lrs):
        problems.append(f"--flat-lrs is {' '.join(map(str, cfg.flat_lrs))}; give one or more positive numbers")
    if cfg.reward not in envs.GoalMaze.REWARDS:
        problems.append(f"--reward {cfg.reward!r}: choose reach (+1 on reaching the goal, which ends "
                        f"the episode) or every_step (+1 for every step on the goal: the paper's)")
    if cfg.random_subs_master not in (mlsh.PAPER, mlsh.OPTIONS):
        problems.append(f"--random-subs-master {cfg.random_subs_master!r}: choose options (the skills and every "
                        f"primitive action) or paper (the skills only)")
    if "flat" in cfg.methods and cfg.flat_lr not in cfg.flat_lrs:
        problems.append(f"--flat-lrs {' '.join(map(str, cfg.flat_lrs))} leaves out flat PPO's rate {cfg.flat_lr:g}, "
                        f"the one reported (chosen on validation tasks): add it, or give it with --flat-lr")
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown or not cfg.methods:
        problems.append(f"--methods {' '.join(cfg.methods)}: choose one or more of {', '.join(METHODS)}")
    elif "shared" in cfg.methods and "flat" not in cfg.methods:
        problems.append("--methods: shared needs flat too (the shared policy is flat PPO pre-trained, at its rate)")
    return problems


# ---- The task family a run's settings make -----------------------------------

def family_class(cfg):
    """The class of the run's task family: envs.FAMILIES[cfg.env], or the user's module:Class."""
    if not cfg.family:
        if cfg.env not in envs.FAMILIES:
            raise ValueError(f"--env {cfg.env!r} is not a task family here; choose one of {', '.join(envs.FAMILIES)} "
                             f"(or give your own with --family module:Class)")
        return envs.FAMILIES[cfg.env]
    module, _, name = cfg.family.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception as e:   # no such module or class, or a module that fails to import: the same to the user
        raise ValueError(f"--family {cfg.family}: {type(e).__name__}: {e} (give module:Class, the module "
                         f"importable from here)") from None
    if not (isinstance(cls, type) and issubclass(cls, envs.TaskFamily)):
        raise ValueError(f"--family {cfg.family} is not a task family: subclass envs.TaskFamily")
    return cls


def task_arguments(cfg):
    """The task settings of cfg as a family's constructor names them: {setting: (argument, value)}, for the
    settings that differ from their defaults (a family's own defaults stand otherwise)."""
    default = Settings()
    start = None if cfg.random_start else cfg.start_cell if cfg.start_cell >= 0 else "S"
    args = {"rooms": ("rooms", cfg.rooms), "max_steps": ("max_steps", cfg.max_steps), "slip": ("slip", cfg.slip),
            "second_move": ("second_move", cfg.second_move), "reward": ("reward", cfg.reward),
            "random_start": ("start", start), "start_cell": ("start", start),
            "goals": ("goals", parse_goals(cfg.goals) if cfg.goals else None), "maze": ("rows", read_maze(cfg.maze))}
    return {k: arg for k, arg in args.items() if getattr(cfg, k) != getattr(default, k)}


def make_family(cfg, given=()):
    """The task family the settings make: the class (family_class) built with the task settings its
    constructor takes. A task setting in `given` (the names on the command line) that it does not take
    is refused, as is anything the constructor refuses; ValueError, saying what to do."""
    cls = family_class(cfg)
    takes = inspect.signature(cls).parameters
    task = task_arguments(cfg)
    refused = [k for k in given if k in task and task[k][0] not in takes]
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise ValueError(f"{flags}: the {cfg.family or cfg.env} family takes no such setting (it takes "
                         f"{', '.join(p for p in takes if p != 'self') or 'none'}): leave it out, or choose a "
                         f"family that does")
    kwargs = {arg: value for arg, value in task.values() if arg in takes}
    if cfg.maze and "name" in takes:
        kwargs["name"] = cfg.maze
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"maze file {cfg.maze}: {e}" if cfg.maze else str(e)) from None


def read_maze(path):
    """The rows of the maze file `path` (envs.read_maze), None for none; ValueError naming the file."""
    try:
        return envs.read_maze(path) if path else None
    except (ValueError, OSError) as e:
        raise ValueError(f"maze file {path}: {e.strerror if isinstance(e, OSError) else e}") from None


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
