"""Seconds to get new weights into the rollout engine: in-place sync, both routes, against an engine restart.

Run: `python -m bench.weightsync_bench`.

- Sync through the object store (`learner.weight_sync: object_store`, the default): the learner
  (LearnerService + DeepSpeed in a Ray actor) takes a small SFT step and publishes its weights to the Ray
  object store in buckets (`PolicyLearner.publish`: bf16 bytes + `ray.put`); the driver then asks the rollout
  worker (RolloutService + vLLM in a Ray actor) to `LoadWeights` that version, which fetches it and loads it in
  place through the worker extension (a weight file in shared memory, `collective_rpc("mtr_load_file")` →
  `reload_weights`). Timed: the learner's publish seconds plus the LoadWeights round trip.
- Sync through the collective group (`learner.weight_sync: collective`): a learner started that way stages its
  weights after the step; the driver calls LoadWeights on the same rollout worker (now a member of the
  learner's gloo group; NCCL on GPUs) and SendWeights on the learner together, and the engine loads each bucket
  as it arrives. Timed: the staging seconds plus that round trip (with the no-op join check every sync
  makes). Forming the group at the first join is reported, not timed.
- Either way the training step itself is not timed. Repeated; the medians are reported.
- Restart, the alternative: the learner saves a Hugging Face checkpoint (reported, not timed), then the
  rollout worker is stopped and a new one started on that checkpoint, until its first generation returns.

Both end states are checked: after the syncs the engine's weights checksum equals the learner's, and the
restarted engine's log-probs on a fixed prompt equal the synced engine's. Results go to
bench/results/weightsync.json and weightsync.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import (
    RESULTS_DIR,
    OtherProcess,
    bench_dtype,
    cpu_window,
    describe_load,
    machine,
    median,
    ratio,
    write_results,
)

TARGET_RATIO = 60.0
TARGET_SYNC_S = 0.5
# A fixed prompt for comparing the synced engine's log-probs with the restarted one's.
PROBE_IDS = [1, 1234, 567, 89, 4321, 2, 77, 310, 45, 9]


METHODS = ("object_store", "collective")


@dataclass(frozen=True)
class SyncRun:
    version: int
    publish_s: float
    load_rpc_s: float
    engine_load_s: float
    sync_s: float
    bytes: int


@dataclass(frozen=True)
class RestartRun:
    stop_s: float
    start_s: float
    first_generate_s: float
    restart_s: float


@dataclass(frozen=True)
class Load:
    """How busy the machine was during a set of runs (see bench.common.cpu_window)."""

    own_cores: float
    other_cores: float
    load_average: float
    busiest_others: list[OtherProcess]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.syncs, args.restarts = 2, 1
    from mtr.modelprep import resolve_model_path

    model_path = str(resolve_model_path(args.model))
    with tempfile.TemporaryDirectory(prefix="weightsync-bench-") as scratch:
        document = _measure(args, model_path, Path(scratch))
        if args.lora_rank:  # alone on the machine: the full-weight services are stopped by now
            adapter = _measure_adapter(args, model_path, Path(scratch))
            adapter["ratio_restart_over_sync"] = round(ratio(document["restart_median_s"], adapter["sync_median_s"]), 1)
            adapter["ratio_full_over_adapter"] = round(
                ratio(document["methods"]["object_store"]["sync_median_s"], adapter["sync_median_s"]), 1
            )
            document["methods"][f"lora_adapter_r{args.lora_rank}"] = adapter
    document = {"machine": machine(args.dtype), "settings": _settings(args), **document}
    markdown = markdown_table(document) + "\n" + _caption(document)
    write_results(args.name, document, markdown, args.out_dir)
    print(markdown)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.weightsync_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="HF checkpoint dir, or 'default' (SmolLM2-135M-Instruct).")
    parser.add_argument("--syncs", type=int, default=5, help="Timed weight syncs (one learner step each).")
    parser.add_argument("--restarts", type=int, default=2, help="Timed engine restarts.")
    parser.add_argument(
        "--dtype",
        type=bench_dtype,
        default="auto",
        help="Weights on the wire: auto (as a run picks), bfloat16, float32.",
    )
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=16,
        help="Also time LoRA adapter-only syncs at this rank (a learner and an engine with a LoRA slot); 0: skip.",
    )
    parser.add_argument("--quick", action="store_true", help="Smoke run: 2 syncs, 1 restart.")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="weightsync", help="Results file stem (<name>.json, <name>.md).")
    return parser


def _settings(args: argparse.Namespace) -> dict:
    return {
        "model": args.model,
        "syncs": args.syncs,
        "restarts": args.restarts,
        "dtype": args.dtype,
        "lora_rank": args.lora_rank,
    }


def _run_config(args: argparse.Namespace, model_path: str, scratch: Path, lora_rank: int = 0):
    from mtr.config import load_config

    lora = ["learner.lora.enabled=true", f"learner.lora.rank={lora_rank}", f"learner.lora.alpha={2 * lora_rank}"]
    return load_config(
        overrides=[
            f"runs_dir={scratch}",
            f"model.path={model_path}",
            f"model.dtype={args.dtype}",
            f"learner.precision={args.dtype}",
            "learner.warmup_steps=0",
            *(lora if lora_rank else []),
        ]
    )


def _measure_adapter(args: argparse.Namespace, model_path: str, scratch: Path) -> dict:
    """LoRA: a learner training adapters and an engine with a LoRA slot; each sync carries the adapter alone."""
    from controller.cluster.services import Services

    with Services(_run_config(args, model_path, scratch, args.lora_rank), scratch / "logs-lora") as services:
        services.start()
        learner_actor, learner = services.learner(model_path, total_steps=args.syncs + 1)
        actor, rollout = services.rollout(model_path)
        # The first step's adapter moves off zero; it is timed like the others (the slot fills on the first load).
        result = _timed_syncs(args.syncs, lambda: _sync(learner, rollout, _train_sequence()))
        result["checksums_match"] = _checksums_match(learner, rollout)
        learner.close()
        rollout.close()
    return result


def _measure(args: argparse.Namespace, model_path: str, scratch: Path) -> dict:
    """Start a learner and a rollout worker; time object-store syncs, then (a second learner, the same engine)
    collective syncs, then the restarts; everything stops on exit."""
    from controller.cluster.services import Services
    from controller.cluster.weightsync import join_weight_group

    with Services(_run_config(args, model_path, scratch), scratch / "logs") as services:
        services.start()
        task = _one_task(services)
        start = time.perf_counter()
        learner_actor, learner = services.learner(model_path, total_steps=args.syncs + 1)
        learner_start_s = time.perf_counter() - start
        start = time.perf_counter()
        actor, rollout = services.rollout(model_path)
        engine_start_s = time.perf_counter() - start
        methods = {"object_store": _timed_syncs(args.syncs, lambda: _sync(learner, rollout, _train_sequence()))}
        methods["object_store"]["checksums_match"] = _checksums_match(learner, rollout)
        learner.close()
        services.stop_role(learner_actor)

        collective = services.config.learner.model_copy(update={"weight_sync": "collective"})
        learner_actor, learner = services.learner(model_path, args.syncs + 1, learner=collective)
        start = time.perf_counter()
        join_weight_group(learner, rollout)
        group_join_s = time.perf_counter() - start
        methods["collective"] = _timed_syncs(args.syncs, lambda: _sync_collective(learner, rollout, _train_sequence()))
        methods["collective"]["checksums_match"] = _checksums_match(learner, rollout, collective=True)
        synced_logprobs = _probe_logprobs(actor)
        start = time.perf_counter()
        checkpoint = learner.save_checkpoint(str(scratch / "checkpoint"))
        checkpoint_s = time.perf_counter() - start
        learner.close()
        services.stop_role(learner_actor)  # idle from here on: free its memory and cores for the restarts
        restarts = []
        with cpu_window() as restart_window:
            for _ in range(args.restarts):
                run, actor, rollout = _restart(services, actor, rollout, checkpoint, task)
                restarts.append(run)
                print(f"restart: {run.restart_s:.1f}s", flush=True)
        logprob_diff = max(abs(a - b) for a, b in zip(_probe_logprobs(actor), synced_logprobs, strict=True))
        rollout.close()
    restart_median = median([r.restart_s for r in restarts])
    for result in methods.values():
        result["ratio_restart_over_sync"] = round(ratio(restart_median, result["sync_median_s"]), 1)
    return {
        "learner_start_s": round(learner_start_s, 1),
        "engine_start_s": round(engine_start_s, 1),
        "group_join_s": round(group_join_s, 2),
        "checkpoint_save_s": round(checkpoint_s, 2),
        "methods": methods,
        "restarts": [asdict(r) for r in restarts],
        "restart_median_s": round(restart_median, 2),
        "target_ratio": TARGET_RATIO,
        "target_sync_s": TARGET_SYNC_S,
        "restart_logprob_max_diff": round(logprob_diff, 4),
        "restart_load": asdict(_load(restart_window)),
    }


def _timed_syncs(count: int, sync) -> dict:
    with cpu_window() as window:
        syncs = [sync() for _ in range(count)]
    print("syncs:", *(f"{s.sync_s:.3f}s" for s in syncs), flush=True)
    return {
        "syncs": [asdict(s) for s in syncs],
        "sync_median_s": round(median([s.sync_s for s in syncs]), 3),
        "sync_bytes": syncs[-1].bytes if syncs else 0,
        "load": asdict(_load(window)),
    }


def _checksums_match(learner, rollout, collective: bool = False) -> bool:
    """The engine holds exactly the learner's weights (a collective worker hashes what it received, so it
    receives one more version with the hash kept)."""
    if collective:
        held = _sync_collective(learner, rollout, _train_sequence(), verify=True).checksum
    else:
        held = rollout.status(compute_checksum=True).checksum
    return held == learner.status(True).checksum


def _one_task(services):
    from controller.stages.taskdata import load_side, with_tools

    return with_tools(load_side(services.config, "train", ["synthetic"])[0].tasks[:1], services.simulator)[0]


def _train_sequence():
    """A small fixed SFT sequence: the step only has to change the weights, its cost is not timed."""
    from mtr.v1 import learner_service_pb2 as lpb

    ids = [1 + (i * 37) % 1000 for i in range(48)]
    return lpb.TrainSequence(token_ids=ids, loss_mask=[0] * 24 + [1] * 24)


def _sync(learner, rollout, sequence) -> SyncRun:
    from mtr.v1 import learner_service_pb2 as lpb

    step = learner.train_step(lpb.OBJECTIVE_SFT, [sequence], publish_weights=True)
    start = time.perf_counter()
    loaded = rollout.load_weights(step.version)
    return _sync_run(step, loaded, time.perf_counter() - start)


def _sync_collective(learner, rollout, sequence, verify: bool = False):
    """One collective sync; with `verify`, returns the worker's reply (with its checksum) instead."""
    from controller.cluster.weightsync import collective_load
    from mtr.v1 import learner_service_pb2 as lpb

    step = learner.train_step(lpb.OBJECTIVE_SFT, [sequence], publish_weights=True)
    start = time.perf_counter()
    [loaded], _ = collective_load(step.version, learner, rollout, verify=verify)
    run = _sync_run(step, loaded, time.perf_counter() - start)
    return loaded if verify else run


