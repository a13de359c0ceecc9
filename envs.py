"""Grid-maze task distributions for MLSH, in plain NumPy.

Frans et al., "Meta Learning Shared Hierarchies" (ICLR 2018) test their method
on distributions of related tasks. This file builds three of them on a grid:

    Four Rooms      Sutton's 13x13 maze; a task is a goal cell.
    Room mazes      R x R rooms of 5 x 5 cells, one doorway between neighbours;
                    a task is a goal cell. The bigger R, the longer the way.
    Moving Bandits  an open grid with two visible marks, redrawn every episode;
                    a task is which of the two marks pays.

Each family has a fixed split into training tasks (meta-training sees only
these) and two held-out sets: validation tasks, on which settings are
compared, and test tasks, which give the reported numbers.

Environments are batched: `n` copies step together as arrays, every copy with
its own task, so that many tasks run side by side with no Python loop over
copies. The interface follows Gymnasium without depending on it:

    env = GoalMaze(tasks=[goal_cell] * 64, seed=0)
    obs, info = env.reset()                          # obs (n, obs_dim)
    obs, rew, terminated, truncated, info = env.step(actions)   # actions (n,)

`SingleEnv(env)` wraps a one-copy environment into the familiar scalar
`reset`/`step` shape. Run `python envs.py` to see both mazes.

Legend of a maze file (a list of equal-length strings):
    '#'  wall
    '.'  free cell (also ' ', for readability)
    'S'  free cell, the start cell (optional; at most one)
"""
from types import SimpleNamespace

import numpy as np

# Actions: 0 up, 1 right, 2 down, 3 left, as (row, column) moves.
MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
ACTION_NAMES = ["up", "right", "down", "left"]
WALL, FREE, START = "#", ".", "S"

FOUR_ROOMS = [  # Sutton, Precup & Singh (1999): 104 free cells, four doorways
    "#############",
    "#S....#.....#",
    "#.....#.....#",
    "#...........#",
    "#.....#.....#",
    "#.....#.....#",
    "##.####.....#",
    "#.....###.###",
    "#.....#.....#",
    "#.....#.....#",
    "#...........#",
    "#.....#.....#",
    "#############",
]

OPEN_8X8 = ["#" * 10] + ["#" + "." * 8 + "#"] * 8 + ["#" * 10]


def room_maze(rooms, size=5):
    """`rooms` x `rooms` square rooms of size x size free cells, walls one cell thick.

    The rule, with no randomness: every two neighbouring rooms share one
    doorway, in the middle of the wall between them, and the start 'S' is the
    top-left cell of the top-left room. rooms = 2 is Four Rooms with its
    doorways centred; rooms = 3 is 19 x 19 with 237 free cells.
    """
    step = size + 1                                   # a room and the wall after it
    grid = np.full((rooms * step + 1, rooms * step + 1), WALL)
    for i in range(rooms):
        for j in range(rooms):
            grid[1 + i * step:(i + 1) * step, 1 + j * step:(j + 1) * step] = FREE
    middle = 1 + size // 2                            # a doorway's place along its wall
    for i in range(rooms):
        for j in range(1, rooms):
            grid[i * step + middle, j * step] = FREE      # between rooms (i, j - 1) and (i, j)
            grid[j * step, i * step + middle] = FREE      # between rooms (j - 1, i) and (j, i)
    grid[1, 1] = START
    return ["".join(row) for row in grid]


# ---------------------------------------------------------------------------
# The maze: layout, moves between free cells, shortest paths
# ---------------------------------------------------------------------------

