"""The ``rlfm`` command.

- ``rlfm fit | validate | test --config configs/….yaml``: Lightning's CLI over :class:`~rlfm.system.PolicyLearner`
  and a LightningDataModule (``datamodules.PriorDataModule``); TensorBoard logs go to ``lightning_logs/``.
  Lightning is imported only for these commands (:mod:`rlfm.lightning_cli`), so the others start fast.
  Lightning's ``predict`` is not offered: :func:`rlfm.predict_policy` is the prediction entry point.
- ``rlfm benchmark ...``: the online and offline evaluation protocols (``rlfm benchmark --help``).
- ``rlfm compare BASE CANDIDATE``: a paired bootstrap over seeds of two benchmark runs (is one network better?),
  or of two groups of runs, one per training seed (is one recipe better?).
- ``rlfm scorecard RUN [RUN ...]``: where rlfm stands against the best other agent, MDP by MDP (the quality
  targets: at or above the best at every dataset size, fewest episodes, lowest regret).
- ``rlfm solve --env ENV_ID ...``: agents in a gymnasium environment with Discrete spaces, by reset/step.
- ``rlfm speed prior | model | inference``: data, training-step and prediction speed benchmarks.
- ``rlfm export CHECKPOINT OUT``: a compact network file (weights and sizes) from a training checkpoint.
- ``rlfm summary RUN_DIR [RUN_DIR ...]``: a run's last validation and test numbers (``--curve TAG``: a
  scalar's history), read from its TensorBoard events; a resumed run's folders are read as one.

``rlfm --help`` lists them. Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test")  # no `predict`: use rlfm.predict_policy or `rlfm benchmark`
COMMANDS = {
    "fit": "train a network on MDPs from the prior (Lightning; --config configs/....yaml)",
    "validate": "score a checkpoint on the validation MDPs (Lightning; --ckpt_path)",
    "test": "score a checkpoint on the test MDPs (Lightning; --ckpt_path)",
    "benchmark": "run the online or offline protocol on benchmark suites or your own .npz MDPs",
    "compare": "paired bootstrap of two benchmark runs on the same seeds (BASE CANDIDATE; A,B for several)",
    "scorecard": "rlfm against the best other agent per MDP, from benchmark runs (RUN [RUN ...])",
    "solve": "run rlfm and Q-learning in a gymnasium environment with Discrete spaces (--env ID)",
    "speed": "measure data, model and inference speed (prior | model | inference)",
    "export": "write a compact network file from a training checkpoint (CHECKPOINT OUT)",
    "summary": "print a run's last validation and test numbers or a scalar's history (RUN_DIR ...)",
}
USAGE = (
    "usage: rlfm {"
    + ",".join(COMMANDS)
    + "} ...\n\ncommands:\n"
    + "".join(f"  {name:<10} {line}\n" for name, line in COMMANDS.items())
    + "\n`rlfm COMMAND --help` describes a command's options."
)


def main(args: list[str] | None = None) -> int | None:
    """Entry point of the ``rlfm`` console script; ``args`` defaults to ``sys.argv[1:]``."""
    try:
        status = _main(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return status
    except BrokenPipeError:  # the reader went away (`rlfm --help | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(args: list[str] | None) -> int | None:
    argv = list(sys.argv[1:] if args is None else args)
    command = argv[0] if argv else ""
    if command in ("-h", "--help"):
        print(USAGE)
        return 0
    if command not in COMMANDS:
        problem = f"unknown command {command!r}" if command else "no command given"
        hint = "; predict with rlfm.predict_policy(counts, gamma) in Python" if command == "predict" else ""
        print(
            f"rlfm: error: {problem}{hint} (commands: {', '.join(COMMANDS)}; see rlfm --help)",
            file=sys.stderr,
        )
        return 2
    if command in LIGHTNING_COMMANDS:
        return _lightning(None if args is None else argv)  # None: Lightning reads sys.argv itself
    try:
        return _rlfm_command(command, argv[1:])
    except BrokenPipeError:
        raise
    except (ValueError, OSError) as error:  # bad input found below the command's own checks
        print(f"rlfm {command}: error: {error}", file=sys.stderr)
        return 2


def _rlfm_command(command: str, argv: list[str]) -> int:
    if command == "benchmark":
        from rlfm.evaluation.command import benchmark_main

        return benchmark_main(argv)
    if command == "compare":
        from rlfm.evaluation.compare import compare_main

        return compare_main(argv)
    if command == "scorecard":
        from rlfm.evaluation.scorecard import scorecard_main

        return scorecard_main(argv)
    if command == "solve":
        from rlfm.environments import solve_main

        return solve_main(argv)
    if command == "speed":
        from rlfm.speed import speed_main

        return speed_main(argv)
    if command == "export":
        from rlfm.pretrained import export_main

        return export_main(argv)
    from rlfm.summary import summary_main

    return summary_main(argv)


def _lightning(argv: list[str] | None) -> None:
    from rlfm.lightning_cli import run_lightning  # Lightning is imported only here: it takes seconds

    run_lightning(argv)


if __name__ == "__main__":
    sys.exit(main())
