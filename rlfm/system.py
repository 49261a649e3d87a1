r"""The training system: the policy network, its loss, metrics and optimiser, as a LightningModule.

The loss is the soft cross-entropy between the Boltzmann target softmax(Q* / τ) of the true MDP and the
predicted policy, averaged over states, and (deep supervision) over the sweeps k = K_min .. K of the tied
block, K drawn per step from ``train_layers``:

.. math::
    \mathcal{L} = \frac{1}{K - K_{min} + 1} \sum_{k=K_{min}}^{K} \frac{1}{|\mathcal{S}|} \sum_{s}
        \Big( -\sum_{a} \pi^\star_\tau(a \mid s) \log \pi_\theta^{(k)}(a \mid s) \Big)

With a value head (``value_head``) each supervised sweep also pays ``value_weight`` times the squared error
of the predicted relative advantages (:func:`value_losses`). With an acting head (``acting_head``) each
supervised sweep also pays ``acting_weight`` times the same cross-entropy of the acting head's policy
against the sharper target softmax(Q* / τ_act), τ_act = ``acting_target_temperature``.

Supervising every sweep asks the iteration to be right at every depth and to stay right as it goes on.
On a fraction ``long_unroll`` of the steps the sweeps instead start after a long prefix of
``long_layers`` sweeps run without gradient, so that the block also learns to stay right far beyond the
depths it is backpropagated through; this is what lets inference unroll further than training
(:meth:`~rlfm.network.PolicyNetwork.settle`).
"""

from __future__ import annotations

import math
import random

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.utils import scatter
from torchmetrics import MeanMetric

from rlfm.graph import OF, STATE, STATE_ACTION, boltzmann_target
from rlfm.network import PolicyNetwork, log_group_softmax
from rlfm.solve import ActionLayout, evaluate_policy, normalize, start_values

METRICS = ("loss", "kl", "agreement", "normalized_value", "normalized_value_deep")
VALUE_METRICS = ("value_loss", "normalized_value_policy")  # with a value head
ACTING_METRICS = ("acting_loss",)  # with an acting head
DEEP_FACTOR = 4  # normalized_value_deep unrolls DEEP_FACTOR × eval_layers sweeps: is the block stable?
RNG_KEY = "rlfm_rng"  # checkpoint entry with the training generators' states


def cross_entropy(data: HeteroData, logits: Tensor, target: Tensor | None = None) -> Tensor:
    """(S,) the soft cross-entropy -Σ_a target(a | s) log π(a | s) of each state, the training loss
    (``target`` (SA,): default the graph's own, ``state_action.target``)."""
    sa_state, S = data[OF].edge_index[1], data[STATE].num_nodes
    log_pi = log_group_softmax(logits, sa_state, S)
    target = data[STATE_ACTION].target if target is None else target
    return -scatter(target * log_pi, sa_state, dim=0, dim_size=S, reduce="sum")


def acting_target(data: HeteroData, temperature: float) -> Tensor:
    """(SA,) the acting head's target, softmax(Q* / τ_act) of the graph's Q* (the graph's own target at
    another temperature)."""
    return boltzmann_target(
        data[STATE_ACTION].q_star, data[OF].edge_index[1], data[STATE].num_nodes, temperature
    )


def policy_losses(data: HeteroData, logits: Tensor) -> dict[str, Tensor]:
    """Per-state soft cross-entropy, KL(target ‖ π) and agreement of argmax π with an argmax of Q*, each (S,)."""
    sa_state, S = data[OF].edge_index[1], data[STATE].num_nodes
    target, q_star = data[STATE_ACTION].target, data[STATE_ACTION].q_star
    loss = cross_entropy(data, logits)
    entropy = -scatter(torch.special.xlogy(target, target), sa_state, dim=0, dim_size=S, reduce="sum")
    best_q = scatter(q_star, sa_state, dim=0, dim_size=S, reduce="max")
    chosen = ActionLayout.from_pairs(sa_state, S).greedy_policy(logits.detach()).to(q_star.dtype)
    optimal = (q_star >= best_q[sa_state] - 1e-6).to(q_star.dtype)
    agreement = scatter(chosen * optimal, sa_state, dim=0, dim_size=S, reduce="sum")
    return {"loss": loss, "kl": loss - entropy, "agreement": agreement}


