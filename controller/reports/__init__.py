"""What a run leaves behind and shows: the run directory (config, metrics.jsonl), the controller's Prometheus
metrics and service discovery, the report and evaluation tables, the GRPO curve, and CPU-use windows.

It imports `controller.scoring` (intervals) and nothing else of `controller`; every other part may use it.
"""