class Maze:
    """A grid of walls and free cells, parsed from a list of strings.

    Free cells are numbered 0..n_cells-1 in reading order; everything below
    works on those numbers. `next_cell[c, a]` is where action a leads from
    cell c (a move into a wall stays put); `dist[c, d]` is the BFS
    shortest-path length from c to d (-1 when unreachable).
    """

    def __init__(self, rows):
        check_rows(rows)
        self.rows = [r.replace(" ", FREE) for r in rows]
        self.height, self.width = len(self.rows), len(self.rows[0])
        grid = np.array([list(r) for r in self.rows])
        self.free = grid != WALL                                   # (H, W) bool
        self.cells = np.argwhere(self.free)                        # (n_cells, 2) row, col
        self.n_cells = len(self.cells)
        index = -np.ones((self.height, self.width), dtype=int)
        index[self.free] = np.arange(self.n_cells)
        self.index = index                                         # (H, W) cell number or -1
        starts = np.argwhere(grid == START)
        self.start = int(index[tuple(starts[0])]) if len(starts) else None

        # next_cell[c, a]: stepping out of the grid or into a wall leaves you where you are.
        target = self.cells[:, None, :] + MOVES[None, :, :]       # (n_cells, 4, 2)
        r = np.clip(target[..., 0], 0, self.height - 1)
        c = np.clip(target[..., 1], 0, self.width - 1)
        nxt = index[r, c]
        stay = np.repeat(np.arange(self.n_cells)[:, None], 4, axis=1)
        self.next_cell = np.where(nxt >= 0, nxt, stay)             # (n_cells, 4)
        self.adjacency = np.zeros((self.n_cells, self.n_cells), dtype=bool)
        self.adjacency[stay, self.next_cell] = True
        self.adjacency[np.arange(self.n_cells), np.arange(self.n_cells)] = False
        self.dist = bfs_distances(self.adjacency)                  # (n_cells, n_cells)
        # neighbours[c, :n_neighbours[c]]: the free cells one move from c (for the original code's slip)
        self.n_neighbours = self.adjacency.sum(axis=1)
        self.neighbours = np.argsort(~self.adjacency, axis=1, kind="stable")[:, :4]

    def where(self, cell):
        """'line r, column c' of a cell, counted as in the maze's text."""
        r, c = self.cells[cell]
        return f"line {r + 1}, column {c + 1}"

    def render(self, marks=None):
        """Text picture; `marks` maps a cell number to the character drawn there."""
        grid = [list(r.replace(START, FREE)) for r in self.rows]
        for cell, ch in (marks or {}).items():
            r, c = self.cells[cell]
            grid[r][c] = ch
        return "\n".join("".join(r) for r in grid)


def bfs_distances(adjacency):
    """All-pairs shortest path lengths by breadth-first search from every cell at once.

    adjacency: (..., n, n) bool, True where one move leads from i to j. A leading
    batch of graphs is allowed. Returns int distances, -1 where unreachable.
    The frontier of every source grows by one move per pass, as one matrix product.
    """
    n = adjacency.shape[-1]
    eye = np.broadcast_to(np.eye(n, dtype=bool), adjacency.shape)
    dist = np.where(eye, 0, -1)
    seen, frontier = eye.copy(), eye.copy()
    a = adjacency.astype(np.float32)
    d = 0
    while frontier.any():
        d += 1
        frontier = (frontier.astype(np.float32) @ a > 0) & ~seen   # cells first reached in d moves
        dist[frontier] = d
        seen |= frontier
    return dist


def best_returns(maze, steps, slip=0.0, second_move=0.0):
    """best[s, g]: the most reward a policy can collect in `steps` steps from cell s when every step
    that ends on cell g pays 1 (the paper's Four Rooms reward); its expectation when moves slip.
    Dynamic programming over the steps left: B_k(c, g) = max_a E[1(c' = g) + B_(k-1)(c', g)]."""
    on_goal = np.eye(maze.n_cells)                       # [c', g]
    B = np.zeros((maze.n_cells, maze.n_cells))           # B_0
    nxt = maze.next_cell                                 # (cells, 4 actions)
    moved = nxt != np.arange(maze.n_cells)[:, None]
    spread = maze.adjacency / np.maximum(maze.n_neighbours, 1)[:, None]   # to a random free neighbour
    for _ in range(steps):
        V = on_goal + B                                  # [c', g]: the value of ending the step on c'
        after = (1 - second_move) * V + second_move * (spread @ V) if second_move else V
        Q = np.where(moved[..., None], after[nxt], V[:, None, :])   # (c, a, g): the move a taken as meant
        if slip:                                         # or replaced by one of the other three
            Q = (1 - slip) * Q + slip / 3 * (Q.sum(axis=1, keepdims=True) - Q)
        B = Q.max(axis=1)
    return B