def relative_advantages(data: HeteroData) -> Tensor:
    r"""(SA,) the value head's target: :math:`(Q^*(s,a) - \max_b Q^*(s,b)) / \max(\max_b Q^* - \min_b Q^*, 10^{-3})`
    in [−1, 0], 0 for the best actions (Q* is already divided by the MDP's reward scale; the floor keeps
    states whose actions differ by less than a thousandth of that scale from amplifying rounding)."""
    sa_state, S, q = data[OF].edge_index[1], data[STATE].num_nodes, data[STATE_ACTION].q_star
    best = scatter(q, sa_state, dim=0, dim_size=S, reduce="max")
    worst = scatter(q, sa_state, dim=0, dim_size=S, reduce="min")
    return (q - best[sa_state]) / (best - worst).clamp(min=1e-3)[sa_state]


def value_losses(data: HeteroData, values: Tensor, target: Tensor) -> Tensor:
    """(S,) the value head's loss per state: the summed squared error of ``values`` (SA,) over its actions,
    against ``target`` = :func:`relative_advantages` (computed once for all the sweeps of a step)."""
    sa_state, S = data[OF].edge_index[1], data[STATE].num_nodes
    error = (values - target.to(values.dtype)).square()
    return scatter(error, sa_state, dim=0, dim_size=S, reduce="sum")


