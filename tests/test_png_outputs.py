"""Every PNG the project writes says it is synthetic (``Synthetic: true``) and, on disk, is
readable by others (mode 0644, atomic writes included)."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import numpy as np
from PIL import Image

from fetalflex.io.atomic import FILE_MODE
from fetalflex.io.png import read_text_chunks, write_image, write_label_map


def _chunks(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as im:
        return dict(getattr(im, "text", {}))


def test_files_written_by_the_png_writers_and_figures(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from fetalflex.reports.figures import save_figure

    write_image(tmp_path / "i.png", np.zeros((8, 8), np.uint8))
    write_label_map(tmp_path / "l.png", np.ones((8, 8), np.uint8))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "f.png", "a figure")
    assert FILE_MODE == 0o644
    for name in ("i.png", "l.png", "f.png"):
        assert read_text_chunks(tmp_path / name)["Synthetic"] == "true", name
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == FILE_MODE, name
    assert "label id" in read_text_chunks(tmp_path / "l.png")["Content"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_the_service_encodings() -> None:
    from service.outputs import label_png_bytes, png_bytes
    from service.translate import _colour_png

    lab = np.ones((8, 8), np.uint8)
    for data in (png_bytes(np.zeros((8, 8), np.uint8)), label_png_bytes(lab), _colour_png(lab)):
        assert _chunks(data)["Synthetic"] == "true"
    with Image.open(io.BytesIO(label_png_bytes(lab))) as im:  # ids unchanged by metadata
        assert np.array_equal(np.asarray(im), lab)


def test_phantom_sets_layouts_and_the_contact_sheet(tmp_path: Path) -> None:
    from fetalflex.cli import main
    from fetalflex.data.phantom_set import write_phantom_set

    write_phantom_set(tmp_path / "ph", 2, size=32, seed=1, workers=1)
    assert main(["layout", "--plane", "TV", "--size", "32", "--out", str(tmp_path / "c.png"),
                 "--label-map", str(tmp_path / "l.png")]) == 0
    assert main(["contact-sheet", "--out", str(tmp_path / "cs.png"), "--size", "32"]) == 0
    pngs = sorted(tmp_path.rglob("*.png"))
    assert len(pngs) == 2 * 2 + 3
    for p in pngs:
        assert read_text_chunks(p).get("Synthetic") == "true", p
        assert stat.S_IMODE(p.stat().st_mode) == FILE_MODE, p