def _sync_run(step, loaded, load_rpc_s: float) -> SyncRun:
    if loaded.bytes != step.publish_bytes:
        raise RuntimeError(
            f"rollout loaded {loaded.bytes} bytes of version {step.version}, learner published {step.publish_bytes}"
        )
    return SyncRun(
        version=step.version,
        publish_s=round(step.publish_seconds, 4),
        load_rpc_s=round(load_rpc_s, 4),
        engine_load_s=round(loaded.seconds, 4),
        sync_s=round(step.publish_seconds + load_rpc_s, 4),
        bytes=loaded.bytes,
    )


def _restart(services, actor, rollout, checkpoint: str, task) -> tuple[RestartRun, object, object]:
    """Stop the rollout worker, start a new one on `checkpoint`, and generate once; returns the new worker too."""
    from mtr.v1 import rollout_service_pb2 as rpb

    start = time.perf_counter()
    rollout.close()
    services.stop_role(actor)
    stopped = time.perf_counter()
    actor, rollout = services.rollout(checkpoint)
    started = time.perf_counter()
    sampling = rpb.SamplingConfig(temperature=1.0, top_p=1.0, max_tokens_per_turn=8, max_turns=1, seed=0)
    rollout.generate_groups([task], 1, sampling)
    done = time.perf_counter()
    run = RestartRun(
        stop_s=round(stopped - start, 2),
        start_s=round(started - stopped, 2),
        first_generate_s=round(done - started, 3),
        restart_s=round(done - start, 2),
    )
    return run, actor, rollout


