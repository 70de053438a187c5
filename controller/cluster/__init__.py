"""Starting and wiring the services: Ray (local or joined), the simulator farm (local processes or Ray actors),
the learner and rollout workers as Ray actors, the pool of rollout workers, and weight syncs between them.

It hands out gRPC clients; stages never reach into the actors themselves. It imports `controller.reports` for
metrics targets only.
"""
