from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.triton_repository import (
    MODEL_NAMES,
    BatchingPolicy,
    config_pbtxt,
    write_repository,
)
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.signature import INPUT_NAMES, OUTPUT_NAMES

REPO = Path(__file__).resolve().parents[2] / "model_repository"
SHIPPED = Path(__file__).resolve().parents[2] / "fetalflex" / "weights" / "denoiser"


@pytest.mark.parametrize("target", sorted(MODEL_NAMES))
def test_configs_parse_into_triton_model_config(target: str) -> None:
    cfg = DenoiserConfig(image_size=64, block_out_channels=(32, 64, 128),
                         attention_levels=(False, False, False))
    policy = BatchingPolicy()  # the defaults the configs are written from
    mc = text_format.Parse(config_pbtxt(target, cfg, policy), model_config_pb2.ModelConfig())
    assert mc.name == MODEL_NAMES[target]
    assert [i.name for i in mc.input] == list(INPUT_NAMES)
    assert [o.name for o in mc.output] == list(OUTPUT_NAMES)
    assert list(mc.input[0].dims) == [1, 64, 64]
    assert list(mc.input[2].dims) == [cfg.num_labels, 64, 64]
    assert list(mc.input[1].reshape.shape) == [] and mc.input[1].HasField("reshape")
    assert mc.max_batch_size == policy.max_batch_size
    assert list(mc.dynamic_batching.preferred_batch_size) == list(policy.preferred_batch_sizes)
    assert mc.dynamic_batching.max_queue_delay_microseconds == policy.max_queue_delay_us
    assert mc.dynamic_batching.default_queue_policy.max_queue_size == policy.max_queue_size
    assert (mc.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU) == (
        target == "cpu")


def test_dynamic_batcher_can_be_switched_off() -> None:
    cfg = DenoiserConfig(image_size=32, block_out_channels=(8, 16),
                         attention_levels=(False, False), norm_num_groups=4)
    mc = text_format.Parse(config_pbtxt("cpu", cfg, BatchingPolicy(dynamic=False)),
                           model_config_pb2.ModelConfig())
    assert not mc.HasField("dynamic_batching")
    assert mc.max_batch_size == BatchingPolicy().max_batch_size
    on = text_format.Parse(config_pbtxt("cpu", cfg, BatchingPolicy()),
                           model_config_pb2.ModelConfig())
    assert on.HasField("dynamic_batching")


def test_committed_repository_has_no_diff(tmp_path: Path) -> None:
    cfg = DenoiserConfig.load(SHIPPED / "config.json")
    written = write_repository(tmp_path, cfg)
    for p in written:
        rel = p.relative_to(tmp_path)
        assert filecmp.cmp(p, REPO / rel, shallow=False), \
            f"{rel} differs: run `fetalflex export repository` and commit"
