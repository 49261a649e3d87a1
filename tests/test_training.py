import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from torch_geometric.data import Batch, HeteroData

from datamodules import PriorDataModule
from rlfm.cli import main
from rlfm.examples import ExampleSampler
from rlfm.graph import CE_ADVANTAGE, TARGET_TEMPERATURE
from rlfm.pretrained import export, load_network
from rlfm.prior import Prior, ReferencePrior
from rlfm.summary import read_run
from rlfm.system import PolicyLearner, acting_target, relative_advantages
from tests.ddp_probe import RecordingLearner

ROOT = Path(__file__).parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")


def tiny_data(**kwargs) -> PriorDataModule:
    sampler = ExampleSampler(prior=Prior(reference=ReferencePrior(max_states=6)))
    settings = {
        "batch_size": 3,
        "batches_per_epoch": 3,
        "num_workers": 0,
        "val_mdps": 2,
        "val_episodes": (1,),
    }
    return PriorDataModule(sampler=sampler, **{**settings, **kwargs})


def tiny_trainer(tmp_path: Path, max_steps: int, **kwargs) -> Trainer:
    return Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **kwargs,
    )


def test_cli_fast_dev_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", TINY, "--trainer.fast_dev_run", "1"])


def test_cli_fit_writes_tensorboard_logs_and_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", TINY])
    run = tmp_path / "lightning_logs" / "version_0"
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4  # the final weights, whether or not they were the best
    assert "current_model_state" in last  # the config averages the weights: state_dict holds the average
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "train/loss" in scalars and "val/normalized_value/val_frozenlake_5x5_slip03" in scalars
    assert {"val/normalized_value_by_source", "val/gridworld_policy"} <= set(events.Tags()["images"])
    assert main(["summary", str(run), "--json", str(tmp_path / "summary.json")]) == 0
    assert (
        "val/normalized_value/val_gridworld_4x4"
        in json.loads((tmp_path / "summary.json").read_text())["scalars"]
    )
    # resumed: two more steps logged into version_1; summary reads both folders as one run
    main(
        [
            "fit",
            "--config",
            TINY,
            "--trainer.max_steps",
            "6",
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
        ]
    )
    resumed = tmp_path / "lightning_logs" / "version_1"
    summary, first, second = read_run([run, resumed]), read_run(run), read_run(resumed)
    for tag in ("train/loss", "val/normalized_value"):
        assert summary["curves"][tag] == first["curves"][tag] + second["curves"][tag]
        assert first["curves"][tag][-1][0] < second["curves"][tag][0][0]  # the resumed steps come later
    assert len(summary["curves"]["train/loss"]) == 6  # logged at every step: 4, then 2 more
    assert summary["scalars"] == second["scalars"] and summary["steps"] == second["steps"]
    assert main(["summary", str(run), str(resumed), "--curve", "val/normalized_value"]) == 0
    with pytest.raises(SystemExit):
        main(["summary", str(run), "--curve", "no/such/tag"])


