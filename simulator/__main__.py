"""`python -m simulator serve ...`: start one simulator replica (see simulator/main.py)."""

from simulator.main import main

raise SystemExit(main())