def read_maze(path):
    """Read a maze file in the legend above: one row per line, all rows of one length."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError("this is not a text file: a maze is lines of '#', '.', ' ' and 'S'") from None
    if "\0" in text:
        raise ValueError("this is not a text file: a maze is lines of '#', '.', ' ' and 'S'")
    rows = text.splitlines()
    while rows and not rows[-1].strip():
        rows.pop()                                   # trailing blank lines
    check_rows(rows)
    return rows


def check_rows(rows):
    """Raise ValueError, naming the line and column, if `rows` is not a maze in the legend."""
    if not rows:
        raise ValueError("the maze is empty: write one row of '#', '.', ' ' or 'S' per line")
    for r, row in enumerate(rows, 1):
        if len(row) != len(rows[0]):
            raise ValueError(f"line {r} has {len(row)} characters, line 1 has {len(rows[0])}; "
                             f"every row must be as long as the first")
        for c, ch in enumerate(row, 1):
            if ch not in (WALL, FREE, START, " "):
                raise ValueError(f"line {r}, column {c}: {ch!r} is not in the legend "
                                 f"('#' wall, '.' or ' ' free, 'S' start)")
    starts = [(r, c) for r, row in enumerate(rows, 1) for c, ch in enumerate(row, 1) if ch == START]
    if len(starts) > 1:
        raise ValueError(f"line {starts[1][0]}, column {starts[1][1]}: a second start 'S' (the first is at "
                         f"line {starts[0][0]}, column {starts[0][1]}); keep one")
    if all(ch == WALL for row in rows for ch in row):
        raise ValueError("the maze has no free cell: mark free cells with '.', ' ' or 'S'")


# ---------------------------------------------------------------------------
# Batched environment: n copies of a maze stepping together
# ---------------------------------------------------------------------------

class GridEnv:
    """Base of the batched grid tasks: n copies, each with its own task.

    Step semantics (per copy):
      - action a in {0 up, 1 right, 2 down, 3 left}; with probability `slip`
        it is replaced by one of the other three, uniformly;
      - a move that changes the cell is followed, with probability
        `second_move`, by a second one to a free neighbour of the new cell,
        uniformly (the slip of the paper's released code, which used 1/3);
      - reward +1 and `terminated` on reaching the paying cell; subclasses may
        end the episode at other cells with reward 0 (also `terminated`);
      - `truncated` when the step limit `max_steps` is reached first. It is
        kept apart from `terminated`: a truncated episode has a future, so a
        learner should bootstrap its value there, and not after termination.

    Automatic reset: a copy whose episode ended in this step is reset at once.
    The returned `obs` row is then the first observation of its new episode;
    the last observation of the old one is in `info["final_obs"]`. The info
    dict also carries, for the copies that just ended, `success` (reached the
    paying cell) and `score`, the normalised return: shortest path length
    divided by the steps taken if it succeeded, else 0 (1 = optimal).

    Randomness (slip, starts, marks) comes only from the env's own generator,
    seeded by `seed` or by `reset(seed=...)`. Tasks never come from the seed.
    """

    def __init__(self, maze, tasks, max_steps, slip=0.0, seed=None, autoreset=True, second_move=0.0):
        self.maze = maze
        self.tasks = np.asarray(tasks, dtype=int)
        self.n = len(self.tasks)
        self.max_steps = max_steps
        self.slip, self.second_move = slip, second_move
        self.autoreset = autoreset
        self.n_actions = 4
        self.action_space = SimpleNamespace(n=4)    # Gymnasium's Discrete(4), as far as it is used here
        self.rng = np.random.default_rng(seed)
        self.pos = np.zeros(self.n, dtype=int)      # current cell of each copy
        self.t = np.zeros(self.n, dtype=int)        # steps taken in the current episode
        self.best = np.ones(self.n, dtype=int)      # shortest path length of the episode

    # --- to be defined by a task family ---------------------------------
    def _new_episodes(self, idx):
        """Draw starts (and anything else per episode) for copies idx; set pos and best."""
        raise NotImplementedError

    def _outcome(self):
        """(ended, paid) bool arrays for the copies at their current cells."""
        raise NotImplementedError

    def _observe(self):
        raise NotImplementedError

    def _result(self, paid):
        """success and score of the copies whose episode ends now (read only for those)."""
        return {"success": paid, "score": np.where(paid, self.best / np.maximum(self.t, 1), 0.0)}

    # --- Gymnasium-shaped interface --------------------------------------
    def reset(self, seed=None, options=None):
        """Start a fresh episode in every copy. options={"tasks": array} changes the tasks."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if options and "tasks" in options:
            tasks = np.asarray(options["tasks"], dtype=int).reshape(-1)
            if len(tasks) != self.n:
                raise ValueError(f"options['tasks'] has {len(tasks)} entries; this env has {self.n} copies")
            self.tasks = tasks
        self._new_episodes(np.arange(self.n))
        return self._observe(), {}

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.n,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"step() takes {self.n} integer actions, got shape {actions.shape} dtype {actions.dtype}")
        if actions.min() < 0 or actions.max() >= self.n_actions:
            raise ValueError(f"actions must lie in 0..{self.n_actions - 1}; got {actions.min()}..{actions.max()}")
        if self.slip > 0:
            slipped = self.rng.random(self.n) < self.slip
            other = (actions + self.rng.integers(1, 4, size=self.n)) % 4   # one of the other three
            actions = np.where(slipped, other, actions)
        new = self.maze.next_cell[self.pos, actions]
        if self.second_move > 0:
            again = (new != self.pos) & (self.rng.random(self.n) < self.second_move)
            pick = (self.rng.random(self.n) * self.maze.n_neighbours[new]).astype(int)
            new = np.where(again, self.maze.neighbours[new, pick], new)
        self.pos = new
        self.t += 1
        ended, paid = self._outcome()
        reward = paid.astype(float)
        terminated = ended
        truncated = ~ended & (self.t >= self.max_steps)
        done = terminated | truncated
        final_obs = self._observe()
        info = {"final_obs": final_obs, **self._result(paid)}
        obs = final_obs
        if self.autoreset and done.any():
            self._new_episodes(np.flatnonzero(done))
            obs = self._observe()
        return obs, reward, terminated, truncated, info

    def render(self, i=0):
        """Text picture of copy i: 'A' the agent, '#' walls, and the task's landmarks."""
        return self.maze.render({**self.landmarks(i), int(self.pos[i]): "A"})

    @property
    def obs_shape(self):
        return (self.obs_dim,)


