"""A PolicyLearner that records which training MDPs each rank saw (used by tests/test_training.py)."""

from __future__ import annotations

import json
from pathlib import Path

from torch_geometric.data import HeteroData

from rlfm.system import PolicyLearner


class RecordingLearner(PolicyLearner):
    """Writes ``rank<r>.json``: per step, the stream batch index and a fingerprint of each MDP seen."""

    def __init__(self, out_dir: str = ".", **kwargs) -> None:
        super().__init__(**kwargs)
        self.out_dir = out_dir
        self.seen: list[dict] = []

    def training_step(self, batch: HeteroData, batch_index: int):
        fingerprints = [
            round(float(x.sum()), 4)
            for x in batch["state_action"].x.split(batch["state_action"].ptr.diff().tolist())
        ]
        self.seen.append(
            {
                "step": self.global_step,
                "stream_position": batch.stream_position.tolist(),
                "fingerprints": fingerprints,
            }
        )
        return super().training_step(batch, batch_index)

    def on_train_end(self) -> None:
        path = Path(self.out_dir) / f"rank{self.global_rank}.json"
        path.write_text(json.dumps({"world_size": self.trainer.world_size, "seen": self.seen}))
