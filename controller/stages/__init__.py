"""What each stage of a run does: trace synthesis (the AutoAgent and its teachers), SFT, the GRPO loop and
step, the curriculum, held-out evaluation, the datasets they read, and the ToolActor harvest.

Stages use `controller.scoring`, `controller.cluster` (through the clients it returns) and `controller.reports`;
only `controller.commands` imports them.
"""
