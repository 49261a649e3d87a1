"""Lightning's CLI for ``rlfm fit | validate | test``, imported only when one of those commands runs.

Importing Lightning takes seconds, so :mod:`rlfm.cli` imports this module only on its Lightning commands.
"""

from __future__ import annotations

import warnings

from lightning.pytorch.cli import LightningCLI

# Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; harmless, and not ours to fix.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


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


def run_lightning(argv: list[str] | None) -> None:
    """``rlfm fit | validate | test``: :class:`RlfmCLI` over :class:`~rlfm.system.PolicyLearner` and a
    LightningDataModule; ``argv`` None lets Lightning read ``sys.argv`` itself."""
    from datamodules import PriorDataModule
    from rlfm.system import PolicyLearner

    RlfmCLI(
        PolicyLearner,
        PriorDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=argv,
    )
