from __future__ import annotations

from pathlib import Path

import pytest

from export.tensorrt_export import Profile, batch_profiles, build_plan, input_shapes
from fetalflex.cli import main
from fetalflex.model.config import DenoiserConfig


def test_profiles_cover_each_batch_once() -> None:
    ps = batch_profiles((1, 8, 16, 32))
    assert ps == [Profile(1, 1, 1), Profile(2, 8, 8), Profile(9, 16, 16), Profile(17, 32, 32)]
    covered = [b for p in ps for b in range(p.min_batch, p.max_batch + 1)]
    assert covered == list(range(1, 33))


@pytest.mark.parametrize(("buckets", "msg"), [((), "at least one"), ((0, 4), ">= 1"),
                                              ((8, 4), "strictly increasing"),
                                              ((4, 4), "strictly increasing")])
def test_bad_buckets(buckets: tuple[int, ...], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        batch_profiles(buckets)


def test_input_shapes_follow_the_signature() -> None:
    cfg = DenoiserConfig(image_size=64, block_out_channels=(32, 64, 128),
                         attention_levels=(False, False, False))
    shapes = input_shapes(cfg, Profile(2, 8, 8))
    assert shapes["x_t"] == ((2, 1, 64, 64), (8, 1, 64, 64), (8, 1, 64, 64))
    assert shapes["layout"][2] == (8, cfg.num_labels, 64, 64)
    assert shapes["timestep"] == ((2,), (8,), (8,))


def test_build_needs_onnx_then_gpu_stack(tmp_path: Path) -> None:
    cfg = DenoiserConfig()
    with pytest.raises(FileNotFoundError, match="onnx:"):
        build_plan(tmp_path / "none.onnx", tmp_path / "p.plan", cfg)
    f = tmp_path / "m.onnx"
    f.write_bytes(b"not onnx")
    with pytest.raises(RuntimeError, match="tensorrt: "):
        build_plan(f, tmp_path / "p.plan", cfg)
    assert not (tmp_path / "p.plan").exists()


def test_cli_reports_missing_gpu_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    assert main(["export", "tensorrt", "--onnx", str(f), "--out", str(tmp_path / "p.plan"),
                 "--weights", str(Path(__file__).resolve().parents[2] / "fetalflex" /
                                  "weights" / "denoiser")]) == 2
    assert "tensorrt: " in capsys.readouterr().err


def test_trtexec_command_from_the_signature() -> None:
    from export.tensorrt_export import trtexec_command

    cfg = DenoiserConfig(image_size=64, block_out_channels=(32, 64, 128),
                         attention_levels=(False, False, False))
    cmd = trtexec_command("m.onnx", "m.plan", cfg, max_batch=32, opt_batch=16)
    assert cmd[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.plan"]
    assert "--fp16" in cmd
    assert "--maxShapes=x_t:32x1x64x64,timestep:32,layout:32x35x64x64,condition:32x10," \
           "control_scale:32" in cmd
    with pytest.raises(ValueError, match="opt_batch"):
        trtexec_command("m.onnx", "m.plan", cfg, max_batch=8, opt_batch=16)
