"""``fetalflex dataset run --target``: a real server on loopback makes the same data set
(pixels, label maps, manifest) as the in-process run, with requests in flight together."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fetalflex.cli import main
from fetalflex.dataset.plan import plan
from fetalflex.dataset.spec import parse_spec
from fetalflex.io.png import read_gray
from service.dataset_remote import to_proto
from tests.dataset.conftest import ITEMS, SPEC


@pytest.fixture(scope="module")
def target(tiny_weights: Path) -> Iterator[str]:
    from service.config import ServiceSettings
    from service.server import running_server

    # The in-process run's backend and threads; requests not merged into shared batches, so
    # every image comes from the same arithmetic as in-process.
    settings = ServiceSettings(port=0, metrics_port=0, health_port=0, backend="torch",
                               weights=tiny_weights, threads=2, max_concurrent=2,
                               max_queued=4, batch_across_requests=False, grace_s=2)
    with running_server(settings, start_timeout_s=120, stop_timeout_s=30) as server:
        yield f"127.0.0.1:{server.port}"


def test_service_run_equals_the_in_process_run(target: str, spec_file: Path, full_run: Path,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert main(["dataset", "run", str(spec_file), "--out", str(out), "--target", target,
                 "--concurrency", "3"]) == 0
    assert capsys.readouterr().err == ""  # stderr is no terminal here: no progress bar
    assert (out / "manifest.jsonl").read_bytes() == (full_run / "manifest.jsonl").read_bytes()
    assert (out / "pairs.jsonl").read_bytes() == (full_run / "pairs.jsonl").read_bytes()
    for name in ("images", "labels", "regions"):
        theirs = sorted(p.name for p in (full_run / name).iterdir())
        assert sorted(p.name for p in (out / name).iterdir()) == theirs
        for f in theirs:
            assert np.array_equal(read_gray(out / name / f), read_gray(full_run / name / f)), f
    s = json.loads((out / "summary.json").read_text())
    assert s["counts"]["items"] == ITEMS and s["model"]["backend"] == "torch"
    assert s["model"]["sha256"] == json.loads((full_run / "summary.json").read_text()
                                              )["model"]["sha256"]


def test_requests_the_service_cannot_carry_exactly_are_refused() -> None:
    items = plan(parse_spec({**SPEC, "generation": {"guidance": 1.3}}))
    with pytest.raises(ValueError, match=r"generation.guidance: 1.3 is not exact in the "
                                         r"service's float32 field"):
        to_proto(items[0].request)
    items = plan(parse_spec({**SPEC, "generation": {"repaint": {"feather_px": 0}}}))
    with pytest.raises(ValueError, match="generation.repaint.feather_px: 0 cannot be sent"):
        to_proto(items[0].request)
    req = to_proto(plan(parse_spec(SPEC))[0].request)
    assert req.count == 1 and req.layout.template.ga_weeks and req.return_layouts
