"""Tests of the exercises (exercises.py): each check rejects every wrong answer written for it, in words,
and passes the real function; the handout blanks each exercise and its check fails there; the three
files a course copies pass their own tests in a folder of their own.

Run: python -m pytest -q
"""
import ast
import concurrent.futures
import multiprocessing
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab import exercises

HERE = Path(__file__).resolve().parent


def _check_answer(job):
    name, edits = job
    if edits is None:                                    # the real files: every test case must pass
        return exercises.check(name, exercises.sources())
    return exercises.check(name, exercises.with_answer(name, edits), stop=True)   # rejected at its first failure


@pytest.fixture(scope="module")
def checked():
    """Every exercise's check on the real files and on each of its wrong answers, two processes side by side."""
    jobs = [(n, None) for n in exercises.EXERCISES] + [(n, tuple(e)) for n, answers in exercises.WRONG_ANSWERS.items()
                                                       for _, e in answers]
    jobs.sort(key=lambda job: job[0] != "bfs_distances")   # the slowest (time limits) first, so the two workers end together
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return dict(zip(jobs, pool.map(_check_answer, jobs)))


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_each_check_passes_the_real_function_and_rejects_every_wrong_answer(name, checked):
    real = checked[name, None]
    assert real and not [m for _, m in real if m], f"{name}'s check fails on the real function: {real}"
    answers = exercises.WRONG_ANSWERS[name]
    assert len(answers) >= 5, f"{name} has {len(answers)} wrong answers; at least five, over its whole contract"
    for what, edits in answers:
        failures = [m for _, m in checked[name, tuple(edits)] if m]
        assert failures, f"the check of {name} passes a wrong answer ({what})"
        assert all(re.match(r"\w+: \S", m) and not m.split(": ", 1)[1].startswith("assert") for m in failures), \
            f"a failure of {name}'s check on a wrong answer ({what}) does not say in words what is wrong: {failures}"


def _code_lines(text):
    return {line.split("#")[0].strip() for line in text.splitlines()} - {""}


def test_the_wrong_answers_quote_no_whole_line_of_the_answer():
    for name, answers in exercises.WRONG_ANSWERS.items():
        src = exercises.sources()[exercises.EXERCISES[name]]
        fn = exercises._function(src, name)
        lines = _code_lines("".join(src.splitlines(keepends=True)[fn.lineno:fn.end_lineno]))
        quoted = [old for _, edits in answers for old, _ in edits if old.strip() in lines]
        assert not quoted, f"wrong answers to {name} quote whole lines of the right one: {quoted}"


def test_the_in_process_check_selects_what_pytest_k_selects():
    for name in exercises.EXERCISES:
        r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-k", name,
                            "test_mlsh.py"], cwd=HERE, capture_output=True, text=True)
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
        want = exercises._function((HERE / f).read_text(), name)
        assert ast.dump(got.args) == ast.dump(want.args) and ast.get_docstring(got) == ast.get_docstring(want)
        assert ast.unparse(got.body[-1]) == f"raise NotImplementedError('exercise: write {name}')"


def test_the_handout_command(tmp_path):
    r = subprocess.run([sys.executable, "exercises.py", "gae", "--out", str(tmp_path / "h")], cwd=HERE,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "NotImplementedError: exercise: write gae" in r.stdout and " passed" in r.stdout, r.stdout
    r = subprocess.run([sys.executable, "exercises.py", "gae", "--out", str(tmp_path / "h")], cwd=HERE,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "is not empty" in r.stderr          # never writes over a folder


def test_the_three_files_a_course_copies_pass_their_own_tests(tmp_path):
    for f in exercises.COPIED:
        (tmp_path / f).write_text((HERE / f).read_text())
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