def _probe_logprobs(actor) -> list[float]:
    import ray

    return ray.get(actor.call.remote("prompt_logprobs", PROBE_IDS))


def _load(window) -> Load:
    return Load(window.own_cores, window.other_cores, window.load_average[0], list(window.busiest_others))


def markdown_table(document: dict) -> str:
    """The ways to new weights, their median seconds and what makes them up, and restart/sync."""
    restarts, restart_s = document["restarts"], document["restart_median_s"]
    parts = {key: median([r[key] for r in restarts]) for key in ("stop_s", "start_s", "first_generate_s")}
    restart_parts = (
        f"stop {parts['stop_s']:.1f} s + start {parts['start_s']:.1f} s + first generate "
        f"{parts['first_generate_s']:.2f} s"
    )
    lines = [
        "| new weights by | median s | runs | made of (medians) | restart / this |",
        "|---|---:|---:|---|---:|",
    ]
    labels = {"object_store": ("publish", "LoadWeights"), "collective": ("stage", "SendWeights + LoadWeights")}
    for method, result in document["methods"].items():
        syncs = result["syncs"]
        first, second = labels.get(method, ("publish", "LoadWeights"))
        made_of = (
            f"{first} {median([s['publish_s'] for s in syncs]):.3f} s + {second} "
            f"{median([s['load_rpc_s'] for s in syncs]):.3f} s (of which engine load "
            f"{median([s['engine_load_s'] for s in syncs]):.3f} s); {result['sync_bytes'] / 1e6:.3g} MB"
        )
        lines.append(
            f"| in-place sync ({method.replace('_', ' ')}) | {result['sync_median_s']:.3f} | {len(syncs)} | {made_of} "
            f"| {result['ratio_restart_over_sync']:.0f}x |"
        )
    lines.append(f"| engine restart from checkpoint | {restart_s:.1f} | {len(restarts)} | {restart_parts} | 1x |")
    return "\n".join(lines) + "\n"


