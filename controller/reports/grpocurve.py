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
    # (steps done, dataset, EM, 95 % interval low, high); curves written before intervals have EM as both ends
    exact_match: list[tuple[int, str, float, float, float]] = field(default_factory=list)

    def add_reward(self, step: int, reward: float) -> None:
        self.rewards.append((step, reward))

    def add_eval(
        self, steps_done: int, dataset: str, em: float, low: float | None = None, high: float | None = None
    ) -> None:
        self.exact_match.append((steps_done, dataset, em, em if low is None else low, em if high is None else high))

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GRPOCurve:
        evals = [tuple(e) if len(e) == 5 else (*e, e[2], e[2]) for e in data.get("exact_match", [])]
        return cls([tuple(r) for r in data.get("rewards", [])], evals)

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
        for dataset in dict.fromkeys(e[1] for e in self.exact_match):
            points = [e for e in self.exact_match if e[1] == dataset]
            steps = [p[0] for p in points]
            line = right.plot(steps, [p[2] for p in points], marker="s", label=dataset)[0]
            right.fill_between(steps, [p[3] for p in points], [p[4] for p in points], color=line.get_color(), alpha=0.2)
        right.set(
            title="held-out exact match (95 % interval)", xlabel="GRPO steps done", ylabel="EM", ylim=(-0.02, 1.02)
        )
        right.grid(alpha=0.3)
        if self.exact_match:
            right.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path
