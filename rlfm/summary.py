"""``rlfm summary RUN_DIR [RUN_DIR ...]``: the last value of every validation/test scalar of a run, read
from its TensorBoard event files, with the run's wall time (printed as a table; ``--json`` for a file).

A run resumed with ``--ckpt_path`` logs into a new ``version_N`` folder: give every folder of the run,
oldest first, and they are read as one (where two folders log the same step, the later folder's value
counts). ``--curve TAG`` prints a scalar's whole history, e.g. ``--curve val/normalized_value``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_folder(run_dir: str | Path) -> dict[str, list[tuple[int, float, float]]]:
    """{tag: [(step, value, wall_time), ...]} of the scalars in one folder's event files."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value, e.wall_time) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def read_run(run_dirs: str | Path | Sequence[str | Path]) -> dict:
    """{'steps', 'wall_time_s', 'scalars': {tag: (step, value)}, 'curves': {tag: [(step, value)]}}.

    ``curves`` holds each scalar in step order over all folders, ``scalars`` its last value;
    ``wall_time_s`` sums each folder's span from its first to its last event (the time between a run's
    sessions does not count).
    """
    dirs = [run_dirs] if isinstance(run_dirs, str | Path) else list(run_dirs)
    merged: dict[str, dict[int, float]] = {}
    wall_time = 0.0
    for run_dir in dirs:
        folder = read_folder(run_dir)
        times = [t for series in folder.values() for _, _, t in series]
        wall_time += max(times) - min(times) if times else 0.0
        for tag, series in folder.items():
            merged.setdefault(tag, {}).update((step, value) for step, value, _ in series)
    if not merged:
        raise ValueError(f"no TensorBoard scalars under {', '.join(map(str, dirs))}")
    curves = {tag: sorted(by_step.items()) for tag, by_step in sorted(merged.items())}
    return {
        "steps": max(series[-1][0] for series in curves.values()),
        "wall_time_s": wall_time,
        "scalars": {tag: series[-1] for tag, series in curves.items()},
        "curves": curves,
    }


def summary_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlfm summary", description=__doc__)
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="a run's folder(s), e.g. lightning_logs/version_0"
    )
    parser.add_argument("--prefix", nargs="*", default=["val/", "test/"], help="scalar tags to show")
    parser.add_argument("--curve", nargs="*", default=[], metavar="TAG", help="print these scalars' history")
    parser.add_argument("--json", dest="json_path", help="also write the summary (with every curve) here")
    args = parser.parse_args(argv)
    run = read_run(args.run_dirs)
    unknown = [tag for tag in args.curve if tag not in run["curves"]]
    if unknown:
        parser.error(f"no scalar {', '.join(unknown)} in the run (it has {', '.join(run['curves'])})")
    name = " + ".join(args.run_dirs)
    print(f"{name}: {run['steps']} steps, {run['wall_time_s'] / 60:.1f} min from first to last event")
    for tag, (step, value) in run["scalars"].items():
        if any(tag.startswith(p) for p in args.prefix):
            print(f"  {tag:<48} {value:9.4f}  (step {step})")
    for tag in args.curve:
        print(f"\n{tag}\n  {'step':>8} {'value':>9}")
        for step, value in run["curves"][tag]:
            print(f"  {step:>8} {value:9.4f}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(run, indent=2))
    return 0