class GoalMaze(GridEnv):
    """A maze where a task is a goal cell: Four Rooms (Sutton et al. 1999) by default.

    Description: by default the 13x13 Four Rooms grid, four rooms joined by
        four one-cell doorways; any maze in the legend above works (`rows`).
    Actions: 0 up, 1 right, 2 down, 3 left.
    Observation: one-hot of the agent's cell, shape (n_cells,) = (104,) for
        Four Rooms, float32. The goal is not in the observation: a learner
        finds it from reward.
    Rewards: reward="reach": +1 on reaching the goal, 0 otherwise.
        reward="every_step" (the paper's Four Rooms, as its code scores it):
        +1 for every step that ends on the goal. To stay there an agent
        bumps into a wall next to the goal, as in the original; a goal with
        no wall beside it pays at best every other step.
    Termination: reward="reach": reaching the goal (terminated); either
        reward: `max_steps` (truncated).
    Score (info, when an episode ends): reach: shortest path / steps taken
        if the goal was reached, else 0; every_step: the return divided by
        the best return any policy could get in `max_steps` steps from that
        start (`best_returns`). Either way 1 is optimal.
    Arguments: tasks (goal cell per copy), start ('S', a cell number, or None
        for a uniformly random start other than the goal), slip, max_steps,
        seed, reward, second_move.
    """

    REWARDS = ("reach", "every_step")

    def __init__(self, tasks, start="S", slip=0.0, max_steps=50, seed=None, autoreset=True, rows=FOUR_ROOMS,
                 reward="reach", second_move=0.0):
        maze = Maze(rows)
        super().__init__(maze, tasks, max_steps, slip, seed, autoreset, second_move)
        if reward not in self.REWARDS:
            raise ValueError(f"reward {reward!r}: choose one of {', '.join(self.REWARDS)}")
        self.start = maze.start if start == "S" else start
        self.obs_dim = maze.n_cells
        self._eye = np.eye(maze.n_cells, dtype=np.float32)
        self.reward = reward
        if reward == "every_step":
            self.best_return = best_returns(maze, max_steps, slip, second_move)   # (start, goal)
            self.ret, self.hit, self._best_ret = np.zeros(self.n), np.zeros(self.n, dtype=bool), np.zeros(self.n)

    def _new_episodes(self, idx):
        goals = self.tasks[idx]
        if self.start is None:   # uniform over the free cells other than the goal
            s = self.rng.integers(0, self.maze.n_cells - 1, size=len(idx))
            s = s + (s >= goals)
        else:
            s = np.full(len(idx), self.start)
        self.pos[idx], self.t[idx] = s, 0
        self.best[idx] = self.maze.dist[s, goals]
        if self.reward == "every_step":
            self.ret[idx], self.hit[idx] = 0.0, False
            self._best_ret[idx] = self.best_return[s, goals]      # the best return from this start

    def _outcome(self):
        paid = self.pos == self.tasks
        if self.reward == "every_step":
            self.ret += paid
            self.hit |= paid
            return np.zeros(self.n, dtype=bool), paid                  # the goal does not end it
        return paid, paid

    def _result(self, paid):
        if self.reward == "reach":
            return super()._result(paid)
        return {"success": self.hit.copy(), "score": self.ret / np.maximum(self._best_ret, 1e-9)}

    def _observe(self):
        return self._eye[self.pos]

    def obs_at(self, cells, i=0):
        """Observations with the agent at each of `cells`, in copy i's episode (for drawing policies)."""
        return self._eye[cells]

    def landmarks(self, i=0):
        """Cells to draw in copy i's picture: the goal, 'G'."""
        return {int(self.tasks[i]): "G"}