class PolicyLearner(LightningModule):
    """Trains a :class:`~rlfm.network.PolicyNetwork` on examples from the prior.

    Args:
        width, heads, dropout: the network's size (see :class:`~rlfm.network.PolicyNetwork`).
        train_layers: range [K_min, K_max] of the number K of tied sweeps, drawn uniformly per training
            step so that the block stays stable when unrolled further than any one depth.
        deep_supervision: average the loss over the sweeps K_min .. K (else only sweep K is supervised).
        long_unroll: probability that a step first runs a no-gradient prefix of sweeps, then supervises
            the K_min sweeps that follow it.
        long_layers: range of the length of that prefix.
        eval_layers: K at validation and the network's default at inference.
        lr, weight_decay: AdamW settings.
        warmup_steps: linear warm-up steps, followed by a cosine decay to ``final_lr_ratio`` × lr.
        final_lr_ratio: learning rate at the last step, relative to ``lr``.
        planner_inputs: the network reads the exact planners' columns (see
            :class:`~rlfm.network.PolicyNetwork`); False is the ablation without them.
        value_head: add the value head (:class:`~rlfm.network.PolicyNetwork`); the trained network's
            greedy policy is then its argmax (validation scores it that way too).
        value_weight: weight of the value head's loss beside the policy's cross-entropy.
        value_residual: the value head predicts a correction to the certainty-equivalent advantage, starting
            at zero (:class:`~rlfm.network.PolicyNetwork`; needs ``value_head``, and the sampler's
            ``planner_columns`` where ``planner_inputs`` is False).
        init_from: start from these weights instead of a random initialisation (fine-tuning): an exported
            network, a Lightning checkpoint or a shipped network's name (``"default"``, ``"planner"``);
            it must have this network's width, heads and inputs. Only the weights are taken: the optimiser,
            schedule and step count start afresh (``--ckpt_path`` is the way to resume a run exactly).
            A source without an acting head gives this network's acting head a copy of its policy head.
        acting_head: add the acting head (:class:`~rlfm.network.PolicyNetwork`), trained on the sharper
            target at ``acting_target_temperature``; agents sample it, the greedy policy stays the policy
            head's.
        acting_target_temperature: τ_act of the acting head's target softmax(Q* / τ_act) (below the
            examples' τ; same normalised reward scale).
        acting_weight: weight of the acting head's cross-entropy beside the policy head's.
        acting_head_only: train the acting head alone: the rest of the network keeps ``init_from``'s weights
            (frozen), so its greedy policy, and every offline number, stays exactly the source's while the
            policy its agents sample changes. Needs ``acting_head`` and ``init_from``.
        value_head_only: train the value head alone beside ``init_from``'s frozen weights: the policy its
            agents sample stays exactly the source's while its greedy policy becomes the value head's.
            Needs ``value_head`` and ``init_from``. With ``acting_head_only`` too, both heads train.
    """

    def __init__(
        self,
        width: int = 64,
        heads: int = 4,
        dropout: float = 0.0,
        train_layers: tuple[int, int] = (8, 16),
        deep_supervision: bool = True,
        long_unroll: float = 0.25,
        long_layers: tuple[int, int] = (24, 64),
        eval_layers: int = 16,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        final_lr_ratio: float = 0.1,
        planner_inputs: bool = True,
        init_from: str | None = None,
        value_head: bool = False,
        value_weight: float = 1.0,
        value_residual: bool = False,
        acting_head: bool = False,
        acting_target_temperature: float = 0.015,
        acting_weight: float = 1.0,
        acting_head_only: bool = False,
        value_head_only: bool = False,
    ) -> None:
        super().__init__()
        heads_only = {"acting": (acting_head_only, acting_head), "value": (value_head_only, value_head)}
        for head, (only, has_head) in heads_only.items():
            if only and not (has_head and init_from is not None):
                raise ValueError(
                    f"{head}_head_only trains a {head} head beside frozen trained weights: it needs"
                    f" {head}_head and init_from (got {head}_head={has_head}, init_from={init_from!r})"
                )
        if not (math.isfinite(acting_target_temperature) and acting_target_temperature > 0):
            raise ValueError(
                f"acting_target_temperature must be a positive number, got {acting_target_temperature}"
            )
        self.save_hyperparameters()
        self.network = PolicyNetwork(
            width=width,
            heads=heads,
            num_layers=eval_layers,
            dropout=dropout,
            planner_inputs=planner_inputs,
            value_head=value_head,
            value_residual=value_residual,
            acting_head=acting_head,
        )
        if init_from is not None:
            self._initialise_from(init_from)
        self.trained_heads = [head for head, (only, _) in heads_only.items() if only]
        if self.trained_heads:  # everything else keeps init_from's weights
            prefixes = tuple(f"{head}_head." for head in self.trained_heads)
            for name, parameter in self.network.named_parameters():
                parameter.requires_grad_(name.startswith(prefixes))
        self.val_metrics = nn.ModuleDict()
        self.test_metrics = nn.ModuleDict()
        self._depth = random.Random(0)
        self._restored_rng: dict | None = None

    def _initialise_from(self, checkpoint: str) -> None:
        from rlfm.pretrained import load_network  # rlfm.pretrained reads checkpoints of this class

        source = load_network(checkpoint)
        ours = {
            "width": self.network.width,
            "heads": self.network.heads,
            "planner_inputs": self.network.planner_inputs,
        }
        theirs = {"width": source.width, "heads": source.heads, "planner_inputs": source.planner_inputs}
        if ours != theirs:
            raise ValueError(f"init_from={checkpoint!r} is a network with {theirs}; this one has {ours}")
        if source.value_head is not None and source.value_residual != self.network.value_residual:
            raise ValueError(  # the same weights would mean an advantage in one and a correction in the other
                f"init_from={checkpoint!r} has a value head with value_residual={source.value_residual}; "
                f"this network has value_residual={self.network.value_residual}"
            )
        if source.acting_head is not None and self.network.acting_head is None:
            raise ValueError(
                f"init_from={checkpoint!r} has an acting head: set acting_head: true to keep it (its"
                " agents sample that head)"
            )
        # a source without a value head leaves this network's new head at its initialisation; a source
        # without an acting head gives it a copy of the policy head (it then starts as the soft policy)
        missing, unexpected = self.network.load_state_dict(source.state_dict(), strict=False)
        if unexpected or any(not name.startswith(("value_head.", "acting_head.")) for name in missing):
            raise ValueError(
                f"init_from={checkpoint!r} does not fit: missing {missing}, unexpected {unexpected}"
            )
        if any(name.startswith("acting_head.") for name in missing):
            self.network.acting_head.load_state_dict(self.network.head.state_dict())

    def forward(self, data: HeteroData, num_layers: int | None = None) -> Tensor:
        """Policy logits (SA,) of an observation graph or batch."""
        return self.network(data, num_layers)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: HeteroData, batch_index: int) -> Tensor:
        low, high = self.hparams.train_layers
        prefix = 0
        if self._depth.random() < self.hparams.long_unroll:
            prefix = self._depth.randint(*self.hparams.long_layers)
            layers, first = prefix + low, prefix + 1
        else:
            layers = self._depth.randint(low, high)
            first = low if self.hparams.deep_supervision else layers
        unrolled = self.network.unroll(batch, layers, first, no_grad_layers=prefix)
        losses = policy_losses(batch, unrolled[-1].logits)  # reported: the last sweep's
        earlier = [cross_entropy(batch, readout.logits).mean() for readout in unrolled[:-1]]
        policy_loss = torch.stack([*earlier, losses["loss"].mean()]).mean()
        size = batch.num_graphs
        terms = {"policy": policy_loss}  # the loss's terms: weight × loss
        if self.hparams.value_head:
            target = relative_advantages(batch)
            value_loss = torch.stack([value_losses(batch, r.values, target).mean() for r in unrolled]).mean()
            terms["value"] = self.hparams.value_weight * value_loss
            self.log("train/value_loss", value_loss, batch_size=size)
        if self.hparams.acting_head:
            sharp = acting_target(batch, self.hparams.acting_target_temperature)
            acting_loss = torch.stack([cross_entropy(batch, r.acting, sharp).mean() for r in unrolled]).mean()
            terms["acting"] = self.hparams.acting_weight * acting_loss
            self.log("train/acting_loss", acting_loss, batch_size=size)
        if self.trained_heads:  # the other heads are frozen: their losses are only reported
            terms = {head: terms[head] for head in self.trained_heads}
        loss = torch.stack(list(terms.values())).sum()
        self.log("train/loss", loss, batch_size=size, prog_bar=True)
        self.log("train/loss_last_sweep", losses["loss"].mean(), batch_size=size)
        self.log("train/kl", losses["kl"].mean(), batch_size=size)
        self.log("train/agreement", losses["agreement"].mean(), batch_size=size)
        self.log("train/layers", float(layers), batch_size=size)
        return loss

    def on_train_start(self) -> None:
        restored, self._restored_rng = self._restored_rng, None
        if restored is None:  # a fresh run: ranks draw different depths
            self._depth = random.Random(self.trainer.global_rank * 7919 + self.global_step)
            return
        self._depth.setstate(_as_tuples(restored["depth"]))
        if self.trainer.global_rank:  # one state is saved (rank 0's): the other ranks fork it
            self._depth = random.Random(f"{self._depth.random()}/{self.trainer.global_rank}")
        torch.set_rng_state(restored["torch"].cpu())
        if torch.cuda.is_available() and len(restored["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([state.cpu() for state in restored["cuda"]])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Save the generators training draws from (unroll depths, dropout), so a resumed run is exact."""
        checkpoint[RNG_KEY] = {
            "depth": self._depth.getstate(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Keep the saved generator states for :meth:`on_train_start` (applied only when training resumes)."""
        self._restored_rng = checkpoint.get(RNG_KEY)

    # ------------------------------------------------------------------ validation and test
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        sources = getattr(datamodule, "val_sources", ["prior"])
        for metrics in (self.val_metrics, self.test_metrics):
            for source in sources:
                if source not in metrics:
                    names = METRICS + (VALUE_METRICS if self.hparams.value_head else ())
                    names += ACTING_METRICS if self.hparams.acting_head else ()
                    metrics[source] = nn.ModuleDict({name: MeanMetric() for name in names})

    def validation_step(self, batch: tuple[HeteroData, HeteroData], batch_index: int) -> None:
        self._evaluation_step(batch, self.val_metrics)

    def test_step(self, batch: tuple[HeteroData, HeteroData], batch_index: int) -> None:
        self._evaluation_step(batch, self.test_metrics)

    def _evaluation_step(self, batch: tuple[HeteroData, HeteroData], metrics: nn.ModuleDict) -> None:
        """Update each source's metrics: loss, KL, agreement and the exact normalised value of the greedy
        policy, at ``eval_layers`` sweeps and at ``DEEP_FACTOR`` times as many."""
        data, truth = batch
        readout = self.network.unroll(data, self.hparams.eval_layers, first=self.hparams.eval_layers)[-1]
        logits = readout.logits
        losses = policy_losses(data, logits)
        if readout.values is not None:
            losses["value_loss"] = value_losses(data, readout.values, relative_advantages(data))
        if readout.acting is not None:
            sharp = acting_target(data, self.hparams.acting_target_temperature)
            losses["acting_loss"] = cross_entropy(data, readout.acting, sharp)
        state_graph = data[STATE].batch
        per_graph = {
            name: scatter(value, state_graph, dim=0, dim_size=data.num_graphs, reduce="mean")
            for name, value in losses.items()
        }
        per_graph["normalized_value"] = self.normalized_values(
            data, truth, self.network.greedy_scores(readout)
        )
        if readout.values is not None:  # the policy head's greedy policy, for comparison
            per_graph["normalized_value_policy"] = self.normalized_values(data, truth, logits)
        deep_layers = DEEP_FACTOR * self.hparams.eval_layers
        deep = self.network.unroll(data, deep_layers, first=deep_layers)[-1]
        per_graph["normalized_value_deep"] = self.normalized_values(
            data, truth, self.network.greedy_scores(deep)
        )
        sources = data.source
        for source in set(sources):
            mask = torch.tensor([s == source for s in sources], device=logits.device)
            for name, value in per_graph.items():
                metrics[source][name].update(value[mask].float())

    @staticmethod
    def normalized_values(data: HeteroData, truth: HeteroData, scores: Tensor) -> Tensor:
        """(B,) exact normalised value of the greedy policy of ``scores`` (SA,) on each true MDP."""
        sa_state, S = data[OF].edge_index[1], data[STATE].num_nodes
        policy = ActionLayout.from_pairs(sa_state, S).greedy_policy(scores.detach().double())
        value = start_values(truth, evaluate_policy(truth, policy))
        return normalize(value, truth.optimal_start_value, truth.uniform_start_value)

    def on_validation_epoch_end(self) -> None:
        summary = self._log_summary(self.val_metrics, "val")
        if summary:
            self._log_figures(summary)

    def on_test_epoch_end(self) -> None:
        self._log_summary(self.test_metrics, "test")

    def _log_summary(self, metrics: nn.ModuleDict, stage: str) -> dict[str, dict[str, float]]:
        """Log ``{stage}/{metric}/{source}``, ``{stage}/loss`` (mean over sources) and
        ``{stage}/normalized_value`` (mean over the benchmarks); reset the metrics."""
        summary: dict[str, dict[str, float]] = {}
        for source, source_metrics in metrics.items():
            if not source_metrics["loss"].update_called:
                continue
            summary[source] = {}
            for name, metric in source_metrics.items():
                value = metric.compute()
                summary[source][name] = float(value)
                self.log(f"{stage}/{name}/{source}", value)
                metric.reset()
        if summary:
            self.log(f"{stage}/loss", sum(s["loss"] for s in summary.values()) / len(summary), prog_bar=True)
            benchmark = [s["normalized_value"] for name, s in summary.items() if name != "prior"]
            if benchmark:
                self.log(f"{stage}/normalized_value", sum(benchmark) / len(benchmark), prog_bar=True)
        return summary

    def _log_figures(self, summary: dict[str, dict[str, float]]) -> None:
        if not isinstance(self.logger, TensorBoardLogger) or not self.trainer.is_global_zero:
            return
        from rlfm.plots import gridworld_policy_figure, normalized_value_figure

        experiment = self.logger.experiment
        values = {source: s["normalized_value"] for source, s in summary.items()}
        experiment.add_figure(
            "val/normalized_value_by_source", normalized_value_figure(values), self.global_step
        )
        datamodule = getattr(self.trainer, "datamodule", None)
        example = getattr(datamodule, "figure_example", lambda: None)()
        if example is not None:
            data, title = example
            data = data.to(self.device)
            with torch.no_grad():
                policy = self.network.policy(data, self.hparams.eval_layers)
            experiment.add_figure(
                "val/gridworld_policy", gridworld_policy_figure(policy.cpu(), title), self.global_step
            )

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        trainable = [parameter for parameter in self.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total // 2)
        final = self.hparams.final_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _as_tuples(state: object) -> object:
    """A ``random.Random`` state with its lists turned back into tuples (a checkpoint may store either)."""
    return tuple(_as_tuples(x) for x in state) if isinstance(state, list | tuple) else state
