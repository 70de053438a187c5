"""The simulator service: a ToolMaker that hands out tool schemas and a ToolActor that answers tool calls.

Run a replica with `python -m simulator serve --port 0 --world-seed 0`; clients talk to it through
`mtr.simclient.SimulatorClient`. Nothing here imports torch, vLLM or Ray.
"""
