"""Appliers and callbacks that put other frameworks' training under supervision.

Each module imports its framework, so import the one you use:

* :mod:`supervisor.integrations.torch`: ``TorchApplier`` for a hand-written loop on a ``torch.optim.Optimizer``;
* :mod:`supervisor.integrations.sb3`: ``SupervisorCallback`` for Stable-Baselines3 (extra ``sb3``);
* :mod:`supervisor.integrations.hf`: ``SupervisorCallback`` for Hugging Face ``Trainer`` and TRL (extra ``hf``).

RLlib without Tune is on the Ray side: :mod:`actors.rllib`.
"""
