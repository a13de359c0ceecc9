"""The lab: everything around the algorithm (mlsh.py) and the tasks (envs.py) that a course does not copy.

Run from the repository's root: `python -m lab` (a run, kept in runs/), `python -m lab.sweep` (many
meta-training seeds), `python -m lab.exercises NAME` (a handout), `python -m lab.fingerprint` (two
commits' learners side by side). It imports mlsh and envs; they never import it. lab/README.md is its
manual, lab/RESULTS.md what it has measured.
"""
import numpy as np

import mlsh

# the lab's random streams, numbered after the algorithm's (3 is retired: it drew the bootstrap intervals)
STREAMS = {**mlsh.STREAMS, "random_subs": 4, "shared": 5, "skills_alone": 6, "reach": 7, "episode": 8}


def stream(seed, name, *more):
    """The generator of the lab's stream `name` (STREAMS) for this seed, as mlsh.stream draws the algorithm's."""
    return np.random.default_rng([seed, STREAMS[name], *more])
