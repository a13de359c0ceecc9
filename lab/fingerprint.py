"""Fingerprints of what each method learned, to show that two versions of the code learn the same: every
method's curve and AUC on the held-out tasks, compared method by method, an older run's names read through
the map of names (store.upgrade: its 'mlsh' the options master, its 'mlsh_paper' the paper's master).

    python -m lab.fingerprint OLD_DIR NEW_DIR               # two finished runs' folders
    python -m lab.fingerprint --commit 976946c              # the cases below, at that commit and here
    python -m lab.fingerprint --commit 976946c --case default --out runs/fingerprint

A fingerprint is the first 12 hex digits of a hash of the method's numbers: its curve (4 decimals, as
results.json keeps it), its AUC and success AUC (every digit), its first iteration at 80% success and, for
flat PPO, its rate. Two runs agree when every method they share has the same fingerprint, and so do
meta-training's round records. Per-seed numbers differ between CPUs: compare runs made on one machine.
"""
import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile

from lab import store
from lab.settings import METHODS

ALL = ["--methods", "mlsh", "mlsh_options", "flat", "shared", "random_subs"]
CASES = {  # name: (the flags of a commit of the older layout (python mlsh.py), of this layout (python -m lab))
    "fourrooms": (["--quick", "--methods", "mlsh", "flat", "shared", "random_subs"], ["--quick", *ALL]),
    "bandits": (["--quick", "--env", "bandits"], ["--quick", "--env", "bandits", *ALL]),
    "bandits-options": (["--quick", "--env", "bandits", "--master", "options"],
                        ["--quick", "--env", "bandits", "--random-subs-master", "options", *ALL]),
    "rooms": (["--quick", "--preset", "rooms"], ["--quick", "--preset", "rooms", *ALL]),
    "paper": (["--quick", "--preset", "paper", "--methods", "mlsh", "flat", "shared", "random_subs"],
              ["--quick", "--preset", "paper", *ALL]),
    "maze": (["--quick", "--maze", "mazes/example.txt", "--methods", "mlsh", "flat", "shared", "random_subs"],
             ["--quick", "--maze", "lab/mazes/example.txt", *ALL]),
    "default": ([], []),            # python mlsh.py as it was, python -m lab now: Four Rooms' default run
}


def fingerprint(numbers):
    return hashlib.sha256(json.dumps(numbers, sort_keys=True).encode()).hexdigest()[:12]


def method_numbers(result):
    keep = ("curve", "auc", "success_auc", "iters_to_80", "lr")
    return {k: result[k] for k in keep if k in result}


def compare(old_dir, new_dir):
    """[(what, old fingerprint or None, new fingerprint or None, AUC old, AUC new)] for every method of
    either run (in today's names) and for meta-training's records; and whether all that both have agree."""
    old, new = store.read_results(old_dir), store.read_results(new_dir)
    rows = []
    for m in [m for m in METHODS if m in old["methods"] or m in new["methods"]]:
        a, b = old["methods"].get(m), new["methods"].get(m)
        rows.append((m, a and fingerprint(method_numbers(a)), b and fingerprint(method_numbers(b)),
                     a and a["auc"], b and b["auc"]))
    rows.append(("meta-training", fingerprint(old["meta_training"]), fingerprint(new["meta_training"]), None, None))
    same = all(a == b for _, a, b, _, _ in rows if a and b)
    return rows, same


def report(rows, same):
    lines = [f"{'method':<14s} {'older code':<32s} {'this code':<32s}"]
    show = lambda f, auc: "-" if f is None else f"{f}" + ("" if auc is None else f"  AUC {auc:.6f}")
    for what, a, b, auc_a, auc_b in rows:
        verdict = "" if a is None or b is None else "  same" if a == b else "  DIFFERENT"
        lines.append(f"{what:<14s} {show(a, auc_a):<32s} {show(b, auc_b):<32s}{verdict}")
    lines.append("every method both runs hold learned the same" if same else "they differ")
    return "\n".join(lines)


def run_case(name, tree, out):
    """Run case `name` in the code tree `tree` (this repository, or a commit's files), into `out`."""
    old_layout = not os.path.isfile(os.path.join(tree, "lab", "__main__.py"))
    flags = CASES[name][0 if old_layout else 1]
    cmd = [sys.executable, "mlsh.py"] if old_layout else [sys.executable, "-m", "lab"]
    cmd += [*flags, "--no-plots", "--quiet", "--out", out]
    r = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"fingerprint: {shlex.join(cmd)} failed in {tree}:\n{r.stderr[-2000:]}")
    return shlex.join(cmd[1:])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab.fingerprint", description="Compare what every method learned "
                                "in two runs, or in the cases run at another commit and here.")
    p.add_argument("folders", nargs="*", metavar="DIR", help="two finished run folders: the older, then the newer")
    p.add_argument("--commit", help="run the cases at this commit (git archive into a temporary folder) and here")
    p.add_argument("--case", nargs="+", choices=list(CASES), help="the cases to run (default: all but default)")
    p.add_argument("--out", help="where the runs go (default: a temporary folder, removed at the end)")
    args = p.parse_args(argv)
    if bool(args.folders) == bool(args.commit) or (args.folders and len(args.folders) != 2):
        p.exit(2, "fingerprint: give two run folders, or --commit C (not both)\n")
    if args.folders:
        try:
            rows, same = compare(*args.folders)
        except (OSError, ValueError, KeyError) as e:
            p.exit(2, f"fingerprint: {type(e).__name__}: {e}: give two folders a finished run wrote\n")
        print(report(rows, same))
        return 0 if same else 1
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.abspath(args.out or tmp)
        tree = os.path.join(tmp, "tree")
        os.makedirs(tree)
        archive = subprocess.run(["git", "archive", args.commit], cwd=store.ROOT, capture_output=True)
        if archive.returncode != 0:
            p.exit(2, f"fingerprint: git archive {args.commit}: {archive.stderr.decode().strip()}\n")
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        all_same = True
        for name in args.case or [c for c in CASES if c != "default"]:
            old_dir, new_dir = (os.path.join(out, f"{name}-{side}") for side in (args.commit, "here"))
            said = [run_case(name, tree, old_dir), run_case(name, store.ROOT, new_dir)]
            rows, same = compare(old_dir, new_dir)
            all_same &= same
            print(f"\n{name}: at {args.commit} `{said[0]}`, here `{said[1]}`\n{report(rows, same)}")
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
