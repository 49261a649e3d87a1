"""``rlfm summary RUN_DIR``: the last value of every validation/test scalar of a run, read from its
TensorBoard event files, with the run's wall time (printed as a table; ``--json`` for a file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_run(run_dir: str | Path) -> dict:
    """{'steps', 'wall_time_s', 'scalars': {tag: (step, value)}} of the last value of each scalar."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    if not tags:
        raise ValueError(f"no TensorBoard scalars under {run_dir}")
    last = {tag: events.Scalars(tag)[-1] for tag in tags}
    first_time = min(events.Scalars(tag)[0].wall_time for tag in tags)
    return {
        "steps": max(event.step for event in last.values()),
        "wall_time_s": max(event.wall_time for event in last.values()) - first_time,
        "scalars": {tag: (event.step, event.value) for tag, event in sorted(last.items())},
    }


def summary_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlfm summary", description=__doc__)
    parser.add_argument("run_dir", help="a run directory, e.g. lightning_logs/version_0")
    parser.add_argument("--prefix", nargs="*", default=["val/", "test/"], help="scalar tags to show")
    parser.add_argument("--json", dest="json_path", help="also write the summary here")
    args = parser.parse_args(argv)
    run = read_run(args.run_dir)
    print(f"{args.run_dir}: {run['steps']} steps, {run['wall_time_s'] / 60:.1f} min from first to last event")
    for tag, (step, value) in run["scalars"].items():
        if any(tag.startswith(p) for p in args.prefix):
            print(f"  {tag:<48} {value:9.4f}  (step {step})")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(run, indent=2))
    return 0