class MovingBandits(GridEnv):
    """Moving Bandits (the paper's Sec. 6.1) on an open grid; a task is which mark pays.

    Description: an open 8x8 grid with two marks, 0 and 1, placed at random
        every episode, both visible. Reaching either mark ends the episode;
        only the task's mark pays. A policy that ignores the task gets about
        half the reward; a learner must find out from reward which mark pays.
    Actions: 0 up, 1 right, 2 down, 3 left.
    Observation: (6,) float32: the agent's (row, col) scaled to [0, 1], then
        the offsets (drow, dcol) from the agent to mark 0 and to mark 1,
        divided by the grid size.
    Rewards: +1 on reaching the paying mark, 0 otherwise.
    Termination: reaching either mark (terminated); `max_steps` (truncated).
    Arguments: tasks (0 or 1 per copy), pairs (the pool of mark-cell pairs to
        draw layouts from: the training or held-out pool), slip, max_steps, seed.
    """

    def __init__(self, tasks, pairs, slip=0.0, max_steps=50, seed=None, autoreset=True, rows=OPEN_8X8):
        maze = Maze(rows)
        super().__init__(maze, tasks, max_steps, slip, seed, autoreset)
        self.pairs = np.asarray(pairs)                  # (n_pairs, 2) cell numbers
        self.marks = np.zeros((self.n, 2), dtype=int)   # mark cells of each copy
        self.obs_dim = 6
        # dist_avoid[b, s, g]: shortest path s -> g that does not pass through cell b
        # (the unpaid mark ends the episode, so the best path must go round it).
        adj = np.repeat(maze.adjacency[None], maze.n_cells, axis=0)
        b = np.arange(maze.n_cells)
        adj[b, b, :] = False
        adj[b, :, b] = False
        self.dist_avoid = bfs_distances(adj)
        self._rc = maze.cells / np.array([maze.height, maze.width])

    def _new_episodes(self, idx):
        k = len(idx)
        pairs = self.pairs[self.rng.integers(0, len(self.pairs), size=k)]
        flip = self.rng.random(k) < 0.5                 # either cell may be mark 0
        marks = np.where(flip[:, None], pairs[:, ::-1], pairs)
        # start: uniform over the cells that hold no mark
        s = self.rng.integers(0, self.maze.n_cells - 2, size=k)
        lo, hi = marks.min(axis=1), marks.max(axis=1)
        s = s + (s >= lo)
        s = s + (s >= hi)
        self.marks[idx], self.pos[idx], self.t[idx] = marks, s, 0
        goal = marks[np.arange(k), self.tasks[idx]]
        other = marks[np.arange(k), 1 - self.tasks[idx]]
        self.best[idx] = self.dist_avoid[other, s, goal]

    def _outcome(self):
        on = self.marks == self.pos[:, None]             # (n, 2)
        paid = on[np.arange(self.n), self.tasks]
        return on.any(axis=1), paid

    def _observe(self):
        return self._features(self.pos, self.marks)

    def obs_at(self, cells, i=0):
        """Observations with the agent at each of `cells` and copy i's marks (for drawing policies)."""
        return self._features(np.asarray(cells), np.repeat(self.marks[i:i + 1], len(cells), axis=0))

    def _features(self, pos, marks):
        rc = self._rc[pos]                                 # (n, 2)
        off0 = self._rc[marks[:, 0]] - rc
        off1 = self._rc[marks[:, 1]] - rc
        scale = np.array([(self.maze.height - 1) / self.maze.height, (self.maze.width - 1) / self.maze.width])
        return np.concatenate([rc / scale, off0, off1], axis=1).astype(np.float32)

    def landmarks(self, i=0):
        """Cells to draw in copy i's picture: the paying mark '$', the other one by its number."""
        paying = int(self.tasks[i])
        return {int(self.marks[i, j]): ("$" if j == paying else str(j)) for j in (0, 1)}


class SingleEnv:
    """One copy of a batched env, with Gymnasium's scalar reset/step shape and no automatic reset."""

    def __init__(self, env):
        if env.n != 1:
            raise ValueError(f"SingleEnv wraps a one-copy env; this one has {env.n} copies")
        env.autoreset = False
        self.env = env
        self.action_space = env.action_space
        self.observation_shape = env.obs_shape
        self.done = True

    def reset(self, seed=None, options=None):
        if options and "task" in options:
            options = {"tasks": [options["task"]]}
        obs, info = self.env.reset(seed=seed, options=options)
        self.done = False
        return obs[0], info

    def step(self, action):
        if self.done:
            raise RuntimeError("the episode has ended: call reset() before step()")
        if not isinstance(action, (int, np.integer)):
            raise ValueError(f"action must be an int in 0..{self.action_space.n - 1}, got {action!r}")
        obs, r, term, trunc, info = self.env.step(np.array([action]))
        self.done = bool(term[0] or trunc[0])
        info = {k: v[0] for k, v in info.items()}
        return obs[0], float(r[0]), bool(term[0]), bool(trunc[0]), info

    def render(self):
        return self.env.render(0)


