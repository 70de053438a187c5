"""Bad requests to the learner's gRPC service, table-driven, against a real learner (DeepSpeed, tiny model) on
loopback: each gets its status code and a message naming what was wrong, and leaves the learner as it was
(same version, still training)."""

from __future__ import annotations

import math

import grpc
import pytest

from learner.engine import PolicyLearner
from learner.service import create_server
from mtr.config import LearnerConfig
from mtr.grpcutil import BackgroundServer
from mtr.v1 import learner_service_pb2 as pb
from mtr.v1 import learner_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION


def _seq(n=24, vocab=500, **fields) -> pb.TrainSequence:
    ids = [(7 * i) % vocab + 1 for i in range(n)]
    return pb.TrainSequence(token_ids=ids, loss_mask=[0] * (n // 2) + [1] * (n - n // 2), **fields)


def _grpo_seq(**fields) -> pb.TrainSequence:
    n = 24
    base = {"old_logprobs": [-5.0 * (i >= n // 2) for i in range(n)], "advantage": 1.0}
    return _seq(n, **{**base, **fields})


SFT, GRPO = pb.OBJECTIVE_SFT, pb.OBJECTIVE_GRPO
CASES = [
    ("TrainStep", pb.TrainStepRequest(objective=SFT), INVALID, "at least one sequence"),
    ("TrainStep", pb.TrainStepRequest(sequences=[_seq()]), INVALID, "unknown objective 0"),
    ("TrainStep", pb.TrainStepRequest(objective=7, sequences=[_seq()]), INVALID, "unknown objective 7"),
    (
        "TrainStep",
        pb.TrainStepRequest(objective=SFT, sequences=[pb.TrainSequence(token_ids=[1, 10**6], loss_mask=[0, 1])]),
        INVALID,
        "vocab",
    ),
    (
        "TrainStep",
        pb.TrainStepRequest(objective=SFT, sequences=[pb.TrainSequence(token_ids=[1, 2, 3], loss_mask=[1])]),
        INVALID,
        "loss_mask",
    ),
    (
        "TrainStep",
        pb.TrainStepRequest(objective=SFT, sequences=[pb.TrainSequence(token_ids=[1, 2, 3], loss_mask=[0, 0, 0])]),
        INVALID,
        "loss",
    ),
    ("TrainStep", pb.TrainStepRequest(objective=GRPO, sequences=[_seq()]), INVALID, "needs old_logprobs"),
    ("TrainStep", pb.TrainStepRequest(objective=GRPO, sequences=[_grpo_seq(advantage=math.nan)]), INVALID, "advantage"),
    (
        "TrainStep",
        pb.TrainStepRequest(objective=GRPO, sequences=[_grpo_seq(old_logprobs=[math.inf] * 24)]),
        INVALID,
        "not finite",
    ),
    (
        "TrainStep",
        pb.TrainStepRequest(objective=GRPO, sequences=[_grpo_seq(old_logprobs=[-1.0] * 3)]),
        INVALID,
        "old_logprobs",
    ),
    ("TrainStep", pb.TrainStepRequest(objective=GRPO, sequences=[_grpo_seq()], clip_ratio_low=1.5), INVALID, "clip"),
    ("TrainStep", pb.TrainStepRequest(objective=GRPO, sequences=[_grpo_seq()], kl_coef=-1.0), INVALID, "kl_coef"),
    ("TrainStep", pb.TrainStepRequest(objective=GRPO, sequences=[_grpo_seq()], kl_coef=math.nan), INVALID, "kl_coef"),
    ("TrainStep", pb.TrainStepRequest(objective=SFT, sequences=[_seq()], kl_coef=0.1), INVALID, "GRPO only"),
    ("TrainStep", pb.TrainStepRequest(objective=SFT, sequences=[_seq()], reset_optimizer=True), INVALID, "GRPO"),
    (
        "TrainStep",
        pb.TrainStepRequest(objective=SFT, sequences=[_seq()], publish_weights=True),
        PRECONDITION,
        "publish",
    ),
    ("SaveCheckpoint", pb.SaveCheckpointRequest(), INVALID, "no path"),
    ("SaveCheckpoint", pb.SaveCheckpointRequest(path="{NOT_A_CHECKPOINT}"), INVALID, "is not a checkpoint"),
    ("RestoreCheckpoint", pb.RestoreCheckpointRequest(), INVALID, "no path"),
    ("RestoreCheckpoint", pb.RestoreCheckpointRequest(path="/nonexistent/ckpt"), INVALID, "has no training state"),
    ("RestoreCheckpoint", pb.RestoreCheckpointRequest(path="{EMPTY_STATE}"), INVALID, "training state"),
    ("OpenWeightGroup", pb.OpenWeightGroupRequest(receivers=0), INVALID, "0 receivers"),
    ("SendWeights", pb.SendWeightsRequest(version=99), None, "SendWeights"),  # out of order: no group, no version
]


@pytest.fixture(scope="module")
def stub(tiny_model_dir, tmp_path_factory):
    config = LearnerConfig(warmup_steps=0, lr=1e-3, precision="float32")
    learner = PolicyLearner(tiny_model_dir, config, total_steps=10)
    server = BackgroundServer(lambda address: create_server(address, learner, publish=None))
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.LearnerServiceStub(channel), tmp_path_factory.mktemp("learner-bad-input")
    server.stop(grace=0.5)


@pytest.mark.parametrize(("method", "request_", "code", "words"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_a_bad_request_is_refused_by_name_and_changes_nothing(stub, method, request_, code, words):
    stub_, scratch = stub
    not_a_checkpoint = scratch / "notes"
    not_a_checkpoint.mkdir(exist_ok=True)
    (not_a_checkpoint / "keep.txt").write_text("mine")
    empty_state = scratch / "empty-ckpt" / "training_state"
    empty_state.mkdir(parents=True, exist_ok=True)
    if getattr(request_, "path", "").startswith("{"):
        request_ = type(request_)(
            path=str({"{NOT_A_CHECKPOINT}": not_a_checkpoint, "{EMPTY_STATE}": empty_state.parent}[request_.path])
        )
    before = stub_.GetStatus(pb.GetLearnerStatusRequest(), timeout=60).version
    with pytest.raises(grpc.RpcError) as error:
        getattr(stub_, method)(request_, timeout=120)
    if code is not None:
        assert error.value.code() == code, error.value.details()
    assert words.lower() in (error.value.details() or "").lower(), error.value.details()
    assert stub_.GetStatus(pb.GetLearnerStatusRequest(), timeout=60).version == before
    assert (not_a_checkpoint / "keep.txt").read_text() == "mine"
    good = pb.TrainStepRequest(objective=SFT, sequences=[_seq()])
    assert math.isfinite(stub_.TrainStep(good, timeout=120).loss)  # still trains
