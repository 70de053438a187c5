"""The learner service: a DeepSpeed engine taking SFT and GRPO steps, served over gRPC.

`learner.losses` holds the losses, `learner.engine.PolicyLearner` the engine, `learner.service` the gRPC
server (`python -m learner.service`). Importing this package itself stays light; torch loads with its modules.
"""
