"""How a trace is judged: the composite reward (answer correctness + internal consistency), group-normalized
advantages, and the bootstrap intervals every reported number carries.

Pure functions on traces and numbers: no services, no files. Any part of `controller` (and `bench/`) may use it.
"""
