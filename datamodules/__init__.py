"""LightningDataModules for rlfm, importable by YAML ``class_path`` (e.g. ``datamodules.PriorDataModule``)."""

from datamodules.prior import PriorDataModule, PriorStream, StreamLoader, stream_seed

__all__ = ["PriorDataModule", "PriorStream", "StreamLoader", "stream_seed"]
