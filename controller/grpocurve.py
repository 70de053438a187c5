"""The Stage-2 learning curve: mean reward per GRPO step and held-out EM at the evaluated steps.

Kept as JSON beside a PNG in the output directory and rewritten after every step, so a run that stops
still shows how far it got; a resumed run carries the curve on from its checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class GRPOCurve:
    rewards: list[tuple[int, float]] = field(default_factory=list)  # (step, mean reward)
    exact_match: list[tuple[int, str, float]] = field(default_factory=list)  # (steps done, dataset, EM)

    def add_reward(self, step: int, reward: float) -> None:
        self.rewards.append((step, reward))

    def add_eval(self, steps_done: int, dataset: str, em: float) -> None:
        self.exact_match.append((steps_done, dataset, em))

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GRPOCurve:
        return cls([tuple(r) for r in data.get("rewards", [])], [tuple(e) for e in data.get("exact_match", [])])

    def write(self, out: Path) -> None:
        (out / "grpo_curve.json").write_text(json.dumps(self.as_dict(), indent=2))
        self.plot(out / "grpo_curve.png")

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on servers and CI
        import matplotlib.pyplot as plt

        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        if self.rewards:
            steps, values = zip(*self.rewards, strict=True)
            left.plot(steps, values, marker="o")
        left.set(title="mean reward per GRPO step", xlabel="step", ylabel="reward")
        left.grid(alpha=0.3)
        for dataset in dict.fromkeys(name for _, name, _ in self.exact_match):
            points = [(s, em) for s, name, em in self.exact_match if name == dataset]
            right.plot([p[0] for p in points], [p[1] for p in points], marker="s", label=dataset)
        right.set(title="held-out exact match", xlabel="GRPO steps done", ylabel="EM", ylim=(-0.02, 1.02))
        right.grid(alpha=0.3)
        if self.exact_match:
            right.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path
