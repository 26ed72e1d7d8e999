from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.anatomy.structures import NUM_LABELS
from fetalflex.cli import main
from fetalflex.io.png import read_gray, read_label_map, read_text_chunks


def test_planes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["planes"]) == 0
    out = capsys.readouterr().out
    assert "4CH  Four-chamber heart" in out and "ventricular_septal_defect" in out
    assert main(["planes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["planes"]) == len(PLANE_CODES) and len(data["structures"]) == NUM_LABELS


def test_layout(tmp_path: Path) -> None:
    out = tmp_path / "tv.png"
    assert main(["layout", "--plane", "TV", "--preset", "hydrocephalus", "--seed", "3",
                 "--size", "96", "--out", str(out), "--label-map", str(tmp_path / "l.png"),
                 "--structures", str(tmp_path / "s.json")]) == 0
    assert read_text_chunks(out)["Synthetic"] == "true"
    assert read_label_map(tmp_path / "l.png").shape == (96, 96)
    assert json.loads((tmp_path / "s.json").read_text())["plane"] == "TV"


def test_layout_preset_on_wrong_plane_exits_2(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    assert main(["layout", "--plane", "FL", "--preset", "cleft_lip",
                 "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "preset: 'cleft_lip' applies to plane(s) LIP, not to plane FL" in err
    assert not (tmp_path / "x.png").exists()


def test_phantom_and_contact_sheet(tmp_path: Path) -> None:
    assert main(["phantom", "--n", "7", "--out", str(tmp_path / "ph"), "--size", "64",
                 "--workers", "1", "--quiet"]) == 0
    lines = (tmp_path / "ph" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 7
    sheet = tmp_path / "sheet.png"
    assert main(["contact-sheet", "--out", str(sheet), "--size", "64"]) == 0
    from fetalflex.reports.contact_sheet import HEADER_PX, ROW_LABEL_PX, sheet_shape

    img = read_gray(sheet)
    assert img.shape == sheet_shape(64) == (HEADER_PX + 7 * (ROW_LABEL_PX + 128), 5 * 128)
    assert np.std(img) > 20


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from fetalflex.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["generate", "--help"])
    assert ei.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    from fetalflex.request import DEFAULT_SAMPLER, DEFAULT_STEPS

    # flags of request fields come from the schema: help, limits and default
    assert (f"--steps STEPS sampler steps; 1..1000 (default: what the weights recommend, "
            f"else the schema's {DEFAULT_STEPS})") in out
    assert "--n N samples (sample i: seed + i); 1..64 (default: 1)" in out
    assert f"else the schema's {DEFAULT_SAMPLER})" in out
    assert "(label maps: PNG) (default: png)" in out  # a help text keeps its default appended
    assert "else 100)" in out  # --field-mm: the PNG's own field, else the default


def test_load_exits_nonzero_when_requests_fail(capsys: pytest.CaptureFixture[str]) -> None:
    """No server on the port: every request fails -> exit 1, JSON without NaN."""
    import json

    from export.triton_server import free_port
    from fetalflex.cli import main

    code = main(["load", "--target", f"127.0.0.1:{free_port()}", "--concurrency", "1",
                 "--requests", "2", "--steps", "1"])
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert code == 1 and res["codes"].get("OK", 0) == 0 and res["p50_s"] is None
    assert "2 of 2 requests failed" in captured.err


def test_bad_flags_fail_fast_with_field_reason_lines(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Validated before the model loads (no backend is built), one line per field."""
    import fetalflex.generate_cli as gen

    def no_backend(args: object) -> None:
        raise AssertionError("the model was loaded before the request was validated")

    monkeypatch.setattr(gen, "backend_from_args", no_backend)
    code = main(["generate", "--plane", "tv", "--steps", "0", "--guidance", "50",
                 "--out", "unused"])
    err = capsys.readouterr().err
    assert code == 2
    assert "fetalflex generate: error: steps: must be >= 1, got 0" in err
    assert "guidance: must be <= 20.0, got 50.0" in err
    assert "pydantic.dev" not in err and "validation error" not in err


def test_gallery_refuses_a_non_empty_out_unless_overwrite(
        tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As generate: checked before the model loads; --overwrite (what `make demo` passes)
    replaces each gallery request's earlier files and leaves other files alone."""
    import fetalflex.generate_cli as gen

    out = tmp_path / "g"
    run = ["gallery", "--steps", "1", "--weights", str(tiny_weights), "--backend", "torch",
           "--out", str(out), "--quiet"]
    assert main(run) == 0
    first = sorted(p.name for p in out.iterdir())
    assert "gallery.png" in first and "normal_tv.json" in first
    # an earlier request of a gallery prefix with a file today's gallery does not write
    side = json.loads((out / "normal_tv.json").read_text())
    side["samples"].append({"image": "normal_tv_001.png"})
    (out / "normal_tv.json").write_text(json.dumps(side))
    (out / "normal_tv_001.png").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    real_backend = gen.backend_from_args

    def no_backend(args: object) -> None:
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(gen, "backend_from_args", no_backend)
    assert main(run) == 2
    err = capsys.readouterr().err
    assert f"fetalflex gallery: error: out: {out} is not empty" in err and "--overwrite" in err
    assert (out / "normal_tv_001.png").read_bytes() == b"stale"  # untouched
    monkeypatch.setattr(gen, "backend_from_args", real_backend)
    assert main([*run, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*first, "notes.txt"])


def test_request_flags_are_the_schema() -> None:
    """generate's and client's request flags are derived from GenerationRequest: the
    defaults parsed from no flags are the schema's (the sampling a set of weights may
    recommend stays unset: Engine.resolve fills it), and its limits come with them."""
    from fetalflex.cli import CLIENT_FIELDS, GENERATE_FIELDS, SAMPLING_FIELDS, build_parser
    from fetalflex.request import GenerationRequest
    from fetalflex.request_flags import WEIGHTS_DEFAULTED, dest_of, sampling_given

    ap = build_parser()
    gen = ap.parse_args(["generate", "--plane", "tv", "--out", "x"])
    cli = ap.parse_args(["client", "generate"])
    schema = GenerationRequest.model_fields
    for args, names in ((gen, (*GENERATE_FIELDS, *SAMPLING_FIELDS)),
                        (cli, (*CLIENT_FIELDS, *SAMPLING_FIELDS))):
        for name in names:
            want = None if name in WEIGHTS_DEFAULTED else schema[name].default
            assert getattr(args, dest_of(name)) == want, name
        assert sampling_given(args) == {}
    assert ap.parse_args(["generate", "--plane", "TV", "--out", "x", "--appearance", "REAL",
                          "--sampler", "DDIM"]).sampler == "ddim"
