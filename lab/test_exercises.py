"""Tests of the exercises (lab/exercises.py): each check rejects every wrong answer written for it, in words
that name the mistake, and passes the real function; the handout blanks each exercise and its check fails
there; the files a course copies run and pass their own tests in a folder of their own.

Run from the repository's root: python -m pytest -q
"""
import ast
import concurrent.futures
import multiprocessing
import re
import subprocess
import sys

import pytest

from lab import exercises

ROOT = exercises.ROOT


def _check_answer(job):
    name, i = job
    edits = None if i is None else exercises.WRONG_ANSWERS[name][i][2]
    return exercises.check(name, exercises.sources() if edits is None else exercises.with_answer(name, edits))


@pytest.fixture(scope="module")
def checked():
    """Every exercise's check on the real files and on each of its wrong answers, two processes side by side."""
    jobs = [(n, None) for n in exercises.EXERCISES] + [(n, i) for n, answers in exercises.WRONG_ANSWERS.items()
                                                       for i in range(len(answers))]
    jobs.sort(key=lambda job: job[0] != "bfs_distances")   # the slowest (time limits) first, so the two workers end together
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return dict(zip(jobs, pool.map(_check_answer, jobs)))


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_each_check_passes_the_real_function_and_rejects_every_wrong_answer_naming_its_mistake(name, checked):
    real = checked[name, None]
    assert real and not [m for _, m in real if m], f"{name}'s check fails on the real function: {real}"
    answers = exercises.WRONG_ANSWERS[name]
    assert len(answers) >= 5, f"{name} has {len(answers)} wrong answers; at least five, over its whole contract"
    for i, (what, words, _) in enumerate(answers):
        failures = [m for _, m in checked[name, i] if m]
        assert failures, f"the check of {name} passes a wrong answer ({what})"
        assert all(re.match(r"\w+: \S", m) and not m.split(": ", 1)[1].startswith("assert") for m in failures), \
            f"a failure of {name}'s check on a wrong answer ({what}) does not say in words what is wrong: {failures}"
        assert any(words in m for m in failures), \
            f"no failure of {name}'s check on a wrong answer ({what}) names it ({words!r}): {failures}"


def test_each_wrong_answer_is_applied_by_name_and_still_differs_from_the_function():
    src = exercises.sources()
    for name, answers in exercises.WRONG_ANSWERS.items():
        f = exercises.EXERCISES[name]
        today = ast.dump(exercises._function(src[f], name))
        for what, _, edits in answers:
            changed = exercises.answer(src[f], name, edits)
            assert ast.dump(exercises._function(changed, name)) != today, f"{name}: the wrong answer ({what}) is today's"
            others = lambda text: [ast.dump(n) for n in ast.parse(text).body if getattr(n, "name", None) != name]
            assert others(changed) == others(src[f]), f"{name}: the wrong answer ({what}) changed another function"
    with pytest.raises(ValueError, match="no longer fits gae: update it"):
        exercises.answer(src["mlsh.py"], "gae", [("rew * 2", "rew")])
    # spacing and comments do not matter: the edit is of the syntax tree
    spaced = src["mlsh.py"].replace("(1.0 - end[t])", "(1.0   -   end[t])")
    assert exercises.answer(spaced, "gae", [("1.0 - end[t]", "1.0 - term[t]")]) == \
        exercises.answer(src["mlsh.py"], "gae", [("1.0 - end[t]", "1.0 - term[t]")])


def test_the_in_process_check_selects_what_pytest_k_selects():
    collect = lambda name: subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                                           "no:cacheprovider", "test_mlsh.py", "-k", name], cwd=ROOT,
                                          capture_output=True, text=True)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = dict(zip(exercises.EXERCISES, pool.map(collect, exercises.EXERCISES)))
    for name, r in runs.items():
        collected = sorted({re.sub(r"\[.*", "", line.split("::")[1]) for line in r.stdout.splitlines() if "::" in line})
        in_process = sorted({t for t, _ in exercises.check(name, exercises.sources())})
        assert collected == in_process, f"-k {name}: pytest collects {collected}, the in-process check runs {in_process}"


def _handout(name, tmp_path):
    return name, exercises.handout(name, tmp_path / name)


def test_the_handout_blanks_each_exercise_and_its_check_fails_there(tmp_path):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda n: _handout(n, tmp_path), exercises.EXERCISES))
    for name, (blanked, real) in runs:
        assert blanked.returncode == 1 and f"NotImplementedError: exercise: write {name}" in blanked.stdout, \
            f"the handout of {name}: its check does not fail on the blanked function:\n{blanked.stdout[-2000:]}"
        assert real.returncode == 0, f"the check of {name} fails on the real function:\n{real.stdout[-2000:]}"
        written = sorted(p.name for p in (tmp_path / name).iterdir() if not p.name.startswith("."))  # not a plugin's
        assert written == sorted(exercises.COPIED)
        f = exercises.EXERCISES[name]
        got = exercises._function((tmp_path / name / f).read_text(), name)
        want = exercises._function((ROOT / f).read_text(), name)
        assert ast.dump(got.args) == ast.dump(want.args) and ast.get_docstring(got) == ast.get_docstring(want)
        assert ast.unparse(got.body[-1]) == f"raise NotImplementedError('exercise: write {name}')"


def test_the_handout_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lab.exercises", "gae", "--out", str(tmp_path / "h")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "NotImplementedError: exercise: write gae" in r.stdout and " passed" in r.stdout, r.stdout
    r = subprocess.run([sys.executable, "-m", "lab.exercises", "gae", "--out", str(tmp_path / "h")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "is not empty" in r.stderr          # never writes over a folder


def test_the_files_a_course_copies_run_and_pass_their_own_tests_alone(tmp_path):
    for f in exercises.COPIED + ["requirements.txt", "README.md"]:
        (tmp_path / f).write_text((ROOT / f).read_text())
    r = subprocess.run([sys.executable, "mlsh.py", "--quick"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and re.search(r"^mlsh .*\n^mlsh_options .*\n^flat ", r.stdout, re.M), r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
