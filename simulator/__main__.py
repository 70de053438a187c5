"""`python -m simulator serve ...`: start one simulator replica (see simulator/main.py)."""

from simulator.main import main

# Guarded: a model ToolActor's vLLM engine starts its own processes by spawning, which imports this module again.
if __name__ == "__main__":
    raise SystemExit(main())
