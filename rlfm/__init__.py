"""rlfm: a reinforcement-learning foundation model for tabular MDPs.

One graph network, pretrained only on MDPs drawn from a synthetic prior, reads what has been observed in
an unseen MDP (its counts) and returns a policy in one forward pass.

>>> import rlfm
>>> mdp = rlfm.TabularMDP.from_npz("my_mdp.npz")          # or from_dense / from_gymnasium
>>> counts = rlfm.Counts.empty_like(mdp)
>>> counts.update(state=0, action=1, reward=-1.0, next_state=3)
>>> policy = rlfm.predict_policy(counts, gamma=mdp.gamma)  # (SA,) π(a | s, data)

In your own environment (Discrete spaces), step by step: ``agent = rlfm.InContextAgent(S, A, gamma)``, then
``agent.act(state)`` and ``agent.observe(state, action, reward, next_state, terminated, truncated)``.
"""

# the planning core (value iteration, policy evaluation, normalised values); imported here so that its
# SciPy import (~0.2 s) is paid by `import rlfm`, not by the first call that plans (rlfm.graph, which it
# reads, can only import it lazily)
from rlfm import solve
from rlfm.counts import Counts
from rlfm.interactive import InContextAgent, QLearningAgent
from rlfm.mdp import TabularMDP
from rlfm.network import PolicyNetwork
from rlfm.pretrained import PACKAGED_CHECKPOINT, load_network, predict_policy

__version__ = "0.1.0"

__all__ = [
    "PACKAGED_CHECKPOINT",
    "Counts",
    "InContextAgent",
    "PolicyNetwork",
    "QLearningAgent",
    "TabularMDP",
    "load_network",
    "predict_policy",
    "solve",
]
