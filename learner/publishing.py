"""How a learner hands its weights to the rollout engines: publish a version, or broadcast over a weight group.

`Publishing` is a part of `PolicyLearner` (a mixin over its weights, ranks and config): through the Ray
object store (`publish`, any node) or a torch.distributed group the engines joined (`send_weights`). Each
publish counts how many served (rounded) weights changed since the last one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from learner import lora
from mtr.placement import bind_address
from mtr.weights import weights_checksum

if TYPE_CHECKING:
    from mtr.broadcast import PublishInfo, WeightBroadcast, WeightGroupInfo


class Publishing:
    """Weight publishing for `PolicyLearner` (see the module docstring)."""

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(Hugging Face name, CPU tensor) for every weight, `lm_head.weight` included when tied.

        vLLM loads the tied `lm_head.weight` too (and it wins), so it must travel. Tensors are views of
        the live parameters on CPU: copy them if you keep them across a step.
        """
        module = self._engine.module
        if self.config.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters())):
                state = {name: t.detach().to("cpu", copy=True) for name, t in module.state_dict().items()}
        else:
            state = module.state_dict()
        if self.config.lora.enabled:  # adapters folded into their base weights, under the base names
            state = lora.merged_weights(state, lora.scaling_of(self.config.lora))
        if self._hf.config.tie_word_embeddings and "lm_head.weight" not in state:
            state["lm_head.weight"] = state.get("model.embed_tokens.weight", self._hf.get_input_embeddings().weight)
        for name, tensor in state.items():
            yield name, tensor.detach().cpu()

    def adapter_weights(self) -> dict[str, torch.Tensor]:
        """The LoRA adapter tensors alone (peft names, CPU copies); empty without LoRA."""
        if not self.config.lora.enabled:
            return {}
        module = self._engine.module
        if self.config.zero_stage == 3:  # gather the adapters' partitions (every rank takes part)
            import deepspeed

            adapters = [p for n, p in module.named_parameters() if lora.is_adapter_key(n)]
            with deepspeed.zero.GatheredParameters(adapters):
                return {
                    n: t.detach().to("cpu", copy=True) for n, t in lora.adapter_weights(module.state_dict()).items()
                }
        return {n: t.detach().to("cpu", copy=True) for n, t in lora.adapter_weights(module.state_dict()).items()}

    @property
    def syncs_adapter(self) -> bool:
        """Whether the rollout engines receive the LoRA adapter alone (learner.lora.sync 'adapter')."""
        return self.config.lora.enabled and self.config.lora.sync == "adapter"

    def synced_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """What a publish sends: the adapter alone, or every (merged) weight."""
        return iter(self.adapter_weights().items()) if self.syncs_adapter else self.named_weights()

    def checksum(self, dtype: str = "bfloat16") -> str:
        """Checksum of what the rollout engines hold after a sync, in the broadcast dtype; equals theirs when
        they hold the learner's version (the adapter alone under adapter sync)."""
        return weights_checksum(self.synced_weights(), dtype=dtype)

    def publish(self, version: int, broadcast: str) -> PublishInfo:
        """Publish the current weights under `version` through the named broadcast ("ray" or "local").

        The broadcast is made once per kind and kept: the Ray variant's published objects are owned by
        this process, so they live as long as it does. The returned info counts the values of the published
        (served-dtype) weights that differ from the previous publish, or from the weights before this
        learner's first step since it was built or restored: what the rollout workers' copy will change by.
        """
        served = self._served.track(self.synced_weights())  # private copies in the served dtype: viewed, not copied
        info = self._broadcast(broadcast).publish(version, served, dtype=self.config.precision, private=True)
        return dataclasses.replace(info, changed=self._served.changed, values=self._served.values)

    def _remember_served_weights(self) -> None:
        """Before the first update since build/restore: keep the weights the rollout holds, to diff publishes
        against. Every rank joins the gather under ZeRO-3; rank 0 (the one that publishes) keeps the copy."""
        if self._served.has_baseline:
            return
        weights = self.synced_weights()
        if self._rank == 0:
            self._served.remember(weights)
        elif self.config.zero_stage == 3:
            for _ in weights:
                pass

    def open_weight_group(self, receivers: int, host: str) -> WeightGroupInfo:
        """Open the collective weight group as its rank 0 on `host` (NODE_IP: this node's IP). The rollout
        workers join it at the address returned; the group forms in the background as they do."""
        return self._broadcast("collective").open(receivers, bind_address(host))

    def send_weights(self, version: int) -> PublishInfo:
        """Broadcast the version the last collective publish staged to every rollout worker of the group."""
        return self._broadcast("collective").send(version)

    def _broadcast(self, kind: str) -> WeightBroadcast:
        from mtr.broadcast import create_broadcast

        if kind not in self._broadcasts:
            self._broadcasts[kind] = create_broadcast(
                kind,
                bucket_bytes=self.config.weight_bucket_mb << 20,
                timeout_s=self.config.weight_sync_timeout_s,
                device=str(self._device),
            )
        return self._broadcasts[kind]