def check_env(env, steps=200):
    """A Gymnasium-style conformance check of a SingleEnv; raises AssertionError saying what failed.

    reset returns (obs, info) with obs of the documented shape and dtype;
    step returns (obs, float reward, bool terminated, bool truncated, dict);
    the same seed gives the same trajectory; actions outside the range are
    refused with a ValueError.
    """
    def trajectory(seed):
        obs, info = env.reset(seed=seed)
        assert isinstance(info, dict), "reset must return (obs, info) with info a dict"
        rng = np.random.default_rng(0)
        seen = [obs]
        for _ in range(steps):
            out = env.step(int(rng.integers(env.action_space.n)))
            assert len(out) == 5, "step must return obs, reward, terminated, truncated, info"
            obs, reward, terminated, truncated, info = out
            assert obs.shape == env.observation_shape and obs.dtype == np.float32, \
                f"step's obs is {obs.shape} {obs.dtype}, documented {env.observation_shape} float32"
            assert isinstance(reward, float), "the reward must be a float"
            assert isinstance(terminated, bool) and isinstance(truncated, bool), "terminated/truncated must be bools"
            assert not (terminated and truncated), "an episode cannot both terminate and be truncated"
            assert isinstance(info, dict), "step's info must be a dict"
            seen += [obs, np.array([reward, terminated, truncated])]
            if terminated or truncated:
                obs, _ = env.reset()
                seen.append(obs)
        return seen

    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_shape and obs.dtype == np.float32, \
        f"reset's obs is {obs.shape} {obs.dtype}, documented {env.observation_shape} float32"
    a, b = trajectory(7), trajectory(7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "the same seed gave another trajectory"
    env.reset(seed=0)
    for bad in (-1, env.action_space.n, 1.5):
        try:
            env.step(bad)
        except ValueError:
            continue
        raise AssertionError(f"step({bad!r}) was accepted; actions are ints in 0..{env.action_space.n - 1}")


# ---------------------------------------------------------------------------
# Task distributions with a fixed train / held-out split
# ---------------------------------------------------------------------------

class TaskFamily:
    """A distribution of tasks with a fixed split, and a factory for batched envs.

    A family of your own subclasses this, sets every attribute below and
    defines make(); FAMILIES (at the end of this file) gives it a name for
    `python mlsh.py --env NAME` (the lab also takes `--family module:Class`).

    train_tasks / val_tasks / test_tasks: arrays of task ids. Meta-training
    samples only from train_tasks; settings are compared on val_tasks; the
    reported numbers come from test_tasks. `make(tasks, split, seed)` builds
    a batched env with one copy per entry of `tasks`, drawing what it draws
    (starts, marks) from the split's pool.
    """

    name = "tasks"           # what a run is headed with
    settings = {}            # the algorithm's settings chosen for the family (mlsh.Config fields; else its defaults)
    obs_dim, n_actions = 0, 4                   # observation size D and primitive actions A
    one_hot = False          # observations are one-hot cells (networks then look their row up)
    goal_cells = False       # a task is a goal cell of the maze (what the lab's reach measures)
    maze = None              # the Maze every env of the family runs in
    max_steps = 50           # T: the episode step limit
    slip, second_move, reward = 0.0, 0.0, "reach"    # how moves go astray, and what pays (GridEnv, GoalMaze)
    start_cell = None        # where every episode starts (None: anywhere)
    train_tasks = val_tasks = test_tasks = np.array([], dtype=int)

    def sample(self, rng, n):
        """n training tasks, drawn uniformly with replacement."""
        return rng.choice(self.train_tasks, size=n)

    def held_out(self, split):
        """The task ids of a held-out split, "test" or "validation"; ValueError if there are none."""
        tasks = {"test": self.test_tasks, "validation": self.val_tasks}.get(split)
        if tasks is None or not len(tasks):
            raise ValueError("choose test or validation" if tasks is None else
                             "these tasks have no validation split (goals given by hand): evaluate on the test tasks")
        return tasks

    def make(self, tasks, split="train", seed=None):
        raise NotImplementedError


class GoalTasks(TaskFamily):
    """Goal cells of a maze (Four Rooms by default).

    Held out: `n_test` test goals (at most a quarter of them) chosen once by
    `split_seed` among the cells at least `min_dist` moves from the start
    (the maze's 'S' cell, or the cell `start` names; or, if too few are that
    far, among the farther half; or among all cells if there is no start);
    then as many validation goals, drawn the same way from the far cells
    left (the farthest left, if too few). Training goals: every other free
    cell but the start. start="S" starts every episode at 'S', a cell
    number there, start=None anywhere.

    goals=(train, test), two lists of cell numbers, replaces the split: meta-
    training draws from `train` and the test is `test`. Goals given so have
    no validation split. The same list twice is the paper's released code,
    whose every task, at meta-training and at test, was cell 103: nothing is
    held out, and only there do training and test goals meet.
    """

    one_hot = True           # a maze observes the agent's cell, one-hot

    goal_cells = True

    def __init__(self, start="S", slip=0.0, max_steps=50, n_test=16, min_dist=10, split_seed=1234, rows=FOUR_ROOMS,
                 reward="reach", second_move=0.0, goals=None, name="fourrooms"):
        self.maze, self.name = Maze(rows), name
        self.rows, self.start, self.slip, self.max_steps, self.reward = rows, start, slip, max_steps, reward
        self.second_move = second_move
        if start == "S" and self.maze.start is None:
            raise ValueError("the maze has no start cell 'S': add one, or start anywhere (--random-start)")
        if start not in ("S", None) and not 0 <= start < self.maze.n_cells:
            raise ValueError(f"start cell {start}: the maze's free cells are numbered 0 to {self.maze.n_cells - 1}")
        ref = self.maze.start if start in ("S", None) else start
        self.start_cell = None if start is None else ref         # where every episode starts (None: anywhere)
        cut_off = np.flatnonzero(self.maze.dist[0 if ref is None else ref] < 0)
        if len(cut_off):
            raise ValueError(f"{self.maze.where(cut_off[0])}: this free cell cannot be reached from "
                             f"{'the start' if ref is not None else 'the rest of the maze'}; "
                             f"wall it in with '#' or open a way to it")
        self.obs_dim, self.n_actions = self.maze.n_cells, 4
        if goals is not None:
            self._given(*goals, ref)
            return
        cells = np.array([c for c in range(self.maze.n_cells) if c != ref])
        if len(cells) < 4:
            raise ValueError(f"the maze has {len(cells)} goal cell(s) (free cells other than 'S'); "
                             f"a held-out split needs at least 4")
        n_test = min(n_test, len(cells) // 4)
        if ref is None:
            far = cells
        else:
            dist = self.maze.dist[ref, cells]
            far = cells[dist >= min_dist]
            if len(far) < n_test:
                far = cells[np.argsort(-dist, kind="stable")[:max(n_test, len(cells) // 2)]]
        rng = np.random.default_rng(split_seed)
        self.test_tasks = np.sort(rng.choice(far, size=n_test, replace=False))
        pool = np.setdiff1d(far, self.test_tasks)
        if len(pool) < n_test:                          # too few far cells left: the farthest of the rest
            rest = np.setdiff1d(cells, self.test_tasks)
            pool = rest[np.argsort(-self.maze.dist[0 if ref is None else ref, rest], kind="stable")[:n_test]]
        self.val_tasks = np.sort(rng.choice(pool, size=n_test, replace=False))
        self.train_tasks = np.setdiff1d(cells, np.r_[self.test_tasks, self.val_tasks])

    def _given(self, train, test, start):
        """The split goals=(train, test) names, checked: free cells, not the start, apart or the same."""
        train, test = (np.unique(np.asarray(g, dtype=int)) for g in (train, test))
        for name, g in (("training", train), ("test", test)):
            if not len(g) or g.min() < 0 or g.max() >= self.maze.n_cells or start in g:
                raise ValueError(f"{name} goals {g.tolist()}: give one or more free cells, numbered 0 to "
                                 f"{self.maze.n_cells - 1}, other than the start cell {start}")
        if np.intersect1d(train, test).size and not np.array_equal(train, test):
            raise ValueError(f"training goals {train.tolist()} and test goals {test.tolist()} share some: "
                             f"hold the test goals out, or give the same goals for both (nothing held out)")
        self.train_tasks, self.test_tasks, self.val_tasks = train, test, np.array([], dtype=int)

    def make(self, tasks, split="train", seed=None):
        return GoalMaze(tasks, start=self.start, slip=self.slip, max_steps=self.max_steps, seed=seed, rows=self.rows,
                        reward=self.reward, second_move=self.second_move)


class RoomTasks(GoalTasks):
    """Goal cells of an R x R room maze (`room_maze`), the start fixed in the top-left corner.

    As GoalTasks, with the held-out goals at least 5 R moves from the start
    (10 for R = 2, as in Four Rooms): the far goals, which a short random walk
    from the start does not find, grow with the maze. max_steps defaults to
    `horizon(R)`; the rollout steps S follow it (settings).
    """

    @property
    def settings(self):
        """S, the first multiple of 64 that holds a whole episode; Four Rooms' settings otherwise, but the
        interruption threshold (0.1, 0.2, 0.3 tried) and flat PPO's step, chosen on validation goals at R = 3."""
        return dict(steps=64 * -(-self.max_steps // 64), interrupt=0.2, flat_lr=3e-3)

    @staticmethod
    def horizon(rooms):
        """The episode limit that grows with the maze: T = 25 R^2 / 2, rounded down (50, 112, 200 for
        R = 2, 3, 4). It grows as the maze's area, as the length of a walk that covers the maze does;
        at R = 2 it is Four Rooms' 50."""
        return 25 * rooms * rooms // 2

    def __init__(self, rooms=3, start="S", slip=0.0, max_steps=None, n_test=16, split_seed=1234, reward="reach",
                 second_move=0.0):
        if not isinstance(rooms, (int, np.integer)) or rooms < 2:
            raise ValueError(f"rooms is {rooms!r}; a room maze has at least 2 x 2 rooms")
        self.rooms = int(rooms)
        super().__init__(start, slip, self.horizon(self.rooms) if max_steps is None else max_steps, n_test,
                         min_dist=5 * self.rooms, split_seed=split_seed, rows=room_maze(self.rooms), reward=reward,
                         second_move=second_move, name=f"rooms ({self.rooms} x {self.rooms})")


class BanditTasks(TaskFamily):
    """Moving Bandits. The two tasks (mark 0 pays, mark 1 pays) are used in every
    phase; what is held out is the layouts: the unordered pairs of mark cells
    are split once by `split_seed` into training, validation and test pairs
    (a quarter each held out), and evaluation draws marks only from pairs that
    meta-training never saw."""

    name = "bandits"
    # K 2 and N 10 as in the paper, the best of five schedules (W, U) and the sub-policies' step over 10 seeds;
    # flat PPO's step the best of 0.001 to 0.1 on validation layouts (lab/RESULTS.md)
    settings = dict(subpolicies=2, macro=10, warmup=5, joint=15, sub_lr=3e-3, flat_lr=1e-2)

    def __init__(self, slip=0.0, max_steps=50, test_fraction=0.25, split_seed=1234, rows=OPEN_8X8):
        self.maze = Maze(rows)
        self.rows, self.slip, self.max_steps = rows, slip, max_steps
        i, j = np.triu_indices(self.maze.n_cells, k=1)
        pairs = np.stack([i, j], axis=1)
        rng = np.random.default_rng(split_seed)
        u = rng.random(len(pairs))
        test, val = u < test_fraction, u >= 1 - test_fraction
        self.pairs = {"train": pairs[~test & ~val], "validation": pairs[val], "test": pairs[test]}
        self.train_tasks = self.val_tasks = self.test_tasks = np.array([0, 1])
        self.obs_dim, self.n_actions = 6, 4

    def make(self, tasks, split="train", seed=None):
        return MovingBandits(tasks, self.pairs[split], slip=self.slip, max_steps=self.max_steps, seed=seed,
                             rows=self.rows)


FAMILIES = {"fourrooms": GoalTasks, "rooms": RoomTasks, "bandits": BanditTasks}   # a family by its name


if __name__ == "__main__":
    fr = GoalTasks()
    env = fr.make([fr.test_tasks[0]], seed=0)
    env.reset()
    print(f"Four Rooms: {fr.maze.n_cells} free cells, {len(fr.train_tasks)} training goals, "
          f"{len(fr.test_tasks)} held-out goals")
    print(env.render())
    rt = RoomTasks(rooms=3)
    env = rt.make([rt.test_tasks[0]], seed=0)
    env.reset()
    print(f"\nRoom maze, 3 x 3 rooms: {rt.maze.n_cells} free cells, {len(rt.train_tasks)} training goals, "
          f"{len(rt.test_tasks)} held-out goals (at least {5 * rt.rooms} moves from the start); "
          f"episodes of at most {rt.max_steps} steps")
    print(env.render())
    bt = BanditTasks()
    env = bt.make([0], split="test", seed=0)
    env.reset()
    print("\nMoving Bandits: mark 0 pays ('$'), the other mark is '1'; A = agent")
    print(env.render())