def _caption(document: dict) -> str:
    """Under the table: the targets, the checks, and how busy the machine was."""
    verdicts = []
    for method, result in document["methods"].items():
        sync_ok = "met" if result["sync_median_s"] <= TARGET_SYNC_S else "not met"
        ratio_ok = "met" if result["ratio_restart_over_sync"] >= TARGET_RATIO else "not met"
        verdicts.append(
            f"{method.replace('_', ' ')}: sync <= {TARGET_SYNC_S} s {sync_ok}, restart/sync >= {TARGET_RATIO:.0f}x "
            f"{ratio_ok}, engine checksum equals the learner's {result['checksums_match']}, machine: "
            f"{_describe(result['load'])}"
        )
    return (
        f"Model {document['settings']['model']} ({document['settings']['dtype']} on the wire). A sync follows an SFT "
        f"step of the learner (LearnerService, DeepSpeed, Ray actor; the step is not timed) and ends when the "
        f"rollout worker (RolloutService, vLLM, Ray actor) has loaded that version in place. Restart: stop the "
        f"worker, start one on the learner's saved checkpoint (saving took {document['checkpoint_save_s']:.1f} s, not "
        f"counted), first generation of 8 tokens; the restarted engine's log-probs are within "
        f"{document['restart_logprob_max_diff']:.4f} of the collectively synced engine's. Targets and checks: "
        f"{'; '.join(verdicts)}. Untimed: learner start {document['learner_start_s']:.0f} s, first engine start "
        f"{document['engine_start_s']:.0f} s, joining the weight group {document['group_join_s']:.2f} s. "
        f"{document['machine']['cpus']} CPU cores; during the restarts {_describe(document['restart_load'])}. "
        "`python -m bench.weightsync_bench`\n"
    )


def _describe(load: dict) -> str:
    busiest = [OtherProcess(**p) for p in load["busiest_others"]]
    return describe_load(load["own_cores"], load["other_cores"], load["load_average"], busiest)


if __name__ == "__main__":
    raise SystemExit(main())
