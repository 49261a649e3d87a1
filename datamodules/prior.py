"""The LightningDataModule over the synthetic prior: a fresh stream for training, fixed sets for validation."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import IterableDataset, get_worker_info
from torch_geometric.data import HeteroData
from torch_geometric.loader import DataLoader

from rlfm.benchmarks.validation import VALIDATION, validation_mdp
from rlfm.examples import ExampleSampler, with_truth
from rlfm.experience import ExperienceConfig

# Lightning warns that __len__ of an IterableDataset may be wrong with several workers; PriorStream splits
# its batches between workers itself, so its length is exact.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


def stream_seed(seed: int, rank: int, batch_index: int) -> int:
    """A 63-bit seed for one batch of one rank's stream; distinct triples give unrelated seeds."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{batch_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class PriorStream(IterableDataset):
    """An endless, reproducible stream of training examples, cut into epochs of ``batches_per_epoch``.

    Batch ``b`` of rank ``r`` is a pure function of ``stream_seed(seed, r, b)``: its MDPs, their experience
    and targets are drawn from one generator seeded that way (the batch is the unit of seeding because its
    examples are solved and sampled together). Worker ``w`` of ``W`` builds the batches ``b ≡ w (mod W)``
    and yields their examples in order, so PyG's DataLoader reassembles exactly batch b, b + 1, ... and no
    two workers or ranks ever repeat each other. Iteration starts at ``start_batch`` (set by the loader
    from the trainer's step count, so a resumed run continues its stream) and stops at the end of the
    epoch containing it.
    """

    def __init__(self, sampler: ExampleSampler, batch_size: int, batches_per_epoch: int, seed: int) -> None:
        super().__init__()
        self.sampler = sampler
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed
        self.rank = 0
        self.start_batch = 0

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def batch(self, batch_index: int) -> list[HeteroData]:
        generator = torch.Generator().manual_seed(stream_seed(self.seed, self.rank, batch_index))
        examples = self.sampler.sample(self.batch_size, generator)
        for example in examples:
            example.stream_position = torch.tensor([batch_index])  # not "*batch*": PyG would shift it
        return examples

    def __iter__(self) -> Iterator[HeteroData]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        start = self.start_batch
        end = (start // self.batches_per_epoch + 1) * self.batches_per_epoch
        for batch_index in range(start + worker, end, workers):
            yield from self.batch(batch_index)


class StreamLoader(DataLoader):
    """PyG's DataLoader over a :class:`PriorStream` that starts each epoch where the trainer stands."""

    def __init__(self, stream: PriorStream, position: Callable[[], int], **kwargs) -> None:
        super().__init__(stream, batch_size=stream.batch_size, **kwargs)
        self.position = position

    def __iter__(self):
        self.dataset.start_batch = self.position()
        return super().__iter__()


class PriorDataModule(LightningDataModule):
    """Training batches sampled on the fly from the prior; a fixed, seeded validation set.

    Args:
        sampler: the prior, the experience samplers and the target temperature.
        batch_size: MDPs per training batch.
        batches_per_epoch: training batches per epoch (each one freshly sampled).
        num_workers: DataLoader worker processes.
        seed: seed of the training stream and of the validation set.
        val_mdps: number of prior MDPs in the validation set.
        val_benchmarks: hand-built validation MDPs in the validation set (names of
            :data:`rlfm.benchmarks.validation.VALIDATION`; none of them is in a reported benchmark suite).
        val_episodes: dataset sizes, in episodes of uniformly random play, given for each benchmark.
        val_batch_size: graphs per validation (and test) batch.
        test_mdps: number of prior MDPs in the test set (``rlfm test``), drawn apart from the validation
            set; the test set has the same benchmarks and dataset sizes.
    """

    def __init__(
        self,
        sampler: ExampleSampler | None = None,
        batch_size: int = 64,
        batches_per_epoch: int = 100,
        num_workers: int = 1,
        seed: int = 0,
        val_mdps: int = 256,
        val_benchmarks: tuple[str, ...] = tuple(VALIDATION),
        val_episodes: tuple[int, ...] = (1, 3, 10, 30, 100),
        val_batch_size: int = 64,
        test_mdps: int = 512,
    ) -> None:
        super().__init__()
        unknown = set(val_benchmarks) - set(VALIDATION)
        if unknown:
            raise ValueError(
                f"unknown validation MDPs {sorted(unknown)}; choose from {list(VALIDATION)} (the reported "
                "benchmark suites are never used for validation)"
            )
        self.sampler = sampler if sampler is not None else ExampleSampler()
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.num_workers = num_workers
        self.seed = seed
        self.val_mdps = val_mdps
        self.val_benchmarks = tuple(val_benchmarks)
        self.val_episodes = tuple(val_episodes)
        self.val_batch_size = val_batch_size
        self.test_mdps = test_mdps
        self.train_stream = PriorStream(self.sampler, batch_size, batches_per_epoch, seed)
        self.val_set: list[tuple[HeteroData, HeteroData]] | None = None
        self.test_set: list[tuple[HeteroData, HeteroData]] | None = None

    @property
    def val_sources(self) -> list[str]:
        """Names under which validation metrics are reported: ``prior`` and each validation MDP."""
        return ["prior", *self.val_benchmarks]

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.train_stream.rank = self.trainer.global_rank
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self.validation_set()
        if stage == "test" and self.test_set is None:
            self.test_set = self.validation_set(num_mdps=self.test_mdps, split=-2)

    def validation_set(
        self, num_mdps: int | None = None, split: int = -1
    ) -> list[tuple[HeteroData, HeteroData]]:
        """(observation graph, true MDP graph) pairs; the same on every rank and every run with this seed.

        ``split`` keys the generator apart from the training stream (-1: validation, -2: test)."""
        num_mdps = self.val_mdps if num_mdps is None else num_mdps
        generator = torch.Generator().manual_seed(stream_seed(self.seed, split, 0))
        pairs = []
        if num_mdps:
            mdps = self.sampler.sample_mdps(num_mdps, generator)
            pairs += with_truth(self.sampler.examples_for(mdps, generator), mdps, source="prior")
        for name in self.val_benchmarks:
            mdp = validation_mdp(name)
            for episodes in self.val_episodes:
                uniform_play = ExperienceConfig(
                    weights={"trajectories": 1.0}, episodes=(episodes, episodes), behaviours={"uniform": 1.0}
                )
                sampler = replace(self.sampler, experience=uniform_play)
                pairs += with_truth(sampler.examples_for([mdp], generator), [mdp], source=name)
        return pairs

    def figure_example(self) -> tuple[HeteroData, str] | None:
        """The observation graph drawn in TensorBoard: the largest dataset of the validation grid world."""
        for example, _ in reversed(self.val_set or []):
            if example.source == "val_gridworld_4x4":
                observed = int(example["state_action"].x[:, 0].expm1().round().sum())
                return example, f"{example.source}: policy after {observed} transitions"
        return None

    def train_dataloader(self) -> StreamLoader:
        def position() -> int:
            trainer = self.trainer
            return 0 if trainer is None else trainer.global_step * trainer.accumulate_grad_batches

        return StreamLoader(
            self.train_stream,
            position,
            num_workers=self.num_workers,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
        )

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.val_set = self.validation_set()
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            self.test_set = self.validation_set(num_mdps=self.test_mdps, split=-2)
        return DataLoader(self.test_set, batch_size=self.val_batch_size, shuffle=False)
