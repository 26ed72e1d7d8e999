"""The one codegen script: proto/ -> service/api/ (Python messages, stubs, type stubs).

Run ``python proto/codegen.py`` after editing a .proto. The output is deterministic for a
given grpcio-tools version (pinned in pyproject's dev extra); a test regenerates it into a
temporary folder and fails on any difference with what is committed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ("fetalflex/v1/fetalflex.proto",)
PACKAGE_PREFIX = "service.api"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    for proto in PROTOS:
        rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}",
                          f"--python_out={out}", f"--grpc_python_out={out}",
                          f"--pyi_out={out}", proto])
        if rc != 0:
            raise SystemExit(f"protoc failed for {proto} ({rc})")
    written = []
    for p in sorted(out.rglob("*.py*")):
        text = p.read_text()
        # The API package is fetalflex.v1, the library is `fetalflex`: generated imports
        # must point into service.api, not at the library package.
        text = re.sub(r"^from fetalflex\.v1 import", f"from {PACKAGE_PREFIX}.fetalflex.v1 import",
                      text, flags=re.M)
        p.write_text(text)
        written.append(p)
    for d in {p.parent for p in written} | {out / "fetalflex"}:
        init = d / "__init__.py"
        if not init.exists():
            init.write_text("")
            written.append(init)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "service" / "api"
    for p in generate(target):
        print(p.relative_to(target.parent) if target.parent in p.parents else p)
