"""Every benchmark runs on a tiny model and writes its JSON and plot (figures, no timings
asserted: these machines are noisy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.io.png import read_text_chunks


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _doc(path: Path) -> dict:  # type: ignore[type-arg]
    doc = json.loads(path.read_text())
    assert doc["machine"]["logical_cpus"] >= 1 and "torch" in doc["machine"]["versions"]
    return doc


def test_denoiser_latency(tiny_weights: Path, tmp_path: Path) -> None:
    from bench.denoiser_latency import bench_denoiser

    rows = bench_denoiser(tiny_weights, tmp_path, batches=(1, 4), reps=2)
    assert [r["batch"] for r in rows] == [1, 4]
    for r in rows:
        assert r["torch_ms"] > 0 and r["onnxruntime_ms"] > 0
        assert r["speedup_ort_over_torch"] == pytest.approx(
            r["torch_ms"] / r["onnxruntime_ms"], rel=0.05)
    doc = _doc(tmp_path / "denoiser_latency.json")
    assert doc["flops_per_row"] > 0 and doc["rows"] == rows
    assert read_text_chunks(tmp_path / "denoiser_latency.png")["Software"].startswith("fetalflex")


def test_flop_count_scales_with_batch(tiny_weights: Path) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from bench.denoiser_latency import flops_per_row
    from fetalflex.backends.onnx_model import example_inputs
    from fetalflex.model.denoiser import FetalFlexDenoiser

    m = FetalFlexDenoiser.load(tiny_weights)
    one = flops_per_row(m)
    with FlopCounterMode(display=False) as fc:
        m(*example_inputs(m.config, 3))
    assert fc.get_total_flops() == 3 * one


def test_gpu_bench_on_cpu_reports_what_it_could_not_run(tiny_weights: Path,
                                                        tmp_path: Path) -> None:
    from bench.gpu import bench_gpu

    rows = bench_gpu(tiny_weights, tmp_path, batches=(1, 2), reps=1, device="cpu",
                     variants=("eager-fp32", "ort-cpu", "cuda-graph-fp16", "tensorrt"))
    assert {r["variant"] for r in rows} == {"eager-fp32", "ort-cpu"}
    doc = _doc(tmp_path / "gpu.json")
    assert set(doc["skipped"]) == {"cuda-graph-fp16", "tensorrt"}
    assert "CUDA" in doc["skipped"]["cuda-graph-fp16"]
    assert doc["measured_peak_tflops"]["fp32"] > 0
    assert all(r["fraction_of_measured_peak"] > 0 for r in rows)
    assert (tmp_path / "gpu.png").is_file()


def test_diffusers_repaint_baseline_keeps_outside_and_counts_calls(tiny_weights: Path) -> None:
    from diffusers import RePaintScheduler

    from bench.repaint_baseline import diffusers_repaint
    from fetalflex.anatomy.presets import apply_preset
    from fetalflex.backends.backends import load_backend
    from fetalflex.generation import Engine, GenerationRequest
    from fetalflex.sampling.repaint import edit_region

    eng = Engine(load_backend("torch", tiny_weights))
    s = eng.run(GenerationRequest(plane="TV", steps=3, seed=1)).samples[0]
    abn = apply_preset(s.layout, "hydrocephalus")
    region = edit_region(s.layout.label_map, abn.label_map, 3.0)
    sched = {"num_inference_steps": 10, "jump_length": 5, "jump_n_sample": 2}
    twin, calls = diffusers_repaint(eng, s.image, abn, region, seed=5, **sched)
    sch = RePaintScheduler()
    sch.set_timesteps(**sched)
    ts = sch.timesteps.tolist()
    expected = sum(1 for a, b in zip([ts[0] + 1, *ts[:-1]], ts, strict=True) if b < a)
    assert calls == expected
    assert np.array_equal(twin[~region], s.image[~region])
    assert (twin[region] != s.image[region]).mean() > 0.3


def test_sampler_cost(tiny_weights: Path, tiny_eval_data: Path, tiny_data: Path,
                      tmp_path: Path) -> None:
    from bench.sampler_cost import bench_sampler_cost
    from fetalflex.evaluation.segmenter import train_segmenter

    seg = train_segmenter(tiny_data, tmp_path / "seg", steps=2, batch_size=4, progress=False)
    rows = bench_sampler_cost(
        tiny_weights, seg, tiny_eval_data, tmp_path, per_plane=1, baseline_n=1,
        repaint_settings=((4, 2, 1), (4, 2, 2)),
        baseline_schedule={"num_inference_steps": 6, "jump_length": 3, "jump_n_sample": 2},
        notebook_steps=3)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("generate") == 9 and kinds.count("baseline") == 2
    from fetalflex.request import DEFAULT_SAMPLER, DEFAULT_STEPS

    default = next(r for r in rows if r["case"].endswith("(default)"))
    assert default["case"].startswith(f"{DEFAULT_SAMPLER}-{DEFAULT_STEPS}+cfg")
    assert default["calls_per_image"] == DEFAULT_STEPS
    twins = [r for r in rows if r["case"].startswith("repaint")]
    assert [r["calls_per_image"] for r in twins] == [4.0, 6.0]
    assert all(r["outside_region_bit_identical"] for r in twins)
    ddim5 = next(r for r in rows if r["case"] == "ddim-5+cfg")
    assert ddim5["calls_per_image"] == 5.0
    assert "speedup_vs_diffusers" in rows[-1]
    assert _doc(tmp_path / "sampler_cost.json")["rows"] == rows
    assert (tmp_path / "sampler_cost.png").is_file()


def test_grpc_overhead(tiny_weights: Path, tmp_path: Path) -> None:
    from bench.serving import bench_grpc

    rows = bench_grpc(tiny_weights, tmp_path, reps=2, steps=2)
    assert rows[0]["grpc_median_s"] > 0 and rows[0]["in_process_median_s"] > 0
    assert (tmp_path / "grpc_overhead.json").is_file()


def test_end_to_end_embedded_and_triton(tiny_weights: Path, tmp_path: Path) -> None:
    from bench.serving import bench_end_to_end
    from tests.conftest import triton_env_path

    env = triton_env_path()
    rows = bench_end_to_end(tiny_weights, tmp_path, concurrencies=(1, 3), min_requests=3,
                            steps=2, setups=("embedded", "embedded+batching",
                                             "triton+batching"), triton_env=env)
    assert [(r["setup"], r["concurrency"]) for r in rows] == [
        ("embedded", 1), ("embedded", 3), ("embedded+batching", 1), ("embedded+batching", 3),
        ("triton+batching", 1), ("triton+batching", 3)]
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in rows)
    assert all(r["p95_s"] >= r["p50_s"] for r in rows)
    # each row against the first set-up at the same concurrency (not the first row)
    for r in rows:
        ref = next(x for x in rows if x["setup"] == "embedded"
                   and x["concurrency"] == r["concurrency"])
        assert r["throughput_vs_embedded"] == round(r["images_per_s"] / ref["images_per_s"], 2)
    assert (tmp_path / "end_to_end.png").is_file()


def test_main_job_compares_guidance_side_by_side(tiny_weights: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.main_job import bench_main_job

    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path / "cache"))
    rows = bench_main_job([tiny_weights], tmp_path, guidances=(1.0, 2.0), reps=1,
                          planes=("TV", "FL"))
    by_g = {r["guidance"]: r for r in rows}
    # One batched call per step either way (guidance 1 drops the unconditional rows).
    assert by_g[1.0]["denoiser_calls"] == by_g[2.0]["denoiser_calls"] == by_g[2.0]["steps"]
    assert all(r["s_per_image"] > 0 for r in rows)
    # speed relative to the first case: > 1 is faster (its time over this row's time)
    assert rows[1]["vs_first"] == pytest.approx(rows[0]["s_per_image"] / rows[1]["s_per_image"])
    assert json.loads((tmp_path / "main_job.json").read_text())["rows"][1]["guidance"] == 2.0


def test_main_job_precisions_steps_and_notebook_baseline(tiny_weights: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from bench.main_job import NOTEBOOK_STEPS, bench_main_job

    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path / "cache"))
    rows = bench_main_job([tiny_weights], tmp_path, reps=1, planes=("FL",),
                          precisions=("fp32", "int8"), steps=(2, 3), baseline=True)
    cases = [(r["backend"], r["precision"], r["steps"]) for r in rows]
    assert cases == [("embedded", "fp32", 2), ("embedded", "fp32", 3), ("embedded", "int8", 2),
                     ("embedded", "int8", 3), ("torch", "fp32", NOTEBOOK_STEPS)]
    assert [r["denoiser_calls"] for r in rows] == [2, 3, 2, 3, NOTEBOOK_STEPS]
    nb = rows[-1]["s_per_image"]
    for r in rows:
        assert r["vs_notebook"] == pytest.approx(nb / r["s_per_image"])


def test_main_job_runs_bf16_on_the_backend_that_has_it(tiny_weights: Path, tmp_path: Path
                                                      ) -> None:
    """bf16 is torch under autocast (ONNX Runtime's CPU provider has none): the bench
    runs each precision on the first backend of PRECISION_BACKENDS instead of refusing."""
    from bench.main_job import bench_main_job

    rows = bench_main_job([tiny_weights], tmp_path, reps=1, planes=("FL",),
                          precisions=("fp32", "bf16"), steps=(2,))
    assert [(r["backend"], r["precision"]) for r in rows] == [("embedded", "fp32"),
                                                              ("torch", "bf16")]


def test_end_to_end_int8_setup_serves_the_int8_graph(tiny_weights: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.serving import bench_end_to_end

    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path / "cache"))
    rows = bench_end_to_end(tiny_weights, tmp_path, concurrencies=(2,), min_requests=2,
                            steps=2, setups=("embedded", "embedded-int8+batching"))
    assert [(r["setup"], r["precision"]) for r in rows] == [
        ("embedded", "fp32"), ("embedded-int8+batching", "int8")]
    assert all(r["errors"] == 0 for r in rows)


def test_step_profile_splits_a_served_request(tiny_weights: Path, tmp_path: Path) -> None:
    from bench.step_profile import bench_step_profile

    rows = bench_step_profile(tiny_weights, tmp_path, reps=2, top=5)
    (r,) = rows
    assert r["denoiser_calls"] == r["steps"]
    assert 0 < r["denoiser_s"] < r["server_s"] <= r["client_s"]
    assert r["orchestrator_s"] == pytest.approx(r["server_s"] - r["denoiser_s"], abs=2e-4)
    doc = json.loads((tmp_path / "step_profile.json").read_text())
    assert len(doc["profiles"]["fp32"]) == 5


def test_end_to_end_torch_setup_serves_the_module_on_its_device(tiny_weights: Path,
                                                                 tmp_path: Path) -> None:
    """The GPU serving path's code on the CPU; its GPU set-up is refused without a GPU
    (never measured on the CPU under the GPU's name)."""
    from bench.serving import bench_end_to_end

    rows = bench_end_to_end(tiny_weights, tmp_path, concurrencies=(2,), min_requests=2,
                            steps=2, setups=("torch+batching",))
    (r,) = rows
    assert r["device"] == "cpu" and r["errors"] == 0 and r["images_per_s"] > 0
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device: cuda was asked for"):
            bench_end_to_end(tiny_weights, tmp_path, concurrencies=(1,), min_requests=1,
                             steps=1, setups=("torch-cuda",))


def test_end_to_end_runs_a_student_beside_its_teacher_at_their_own_sampling(
        tiny_weights: Path, tmp_path: Path) -> None:
    """Requests leave the sampling unset: each server's weights say how many rows."""
    from bench.serving import bench_end_to_end
    from fetalflex.model.config import DenoiserConfig, SamplingDefaults
    from fetalflex.model.denoiser import FetalFlexDenoiser
    from fetalflex.training.init_weights import load_initial
    from tests.conftest import TINY_MODEL

    cfg = DenoiserConfig(**TINY_MODEL, sampling=SamplingDefaults(steps=2, sampler="ddim",
                                                                 guidance=1.0))
    m = FetalFlexDenoiser(cfg)
    load_initial(m, tiny_weights)
    student = tmp_path / "student"
    m.save(student)
    rows = bench_end_to_end(tiny_weights, tmp_path, concurrencies=(2,), min_requests=2,
                            setups=("embedded",), student=student)
    assert [(r["setup"], r["rows_per_image"]) for r in rows] == [
        ("embedded", 12), ("embedded [student]", 2)]
    assert all(r["errors"] == 0 for r in rows)
    assert rows[1]["throughput_vs_embedded"] > 0