def test_two_runs_of_one_seeded_config_train_the_same_weights(tmp_path, monkeypatch):
    """Same config, seed and thread count (a data-loader worker included): identical weights, bit for bit."""
    monkeypatch.chdir(tmp_path)
    weights = []
    for name in ("first", "second"):
        root = tmp_path / name
        main(
            [
                "fit",
                "--config",
                TINY,
                "--trainer.default_root_dir",
                str(root),
                "--data.init_args.num_workers",
                "1",
            ]
        )
        last = torch.load(next(root.rglob("last.ckpt")), map_location="cpu", weights_only=False)
        weights.append(last["current_model_state"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert any(not torch.equal(w, torch.zeros_like(w)) for w in weights[0].values())


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_configs_keep_the_latest_weights_in_last_ckpt(config):
    """Lightning 2.6 refreshes ``last.ckpt`` only when its own callback saves: a monitored one saves only
    on improvement, so ``save_last`` belongs on an unmonitored checkpoint."""
    callbacks = yaml.safe_load(config.read_text())["trainer"].get("callbacks", [])
    checkpoints = [c.get("init_args", {}) for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    assert any(c.get("save_last") and c.get("save_on_train_epoch_end") for c in checkpoints)
    assert not any(c.get("save_last") and c.get("monitor") for c in checkpoints)


def test_last_ckpt_holds_the_last_step_when_the_run_ends_between_validations(tmp_path, monkeypatch):
    """Saved only at validations, ``last.ckpt`` would miss the steps after the last one (a run of 5 steps
    validated every 2 epochs of 2 steps would end with step 4's weights)."""
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", TINY, "--trainer.max_steps", "5", "--trainer.check_val_every_n_epoch", "2"])
    run = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 5


def test_checkpoint_round_trip(tmp_path):
    model, data = PolicyLearner(width=16, heads=2, train_layers=(2, 3), eval_layers=3), tiny_data()
    trainer = tiny_trainer(tmp_path, 2, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    trainer.fit(model, data)
    batch = Batch.from_data_list(data.train_stream.batch(7))
    expected = model.eval()(batch)
    restored = PolicyLearner.load_from_checkpoint(tmp_path / "last.ckpt").eval()
    assert torch.allclose(restored(batch), expected)
    assert torch.allclose(load_network(tmp_path / "last.ckpt")(batch, 3), expected)
    compact = export(tmp_path / "last.ckpt", tmp_path / "net.pt")
    assert torch.allclose(load_network(compact)(batch, 3), expected)
    fine_tuned = PolicyLearner(width=16, heads=2, train_layers=(2, 3), eval_layers=3, init_from=str(compact))
    assert torch.allclose(fine_tuned.eval()(batch), expected)  # starts from the exported weights
    with pytest.raises(ValueError, match="width"):
        PolicyLearner(width=32, heads=2, init_from=str(compact))


def test_resumed_run_continues_step_and_stream(tmp_path):
    def run(name: str, max_steps: int, ckpt_path: Path | None = None) -> list[dict]:
        model = RecordingLearner(out_dir=str(tmp_path), width=16, heads=2, train_layers=(2, 3), eval_layers=3)
        checkpoints = ModelCheckpoint(dirpath=tmp_path / name, save_last=True)
        trainer = tiny_trainer(tmp_path / name, max_steps, callbacks=[checkpoints], limit_val_batches=0)
        trainer.fit(model, tiny_data(), ckpt_path=ckpt_path)
        assert trainer.global_step == max_steps
        return model.seen

    straight = run("straight", 5)  # crosses an epoch boundary (3 batches per epoch)
    first = run("first", 2)  # stops mid-epoch
    resumed = run("resumed", 5, ckpt_path=tmp_path / "first" / "last.ckpt")
    assert [s["stream_position"][0] for s in first] == [0, 1]
    assert [s["stream_position"][0] for s in resumed] == [2, 3, 4]
    assert [s["step"] for s in resumed] == [2, 3, 4]
    assert [s["fingerprints"] for s in first + resumed] == [s["fingerprints"] for s in straight]


def test_weight_averaging_exports_the_average(tmp_path):
    model = PolicyLearner(width=16, heads=2, train_layers=(2, 3), eval_layers=3)
    callbacks = [ModelCheckpoint(dirpath=tmp_path, save_last=True), EMAWeightAveraging(decay=0.5)]
    tiny_trainer(tmp_path, 4, callbacks=callbacks, limit_val_batches=0).fit(model, tiny_data())
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    # Lightning keeps the average in state_dict and the weights being trained beside it
    name = "network.encode_state.0.weight"
    assert not torch.equal(saved["state_dict"][name], saved["current_model_state"][name])
    network = load_network(tmp_path / "last.ckpt")  # what `rlfm export` and --checkpoint read
    assert torch.equal(network.state_dict()["encode_state.0.weight"], saved["state_dict"][name])
    assert (
        main(["export", str(tmp_path / "last.ckpt"), str(tmp_path / "trained.pt"), "--trained-weights"]) == 0
    )
    trained = load_network(tmp_path / "trained.pt").state_dict()["encode_state.0.weight"]
    assert torch.equal(trained, saved["current_model_state"][name])
    with pytest.raises(ValueError, match="no trained weights beside an average"):
        load_network(tmp_path / "trained.pt", trained_weights=True)  # an export holds one set of weights


def test_workers_reassemble_the_same_stream():
    data_single = tiny_data(num_workers=0)
    data_multi = tiny_data(num_workers=2)
    for data in (data_single, data_multi):
        data.train_stream.start_batch = 0
    single = [b.stream_position.tolist() for b in data_single.train_dataloader()]
    multi = [b.stream_position.tolist() for b in data_multi.train_dataloader()]
    assert single == multi == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]


@pytest.mark.slow
def test_ddp_two_processes_see_different_mdps(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    command = [
        sys.executable,
        "-m",
        "rlfm.cli",
        "fit",
        "--config",
        TINY,
        "--model",
        "ddp_probe.RecordingLearner",
        "--model.out_dir",
        str(tmp_path),
        "--model.width",
        "16",
        "--model.heads",
        "2",
        "--model.train_layers",
        "[2, 3]",
        "--model.eval_layers",
        "3",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.max_steps=3",
        "--trainer.limit_val_batches=0",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and len(r["seen"]) == 3 for r in ranks)
    seen = [{f for step in r["seen"] for f in step["fingerprints"]} for r in ranks]
    assert seen[0].isdisjoint(seen[1])


def test_cli_validate_and_test_report_per_benchmark_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", TINY])
    checkpoint = str(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")
    main(["validate", "--config", TINY, "--ckpt_path", checkpoint])
    main(["test", "--config", TINY, "--ckpt_path", checkpoint, "--data.test_mdps", "3"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "lightning_logs" / "version_2"))
    events.Reload()
    assert {"test/normalized_value/val_chain_10", "test/loss/prior", "test/normalized_value"} <= set(
        events.Tags()["scalars"]
    )


@pytest.mark.parametrize("long_unroll,deep_supervision", [(1.0, True), (0.0, False)])
def test_training_step_variants(long_unroll, deep_supervision):
    model = PolicyLearner(
        width=16,
        heads=2,
        train_layers=(2, 4),
        long_unroll=long_unroll,
        long_layers=(5, 6),
        deep_supervision=deep_supervision,
    )
    batch = Batch.from_data_list(tiny_data().train_stream.batch(0))
    model.log = lambda *args, **kwargs: None  # outside a Trainer
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and model.network.head[0].weight.grad is not None


def test_relative_advantages_scale_each_states_gap_to_one_above_a_floor():
    graph = HeteroData()
    graph["state"].num_nodes = 3
    # state 0: Q* 1, 0.5, 0; state 1: a gap below the 1e-3 floor; state 2: equal actions
    sa_state = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    graph["state_action", "of", "state"].edge_index = torch.stack([torch.arange(7), sa_state])
    graph["state_action"].q_star = torch.tensor([1.0, 0.5, 0.0, 2e-4, 0.0, 0.3, 0.3])
    target = relative_advantages(graph)
    torch.testing.assert_close(target, torch.tensor([0.0, -0.5, -1.0, 0.0, -0.2, 0.0, 0.0]))


def test_a_value_head_trains_exports_and_sets_the_greedy_policy(tmp_path):
    model = PolicyLearner(width=16, heads=2, train_layers=(2, 3), eval_layers=3, value_head=True)
    data = tiny_data()
    trainer = tiny_trainer(tmp_path, 3, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    trainer.fit(model, data)  # 3 steps: one epoch, then validation
    logged = set(trainer.callback_metrics)
    assert {"train/value_loss", "val/value_loss/prior", "val/normalized_value_policy/prior"} <= logged
    batch = Batch.from_data_list(data.train_stream.batch(5))
    by_value = load_network(export(tmp_path / "last.ckpt", tmp_path / "value.pt"))
    by_policy = load_network(export(tmp_path / "last.ckpt", tmp_path / "policy.pt", greedy_from="policy"))
    assert by_value.greedy_from == "value" and by_policy.greedy_from == "policy"
    readout = by_value.unroll(batch, 3, first=3)[-1]
    assert not torch.equal(readout.values, readout.logits)
    torch.testing.assert_close(by_value.infer(batch).greedy_scores, readout.values)
    torch.testing.assert_close(by_policy.infer(batch).greedy_scores, readout.logits)
    torch.testing.assert_close(by_policy.infer(batch).logits, readout.logits)


def test_a_residual_value_head_starts_at_certainty_equivalence_then_learns_a_correction(tmp_path):
    data = tiny_data()
    batch = Batch.from_data_list(data.train_stream.batch(5))
    ce_advantage = batch["state_action"].x[:, CE_ADVANTAGE]
    model = PolicyLearner(
        width=16, heads=2, train_layers=(2, 3), eval_layers=3, value_head=True, value_residual=True
    )
    # untrained, its greedy scores are certainty equivalence's relative advantages: the same greedy policy
    torch.testing.assert_close(model.network.eval().infer(batch).greedy_scores, ce_advantage)
    trainer = tiny_trainer(tmp_path, 3, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    trainer.fit(model, data)
    exported = load_network(export(tmp_path / "last.ckpt", tmp_path / "residual.pt"))
    for network in (exported, load_network(tmp_path / "last.ckpt")):
        assert network.value_residual and network.greedy_from == "value"
        readout = network.unroll(batch, 3, first=3)[-1]
        assert float((readout.values - ce_advantage).abs().max()) > 0  # the correction moved off zero
        torch.testing.assert_close(network.infer(batch).greedy_scores, readout.values)
    with pytest.raises(ValueError, match="has a value head with value_residual=True"):
        PolicyLearner(
            width=16, heads=2, eval_layers=3, value_head=True, init_from=str(tmp_path / "residual.pt")
        )
    with pytest.raises(ValueError, match="value_residual is a kind of value head"):
        PolicyLearner(width=16, heads=2, value_residual=True)


def test_a_residual_value_head_trains_alone_beside_a_frozen_count_only_network(tmp_path):
    data = tiny_data()  # the examples carry the planner columns: the residual head corrects one of them
    batch = Batch.from_data_list(data.train_stream.batch(5))
    ce_advantage = batch["state_action"].x[:, CE_ADVANTAGE]
    torch.manual_seed(0)
    counts_only = {"width": 16, "heads": 2, "train_layers": (2, 3), "eval_layers": 3, "planner_inputs": False}
    source = PolicyLearner(**counts_only)
    tiny_trainer(tmp_path, 1, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)]).fit(source, data)
    plain = export(tmp_path / "last.ckpt", tmp_path / "counts.pt")
    assert not load_network(plain).reads_planner_columns
    grown = PolicyLearner(
        **counts_only, value_head=True, value_residual=True, value_head_only=True, init_from=str(plain)
    )
    assert grown.network.reads_planner_columns
    settled = grown.network.eval().infer(batch)
    torch.testing.assert_close(settled.greedy_scores, ce_advantage)  # untrained: CE's greedy policy
    torch.testing.assert_close(settled.logits, source.network.eval().infer(batch).logits)
    (tmp_path / "grown").mkdir()
    trainer = tiny_trainer(
        tmp_path / "grown", 3, callbacks=[ModelCheckpoint(dirpath=tmp_path / "grown", save_last=True)]
    )
    trainer.fit(grown, data)
    before = load_network(plain).state_dict()
    for name, weight in grown.network.state_dict().items():  # only the value head moved
        assert name.startswith("value_head.") or torch.equal(weight, before[name]), name
    assert float(grown.network.value_head[-1].weight.abs().max()) > 0
    network = load_network(export(tmp_path / "grown" / "last.ckpt", tmp_path / "residual.pt"))
    assert network.value_residual and network.greedy_from == "value" and not network.planner_inputs
    greedy = network.infer(batch).greedy_scores
    assert float((greedy - ce_advantage).abs().max()) > 0  # the correction moved off zero
    counts_columns = batch.clone()
    counts_columns["state_action"].x = counts_columns["state_action"].x[:, :CE_ADVANTAGE]
    with pytest.raises(ValueError, match="build it with planner=True"):
        network.infer(counts_columns)
    with pytest.raises(ValueError, match="value_head_only trains a value head"):
        PolicyLearner(**counts_only, value_head=True, value_head_only=True)


def one_step_network(tmp_path: Path) -> tuple[PolicyLearner, Path]:
    """A small network trained one step, and its export in ``tmp_path``."""
    torch.manual_seed(0)
    source = PolicyLearner(width=16, heads=2, train_layers=(2, 3), eval_layers=3)
    trainer = tiny_trainer(tmp_path, 1, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    trainer.fit(source, tiny_data())
    return source, export(tmp_path / "last.ckpt", tmp_path / "plain.pt")


def test_fine_tuning_adds_a_value_head_and_keeps_the_policy(tmp_path):
    batch = Batch.from_data_list(tiny_data().train_stream.batch(5))
    source, plain = one_step_network(tmp_path)
    grown = PolicyLearner(
        width=16, heads=2, train_layers=(2, 3), eval_layers=3, value_head=True, init_from=str(plain)
    )
    torch.testing.assert_close(grown.eval()(batch), source.eval()(batch))
    with pytest.raises(ValueError, match="greedy_from"):
        export(plain, tmp_path / "bad.pt", greedy_from="value")


def test_an_acting_head_starts_as_the_policy_head_and_trains_on_the_sharper_target(tmp_path):
    data = tiny_data()
    batch = Batch.from_data_list(data.train_stream.batch(5))
    # the acting target is the examples' own target computed at another temperature
    torch.testing.assert_close(acting_target(batch, TARGET_TEMPERATURE), batch["state_action"].target)
    sharp = acting_target(batch, 0.015)
    assert torch.special.entr(sharp).sum() < torch.special.entr(batch["state_action"].target).sum()
    source, plain = one_step_network(tmp_path)
    grown = PolicyLearner(
        width=16, heads=2, train_layers=(2, 3), eval_layers=3, acting_head=True, init_from=str(plain)
    )
    readout = grown.network.eval().unroll(batch, 3, first=3)[-1]
    torch.testing.assert_close(readout.acting, readout.logits)  # a copy of the policy head
    torch.testing.assert_close(readout.logits, source.network.eval().unroll(batch, 3, first=3)[-1].logits)
    (tmp_path / "grown").mkdir()
    trainer = tiny_trainer(
        tmp_path / "grown", 3, callbacks=[ModelCheckpoint(dirpath=tmp_path / "grown", save_last=True)]
    )
    trainer.fit(grown, data)
    assert {"train/acting_loss", "val/acting_loss/prior"} <= set(trainer.callback_metrics)
    exported = load_network(export(tmp_path / "grown" / "last.ckpt", tmp_path / "acting.pt"))
    for network in (exported, load_network(tmp_path / "grown" / "last.ckpt")):
        assert network.acting_head is not None and network.greedy_from == "policy"
        readout = network.unroll(batch, 3, first=3)[-1]
        assert not torch.allclose(readout.acting, readout.logits)  # the heads parted in training
        settled = network.infer(batch)
        torch.testing.assert_close(network.acting_logits(readout), readout.acting)
        assert torch.equal(settled.greedy_scores, settled.logits)
    with pytest.raises(ValueError, match="acting_target_temperature"):
        PolicyLearner(width=16, heads=2, acting_head=True, acting_target_temperature=0.0)
    # trained alone, the acting head moves and the rest keeps the source's weights exactly
    alone = PolicyLearner(
        width=16,
        heads=2,
        train_layers=(2, 3),
        eval_layers=3,
        acting_head=True,
        acting_head_only=True,
        init_from=str(plain),
    )
    tiny_trainer(tmp_path / "grown", 3).fit(alone, data)
    before = load_network(plain).state_dict()
    for name, weight in alone.network.state_dict().items():
        moved = name.startswith("acting_head.")  # from its start, the policy head's copy
        assert torch.equal(weight, before[name.replace("acting_head.", "head.")]) != moved, name
    with pytest.raises(ValueError, match="acting_head_only"):
        PolicyLearner(width=16, heads=2, acting_head=True, acting_head_only=True)
    with pytest.raises(ValueError, match="set acting_head: true"):
        PolicyLearner(width=16, heads=2, eval_layers=3, init_from=str(tmp_path / "acting.pt"))


@pytest.mark.parametrize(
    "extra, message",
    [({"value_head": "yes"}, "value_head must be true or false"), ({"greedy_from": "value"}, "greedy_from")],
)
def test_exports_with_a_bad_value_head_config_are_refused(tmp_path, extra, message):
    network = PolicyLearner(width=16, heads=2, eval_layers=3).network
    config = {"width": 16, "heads": 2, "num_layers": 3, "dropout": 0.0, **extra}
    path = tmp_path / "bad.pt"
    torch.save({"format": "rlfm-network-v1", "config": config, "state_dict": network.state_dict()}, path)
    with pytest.raises(ValueError, match=message):
        load_network(path)
