from __future__ import annotations

import filecmp
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_api_is_reproducible(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("codegen", ROOT / "proto" / "codegen.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["codegen"] = mod
    spec.loader.exec_module(mod)
    written = mod.generate(tmp_path / "api")
    assert written
    for p in written:
        rel = p.relative_to(tmp_path / "api")
        committed = ROOT / "service" / "api" / rel
        assert committed.exists(), f"{rel} missing: run python proto/codegen.py"
        assert filecmp.cmp(p, committed, shallow=False), f"{rel} differs: run codegen"


def test_api_descriptor() -> None:
    from service.api.fetalflex.v1 import fetalflex_pb2

    svc = fetalflex_pb2.DESCRIPTOR.services_by_name["FetalFlex"]
    assert svc.full_name == "fetalflex.v1.FetalFlex"
    assert [m.name for m in svc.methods] == ["Generate", "GenerateStream", "ListPlanes",
                                             "RenderLayout"]
