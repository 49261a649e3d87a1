"""The ``rlfm`` command.

- ``rlfm fit | validate | test --config configs/….yaml``: Lightning's CLI over :class:`~rlfm.system.PolicyLearner`
  and a LightningDataModule (``datamodules.PriorDataModule``); TensorBoard logs go to ``lightning_logs/``.
- ``rlfm benchmark ...``: the online and offline evaluation protocols (``rlfm benchmark --help``).
- ``rlfm speed prior | model``: data and model throughput benchmarks.
- ``rlfm export CHECKPOINT OUT``: a compact network file (weights and sizes) from a training checkpoint.
- ``rlfm summary RUN_DIR``: a run's last validation and test numbers, read from its TensorBoard events.
"""

from __future__ import annotations

import sys
import warnings

from lightning.pytorch.cli import LightningCLI

# Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; harmless, and not ours to fix.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


class RlfmCLI(LightningCLI):
    """LightningCLI that says where a finished run's logs and checkpoints are."""

    def after_fit(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero or trainer.logger is None:
            return
        log_dir = trainer.logger.log_dir
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or "(none)"
        print(
            f"\nrlfm: training finished after {trainer.global_step} steps.\n"
            f"  logs and checkpoints: {log_dir}\n"
            f"  last checkpoint:      {checkpoint}\n"
            f"  watch it:             tensorboard --logdir {trainer.logger.save_dir}\n"
            f"  evaluate it:          rlfm benchmark --mode online --suite reference"
            f" --agents rlfm,ucbvi --checkpoint {checkpoint}\n"
        )


def main(args: list[str] | None = None) -> int | None:
    """Entry point of the ``rlfm`` console script; ``args`` defaults to ``sys.argv[1:]``."""
    argv = list(sys.argv[1:] if args is None else args)
    command = argv[0] if argv else ""
    if command == "benchmark":
        from rlfm.evaluation.command import benchmark_main

        return benchmark_main(argv[1:])
    if command == "speed":
        from rlfm.speed import speed_main

        return speed_main(argv[1:])
    if command == "export":
        from rlfm.pretrained import export_main

        return export_main(argv[1:])
    if command == "summary":
        from rlfm.summary import summary_main

        return summary_main(argv[1:])
    if command and command not in LIGHTNING_COMMANDS and not command.startswith("-"):
        print(
            f"rlfm: unknown command {command!r}; use fit, validate, test, benchmark, speed, export or summary",
            file=sys.stderr,
        )
        return 2
    from datamodules import PriorDataModule
    from rlfm.system import PolicyLearner

    RlfmCLI(
        PolicyLearner,
        PriorDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=None if args is None else argv,
    )
    return None


if __name__ == "__main__":
    sys.exit(main())
