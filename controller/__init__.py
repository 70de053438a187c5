"""The controller: drives every stage of a run (synthesis, SFT, GRPO, evaluation), computes rewards and
advantages, exports metrics and writes the run directory. It reaches services only through gRPC clients.
"""
