"""MTR's shared core: the wire contract, trace grammar, tool schemas, answer metrics, config and data.

Every service package (simulator, rollout, learner, controller) imports only from here, never from each
other, so each can run on its own machine. This package must stay light: importing it never pulls in
torch, vLLM or Ray (tests/unit/test_slim_core.py keeps that true).
"""

__version__ = "0.1.0"
