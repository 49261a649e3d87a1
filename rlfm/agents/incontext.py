r"""The rlfm in-context agent of the evaluation protocols: a pretrained network reads the counts and returns
a policy; nothing trains. (For your own environment, step by step: :class:`rlfm.InContextAgent`.)

Before each episode the agent turns each run's counts into an observation graph and runs the network
once on the batch of them. Online it acts by sampling

.. math::
    a \sim \pi_\theta(\cdot \mid s, \mathcal{D})^{1/T}.

The network is trained to predict the posterior mean, under its prior, of the Boltzmann policy
softmax(Q*/τ) given the data; as τ → 0 that is P(a is optimal | data), so sampling it resembles posterior
(Thompson) sampling of the optimal action: that is where its exploration comes from. T < 1 acts more
greedily (with the shipped network, T = 0.2 stops exploring too early on a slippery FrozenLake). A network
with an acting head (trained on a sharper target) is sampled from that head instead. Its
greedy policy, scored by the protocols, is :math:`\arg\max_a \pi_\theta(a \mid s, \mathcal{D})`, or for a
network with a value head read greedily (``greedy_from="value"``) the argmax of its predicted advantages.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Generator, Tensor
from torch_geometric.data import Batch

from rlfm.agents.base import Agent
from rlfm.agents.dominance import dominant_actions
from rlfm.agents.guard import evidence_scores, fewest_visits_ahead, guarded_actions
from rlfm.agents.holdout import holdout_actions
from rlfm.agents.planning import EmpiricalModel, untried_scores
from rlfm.counts import Counts
from rlfm.graph import OF, STATE, observation_graphs
from rlfm.network import (
    DEFAULT_DEPTH_RULE,
    DEPTH_RULES,
    PolicyNetwork,
    checked_handoff,
    checked_untried,
    log_group_softmax,
)
from rlfm.pretrained import LARGE_MDP_STATES, load_network, network_label, packaged_name, packaged_network
from rlfm.solve import ActionLayout


class BatchedInContextAgent(Agent):
    """Acts with a pretrained :class:`~rlfm.network.PolicyNetwork`; no weights change at use time.

    Args:
        checkpoint: a network file or training checkpoint, or a shipped network's name (``"default"``,
            ``"planner"``); None: the shipped network for the MDP's size, as :func:`rlfm.predict_policy`
            chooses it (:func:`rlfm.pretrained.packaged_network`: the count-only network up to 256 states,
            the planner network above), chosen in :meth:`start`.
        network: an already loaded network (instead of ``checkpoint``).
        temperature: T dividing the logits before sampling actions (1: the learned posterior; None: the
            network's ``acting_temperature``, chosen for it on the validation MDPs).
        num_layers: tied sweeps per forward pass; None follows the network's own rule
            (:meth:`~rlfm.network.PolicyNetwork.infer`: its depth K with planner inputs, else unrolling
            until the policy settles).
        max_layers: the cap of that unrolling.
        warm_start: a network that unrolls until its policy settles starts each plan from the embeddings
            where the previous plan settled (at least 2 sweeps) instead of from the encoded inputs.
        guard: c > 0 overrules the greedy policy where the data are sure it is worse
            (:mod:`rlfm.agents.guard`, bonus scale c); None: no guard. Acting is unchanged.
        greedy_checkpoint: a second network file whose greedy policy, on the same counts, is this agent's
            greedy policy (the first network still chooses the actions): e.g. one trained on a soft target
            to exploit beside one trained on a sharp target to explore. None: the acting network's own.
        evidence: κ > 0 makes the greedy policy argmax_a log π_θ(a | s) + κ n(s, a) Â(s, a), the network's
            policy weighed by certainty equivalence's advantages and the counts behind them
            (:func:`rlfm.agents.guard.evidence_scores`); None: the network's own. Acting is unchanged.
        holdout: the greedy policy is certainty equivalence's instead of the network's where data held out
            from each say it is better and neither heads for untried pairs (:mod:`rlfm.agents.holdout`: two
            more network calls on the halves of the counts per plan). Acting is unchanged.
        dominance: after every other readout, the whole greedy policy becomes certainty equivalence's in a
            run where CE's plan, valued with a worst-case unseen outcome, beats the network's valued with a
            best-case one (:mod:`rlfm.agents.dominance`). Acting is unchanged. None: the network's own
            default (``greedy_dominance``).
        handoff: M ≥ 1 hands the greedy choice in a state to the planner network (``"planner"``, which reads
            certainty equivalence's values and matches it on near-exact models) once every pair that can be
            reached from that state along observed transitions, its own included, has been tried at least M
            times (:func:`rlfm.agents.guard.fewest_visits_ahead`): where the data ahead are thick the plan
            should be planning's. The agent's own network keeps every other state and all of acting. 0:
            off; None: the network's own default (``greedy_handoff``), or off beside another greedy readout
            (guard, evidence, holdout, a greedy_checkpoint or an ensemble). A no-op when the agent's
            network is the shipped planner network.
        depth_rule: how a count-only network chooses its sweeps (``"settle"`` or ``"diameter"``, see
            :meth:`~rlfm.network.PolicyNetwork.infer`); None: the network's own.
        bootstrap: the actions are sampled from the network's plan on a Poisson bootstrap of each run's
            counts (:meth:`rlfm.counts.Counts.bootstrap`, redrawn at every plan) instead of on the counts
            themselves: randomness that holds for a whole episode and comes from the data, as bootstrapped
            value estimates explore. The greedy policy is still the network's on the counts (a second
            network call per plan).
        episode_commit: draw one action per state from π^(1/T) when each episode starts and follow those
            actions through the episode (a deterministic policy sampled per episode, as posterior sampling
            commits to one sampled MDP), instead of drawing a fresh action at every step.
        untried_bonus: β ≥ 0 adds β U(s, a) to the sampling logits (after dividing by T), U the bonus of
            :func:`rlfm.agents.planning.untried_scores` from the counts of the last plan:
            a ∝ π_θ(a | s, D)^{1/T} e^{β U(s, a)}. With ``untried_discount`` δ = 0, U marks the untried pairs
            alone (each drawn e^β times as often as the network alone would); with δ > 0 it is δ^d for a
            pair d steps from the nearest untried one, so the bonus also steers toward the unexplored. 0:
            the network alone. The greedy policy is unchanged. None (as for the next two): the network's
            own default (``acting_untried_bonus``; chosen on the validation MDPs for the shipped network).
        untried_discount: δ ∈ [0, 1) of ``untried_bonus``.
        untried_relative: divide U by its largest value among the state's actions, so the action on the
            shortest route to the unexplored gets β and one on a route k steps longer β δ^k.
        untried_known: R-max's known threshold m ≥ 1 of the bonus: pairs tried fewer than m times count as
            untried (1: only the pairs never tried).
        explored_temperature: with the bonus on, the temperature used instead of T in states from which no
            untried pair can be reached (U(s, ·) = 0: there is nothing left to travel to, so less sampling
            noise costs no exploration); None: T everywhere.
        replan_growth: κ > 0 re-plans a run only once its transitions have grown by the factor 1 + κ since
            its last plan (n ≥ (1 + κ)·n_last), keeping its policy in between: about log(n_end / n_first) /
            log(1 + κ) plans instead of one per episode, all early ones kept. None: plan on every call.
        ensemble: more network files (or shipped names) planned beside the first on the same counts: the
            agent averages the networks' log-policies per state, for acting (acting heads) and for the
            greedy policy (policy heads), i.e. it uses their normalised geometric mean
            π(a | s) ∝ Π_i π_i(a | s)^{1/n}. The temperature and the untried bonus stay the first network's.
            Where the shipped default hands an MDP of more than 256 states to the planner network, that
            network plans alone. Empty: the first network alone (n times the network calls otherwise).
        ensemble_greedy: False keeps the greedy policy the first network's alone, so the ensemble only acts.
        default_checkpoint: a network file that takes the shipped default network's place in the size rule
            (MDPs of at most 256 states; larger ones still go to the planner network), so a candidate for
            the default is judged as it would ship. Only without ``checkpoint`` and ``network``.
        device: where the network runs (default: CPU).
    """

    name: ClassVar[str] = "rlfm"
    vectorized: ClassVar[bool] = False

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        network: PolicyNetwork | None = None,
        temperature: float | None = None,
        num_layers: int | None = None,
        max_layers: int = 256,
        warm_start: bool = False,
        replan_growth: float | None = None,
        episode_commit: bool = False,
        bootstrap: bool = False,
        untried_bonus: float | None = None,
        untried_discount: float | None = None,
        untried_relative: bool | None = None,
        untried_known: int = 1,
        explored_temperature: float | None = None,
        guard: float | None = None,
        evidence: float | None = None,
        holdout: bool = False,
        dominance: bool | None = None,
        handoff: int | None = None,
        depth_rule: str | None = None,
        greedy_checkpoint: str | Path | None = None,
        ensemble: Sequence[str | Path] = (),
        ensemble_greedy: bool = True,
        default_checkpoint: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if explored_temperature is not None and not (
            math.isfinite(explored_temperature) and explored_temperature > 0
        ):
            raise ValueError(f"explored_temperature must be positive, got {explored_temperature}")
        if replan_growth is not None and not (math.isfinite(replan_growth) and replan_growth > 0):
            raise ValueError(f"replan_growth must be a positive number or None, got {replan_growth}")
        untried_bonus, untried_discount = checked_untried(untried_bonus, untried_discount)
        if isinstance(untried_known, bool) or not isinstance(untried_known, int) or untried_known < 1:
            raise ValueError(f"untried_known must be an integer >= 1, got {untried_known!r}")
        if depth_rule is not None and depth_rule not in DEPTH_RULES:
            raise ValueError(f"unknown depth_rule {depth_rule!r}; choose from {DEPTH_RULES}")
        if guard is not None and not (math.isfinite(guard) and guard > 0):
            raise ValueError(f"guard must be a positive number or None, got {guard}")
        if evidence is not None and not (math.isfinite(evidence) and evidence > 0):
            raise ValueError(f"evidence must be a positive number or None, got {evidence}")
        if handoff is not None:
            checked_handoff(handoff)
        readouts = [guard is not None, evidence is not None, bool(holdout), bool(handoff)]
        if sum(readouts) > 1:
            raise ValueError(
                "guard, evidence, holdout and handoff are readouts of the greedy policy: choose one"
            )
        if handoff and (greedy_checkpoint is not None or ensemble):
            raise ValueError(
                "handoff reads the acting network's greedy policy: not with a greedy_checkpoint or an ensemble"
            )
        if greedy_checkpoint is not None and evidence is not None:
            raise ValueError(
                "evidence weighs the acting network's policy: it cannot read a greedy_checkpoint"
            )
        ensemble = tuple(ensemble)
        if ensemble and (warm_start or greedy_checkpoint is not None):
            raise ValueError(
                "an ensemble plans every network from scratch on the same counts: it cannot be combined"
                " with warm_start or a greedy_checkpoint"
            )
        if replan_growth is not None and warm_start:
            raise ValueError(
                "warm_start and replan_growth cannot be combined (a warm start needs every run planned)"
            )
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.packaged = network is None and checkpoint is None  # the shipped network by size, at start
        if default_checkpoint is not None and not self.packaged:
            raise ValueError(
                "default_checkpoint replaces the shipped default network in the size rule: it cannot be"
                " combined with a checkpoint or network, which is used at every size"
            )
        self.default_checkpoint = default_checkpoint
        self.default_network = None if default_checkpoint is None else load_network(default_checkpoint)
        self.network_name = "default"  # of the packaged network (until start sees the MDP's size)
        self.requested = (temperature, untried_bonus, untried_discount, untried_relative)
        # another greedy readout turns the network's default handoff off; an explicit one was checked above
        other_readout = any(readouts[:3]) or greedy_checkpoint is not None or bool(ensemble)
        self.requested_handoff = 0 if handoff is None and other_readout else handoff
        self.requested_dominance = dominance
        if network is None:  # the packaged default comes from the shared cache until start sees the size
            network = self._packaged(1) if self.packaged else load_network(checkpoint)
        self._use(network)
        self.num_layers = num_layers
        self.max_layers = max_layers
        self.warm_start = warm_start
        self.replan_growth = replan_growth
        self.episode_commit = bool(episode_commit)
        self.bootstrap = bool(bootstrap)
        self.untried_known = untried_known
        self.explored_temperature = explored_temperature
        self.guard = guard
        self.evidence = evidence
        self.holdout = bool(holdout)
        self.depth_rule = depth_rule
        self.greedy_checkpoint = greedy_checkpoint
        self.greedy_network = (
            None if greedy_checkpoint is None else load_network(greedy_checkpoint).to(self.device).eval()
        )
        self.ensemble = ensemble
        self.ensemble_greedy = bool(ensemble_greedy)
        self.partners = [load_network(path).to(self.device).eval() for path in ensemble]
        self._device_planner: PolicyNetwork | None = None  # the handoff's planner network off the CPU
        if self.partners and any(n.greedy_from != "policy" for n in (self.network, *self.partners)):
            raise ValueError(
                "an ensemble averages policy heads: a network read greedily by value cannot join"
            )
        self.layers_used: list[int] = []

    def _use(self, network: PolicyNetwork) -> None:
        """Act with ``network``: the settings not given to the constructor become its own defaults. A shipped
        network is shared (:func:`packaged_network` caches it on the CPU), so it is copied, not moved, to
        another device."""
        if self.packaged and self.device != torch.device("cpu"):
            network = copy.deepcopy(network)
        self.network = network.to(self.device).eval()
        temperature, bonus, discount, relative = self.requested
        self.temperature = network.acting_temperature if temperature is None else temperature
        self.untried_bonus = network.acting_untried_bonus if bonus is None else bonus
        self.untried_discount = network.acting_untried_discount if discount is None else discount
        self.untried_relative = network.acting_untried_relative if relative is None else relative
        self.handoff = network.greedy_handoff if self.requested_handoff is None else self.requested_handoff
        requested = self.requested_dominance
        self.dominance = network.greedy_dominance if requested is None else bool(requested)

    def _packaged(self, num_states: int) -> PolicyNetwork:
        """The network the size rule gives an MDP of ``num_states`` states (:func:`packaged_network`), with
        ``default_checkpoint``'s network, if given, in the shipped default's place."""
        if self.default_network is not None and packaged_name(num_states) == "default":
            return self.default_network
        return packaged_network(num_states)

    def start(self, num_actions: Tensor, gamma: float, runs: int, generator: Generator) -> None:
        if self.packaged:
            self.network_name = packaged_name(len(num_actions))
            self._use(self._packaged(len(num_actions)))
        self.layout = ActionLayout(num_actions)
        self.gamma, self.runs, self.generator = float(gamma), runs, generator
        # [R, SA] the logits actions are sampled from (the acting head's, if any); no data: uniform
        self.logits = torch.zeros(runs, self.layout.num_pairs, dtype=torch.float64)
        self.greedy_scores = self.logits.clone()  # rows are overwritten in place: keep them apart
        self.layers_used = []
        # the held-out splits draw from their own stream, so acting is the same with and without them
        self.split_generator = torch.Generator().manual_seed(generator.initial_seed() + 1)
        self.embeddings: tuple[Tensor, Tensor] | None = None  # where the last plan settled (warm start)
        # transitions at each run's last plan (-1: never planned)
        self.planned_at = torch.full((runs,), -1.0, dtype=torch.float64)
        self.plans = torch.zeros(runs, dtype=torch.long)  # plans made for each run
        self.untried: Tensor | None = None  # [R, SA] U of untried_bonus at the last plan
        self.explored: Tensor | None = None  # [R, SA] where explored_temperature applies, at the last plan

    def due(self, observed: Tensor) -> Tensor:
        """(R,) runs to plan now, given each run's transitions ``observed`` (R,): every run, or with
        ``replan_growth`` κ those that reached (1 + κ)·n_last (and those never planned, or planned before
        any data)."""
        if self.replan_growth is None:
            return torch.ones_like(observed, dtype=torch.bool)
        grown = observed >= (1.0 + self.replan_growth) * self.planned_at
        return grown | (self.planned_at <= 0) & (observed > self.planned_at)

    @torch.no_grad()
    def plan(self, counts: list[Counts]) -> None:
        observed = torch.tensor([float(c.num_observed) for c in counts], dtype=torch.float64)
        runs = self.due(observed).nonzero().squeeze(1)
        if runs.numel() > 0:
            self.planned_at[runs] = observed[runs]
            self.plans[runs] += 1
            self._plan_runs(runs, [counts[r] for r in runs.tolist()])
        if self.untried_bonus > 0:
            model = EmpiricalModel.from_counts(counts, self.layout)
            self.untried = untried_scores(
                model, self.untried_discount, self.untried_relative, self.untried_known
            )
            if self.explored_temperature is not None:  # [R, SA] pairs of states with nothing untried in reach
                self.explored = (self.layout.state_max(self.untried) == 0)[:, self.layout.sa_state]
        if self.episode_commit:
            self.committed = self._sample(torch.arange(self.layout.num_states).expand(self.runs, -1))

    def _plan_runs(self, runs: Tensor, counts: list[Counts]) -> None:
        """Run the network on the graphs of ``counts`` and store their policies in rows ``runs``."""
        batches: dict[bool, Batch] = {}  # by reads_planner_columns: both networks may read the same graphs
        acting, logits, greedy_scores, layers = self._ensemble_readout(counts, batches)
        if self.bootstrap:  # act on a resampled dataset; the readouts of the counts themselves stay
            resampled = [c.bootstrap(self.generator) for c in counts]
            acting = self._ensemble_readout(resampled, {}, warm=False)[0]
        if self.greedy_network is not None:
            greedy_scores = self._readout(self.greedy_network, counts, batches, warm=False)[2]
        self.layers_used.append(layers)
        shape = (len(counts), self.layout.num_pairs)
        self.logits[runs] = acting.double().cpu().view(shape)
        self.greedy_scores[runs] = greedy_scores.double().cpu().view(shape)
        if self.guard is not None:
            actions = self.layout.greedy_actions(self.greedy_scores[runs])
            guarded = guarded_actions(actions, counts, self.layout, self.gamma, self.guard)
            self.greedy_scores[runs] = self.layout.one_hot(guarded)
        if self.evidence is not None:
            self.greedy_scores[runs] = evidence_scores(
                logits.double().cpu().view(shape), counts, self.layout, self.gamma, self.evidence
            )
        if self.holdout:
            actions = self.layout.greedy_actions(self.greedy_scores[runs])
            chosen = holdout_actions(
                self._greedy_actions, actions, counts, self.layout, self.gamma, self.split_generator
            )
            self.greedy_scores[runs] = self.layout.one_hot(chosen)
        if self.handoff > 0:
            self._hand_off(runs, counts)
        if self.dominance:  # only the switched runs' scores become one-hot
            actions = self.layout.greedy_actions(self.greedy_scores[runs])
            chosen = dominant_actions(actions, counts, self.layout, self.gamma)
            switched = (chosen != actions).any(dim=1)
            self.greedy_scores[runs[switched]] = self.layout.one_hot(chosen[switched])

    def _hand_off(self, runs: Tensor, counts: list[Counts]) -> None:
        """The greedy actions of rows ``runs`` become the planner network's in the states whose data ahead
        are thick (every reachable pair tried ``handoff`` times or more); nothing when the agent's network is
        the shipped planner network itself."""
        planner = packaged_network(LARGE_MDP_STATES + 1)  # shared and on the CPU: copied to move it
        if self.network is planner:
            return
        # a state is thick only if its own pairs are: skip the reachability rounds for runs with none
        visits = torch.stack([c.sa_count for c in counts]).double()  # (n, SA)
        maybe = (self.layout.padded(visits, fill=torch.inf).amin(dim=-1) >= self.handoff).any(dim=1)
        maybe = maybe.nonzero().squeeze(1)
        if maybe.numel() == 0:
            return
        runs, counts = runs[maybe], [counts[i] for i in maybe.tolist()]
        fewest = fewest_visits_ahead(EmpiricalModel.from_counts(counts, self.layout))  # (n, SA)
        thick = self.layout.padded(fewest, fill=torch.inf).amin(dim=-1) >= self.handoff  # (n, S)
        handed = thick.any(dim=1).nonzero().squeeze(1)
        if handed.numel() == 0:
            return
        if self.device != torch.device("cpu"):  # one copy on the device per agent, not one per plan
            if self._device_planner is None:
                self._device_planner = copy.deepcopy(planner).to(self.device)
            planner = self._device_planner
        chosen = [counts[i] for i in handed.tolist()]
        scores = self._readout(planner, chosen, {}, warm=False)[2].double().cpu()
        planned = self.layout.greedy_actions(scores.view(len(chosen), self.layout.num_pairs))
        rows = runs[handed]
        own = self.layout.greedy_actions(self.greedy_scores[rows])
        actions = torch.where(thick[handed], planned, own)
        self.greedy_scores[rows] = self.layout.one_hot(actions)

    def _greedy_actions(self, counts: list[Counts]) -> Tensor:
        """(len(counts), S) the greedy actions of the network that gives the greedy policy, on ``counts``."""
        if self.greedy_network is not None:
            scores = self._readout(self.greedy_network, counts, {}, warm=False)[2]
        elif self.ensemble_greedy:
            scores = self._ensemble_readout(counts, {}, warm=False)[2]
        else:  # an ensemble that only acts: the first network alone reads greedily
            scores = self._readout(self.network, counts, {}, warm=False)[2]
        return self.layout.greedy_actions(scores.double().cpu().view(len(counts), self.layout.num_pairs))

    def _ensemble_readout(
        self, counts: list[Counts], batches: dict[bool, Batch], warm: bool | None = None
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """:meth:`_readout` of the acting network, or with an ensemble the mean over its networks of the
        per-state log-softmax of each readout (acting, policy; the greedy scores are the mean log-policy)."""
        warm = self.warm_start if warm is None else warm
        first = self._readout(self.network, counts, batches, warm=warm)
        partners = [] if self.network_name == "planner" else self.partners
        if not partners:
            return first
        batch = batches[self.network.reads_planner_columns]
        sa_state, num_states = batch[OF].edge_index[1], batch[STATE].num_nodes
        readouts = [first] + [self._readout(p, counts, batches, warm=False) for p in partners]
        acting, logits = (
            torch.stack([log_group_softmax(r[i], sa_state, num_states) for r in readouts]).mean(0)
            for i in (0, 1)
        )
        greedy = logits if self.ensemble_greedy else first[2]
        return acting, logits, greedy, max(r[3] for r in readouts)

    def _readout(
        self, network: PolicyNetwork, counts: list[Counts], batches: dict[bool, Batch], warm: bool
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """``network``'s acting logits (N,), policy logits (N,) and greedy scores (N,) over the N pairs of
        the graphs of ``counts`` (built once per kind of input, kept in ``batches``), and the sweeps it ran (``warm``:
        start from where the previous plan settled)."""
        planner = network.reads_planner_columns
        if planner not in batches:
            graphs = observation_graphs(counts, [self.gamma] * len(counts), planner=planner)
            batches[planner] = Batch.from_data_list(graphs).to(self.device)
        batch = batches[planner]
        if warm and self.num_layers is None and not network.planner_inputs:
            min_layers = None if self.embeddings is None else 1
            settled = network.settle_from(batch, self.embeddings, min_layers, max_layers=self.max_layers)
            self.embeddings = settled.embeddings
        else:
            settled = network.infer(
                batch, max_layers=self.max_layers, num_layers=self.num_layers, depth_rule=self.depth_rule
            )
        layers = int(settled.sweeps.max())
        return settled.acting_logits, settled.logits, settled.greedy_scores, layers

    def act(self, states: Tensor) -> Tensor:
        if self.episode_commit:
            return self.committed[torch.arange(states.numel()), states]
        return self._sample(states.unsqueeze(1)).squeeze(1)

    def _sample(self, states: Tensor) -> Tensor:
        """(R, k) actions drawn from π^(1/T) of each run's states ``states`` (R, k), independently."""
        logits = self.logits / self.temperature
        if self.untried is not None:
            if self.explored is not None:
                logits = torch.where(self.explored, self.logits / self.explored_temperature, logits)
            logits = logits + self.untried_bonus * self.untried
        scaled = self.layout.padded(logits)  # [R, S, A_max], -inf where no action
        rows = scaled[torch.arange(states.shape[0]).unsqueeze(1), states]  # [R, k, A_max]
        probs = torch.softmax(rows, dim=-1).flatten(0, 1)
        return torch.multinomial(probs, 1, generator=self.generator).view(states.shape)

    def greedy_policy(self) -> Tensor:
        scores = self.greedy_scores
        return self.layout.one_hot(self.layout.greedy_actions(scores, torch.zeros_like(scores)))

    def _default_depth(self) -> int | str:
        if self.network.planner_inputs:
            return self.network.num_layers
        rule = self.depth_rule or DEFAULT_DEPTH_RULE
        if rule == "diameter":
            return f"max({self.network.num_layers}, diameter)<= {self.max_layers}"
        return f"settle<= {self.max_layers}"

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "checkpoint": (
                f"{self.default_checkpoint} (as the packaged default)"
                if self.default_network is not None and self.network_name == "default"
                else network_label(self.checkpoint, self.network_name if self.packaged else None)
            ),
            "temperature": self.temperature,
            "num_layers": self.num_layers if self.num_layers is not None else self._default_depth(),
            **({"warm_start": True} if self.warm_start else {}),
            **({"replan_growth": self.replan_growth} if self.replan_growth is not None else {}),
            **({"episode_commit": True} if self.episode_commit else {}),
            **({"bootstrap": True} if self.bootstrap else {}),
            **(
                {
                    "untried_bonus": self.untried_bonus,
                    "untried_discount": self.untried_discount,
                    "untried_relative": self.untried_relative,
                    **({"untried_known": self.untried_known} if self.untried_known > 1 else {}),
                    **(
                        {"explored_temperature": self.explored_temperature}
                        if self.explored_temperature is not None
                        else {}
                    ),
                }
                if self.untried_bonus > 0
                else {}
            ),
            **({"guard": self.guard} if self.guard is not None else {}),
            **({"evidence": self.evidence} if self.evidence is not None else {}),
            **({"handoff": self.handoff} if self.handoff > 0 else {}),
            **({"holdout": True} if self.holdout else {}),
            **({"dominance": True} if self.dominance else {}),
            **({"ensemble": [str(path) for path in self.ensemble]} if self.ensemble else {}),
            **({"ensemble_greedy": False} if self.ensemble and not self.ensemble_greedy else {}),
            **(
                {"greedy_checkpoint": str(self.greedy_checkpoint)}
                if self.greedy_checkpoint is not None
                else {}
            ),
        }
