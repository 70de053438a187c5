"""Rollout workers: a vLLM engine per worker running the multi-turn agent loop against the simulator farm.

Started by the controller as Ray actors (`rollout.actor.RolloutActor`), each serving `mtr.v1.RolloutService`.
"""
