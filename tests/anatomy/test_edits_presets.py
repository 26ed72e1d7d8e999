from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage

from fetalflex.anatomy.edits import (
    Cut,
    Dilate,
    Erode,
    Insert,
    Remove,
    Rotate,
    Scale,
    Translate,
    apply_edit,
    apply_edits,
    parse_edits,
)
from fetalflex.anatomy.layout import Layout, rasterize
from fetalflex.anatomy.presets import PRESETS, apply_preset, preset
from fetalflex.anatomy.sector import sector_mask
from fetalflex.anatomy.structures import BACKGROUND, label_id
from fetalflex.anatomy.templates import sample_template
from fetalflex.errors import EditError, InvalidRequestError, PresetPlaneError


def _layout(code: str, seed: int = 0, size: int = 128) -> Layout:
    return rasterize(sample_template(code, seed), size)


@pytest.mark.parametrize("pr", PRESETS, ids=lambda p: p.name)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_preset_changes_only_the_structures_it_names(pr, seed: int) -> None:  # type: ignore[no-untyped-def]
    for code in pr.planes:
        before = _layout(code, seed)
        after = apply_preset(before, pr.name)
        changed = before.label_map != after.label_map
        assert changed.sum() > 0, f"{pr.name} on {code} changed nothing"
        named = np.array([label_id(s) for s in pr.changes])
        old_ok = np.isin(before.label_map, named)
        new_ok = np.isin(after.label_map, named)
        bad = changed & ~(old_ok | new_ok)
        assert not bad.any(), f"{pr.name} on {code} changed unnamed structures"
        assert np.all(after.label_map[~sector_mask(128)] == BACKGROUND)


def _atrial_width_mm(lay: Layout) -> float:
    m = np.isin(lay.label_map, [label_id("lateral_ventricle"), label_id("choroid_plexus")])
    return 2 * float(ndimage.distance_transform_edt(ndimage.binary_fill_holes(m)).max()) \
        * lay.mm_per_px


@pytest.mark.parametrize("seed", range(4))
def test_ventricle_presets_match_clinical_thresholds(seed: int) -> None:
    lay = _layout("TV", seed, 256)
    assert _atrial_width_mm(lay) < 10.0
    assert 10.0 <= _atrial_width_mm(apply_preset(lay, "ventriculomegaly")) <= 15.5
    assert _atrial_width_mm(apply_preset(lay, "hydrocephalus")) > 15.0


def test_microcephaly_shrinks_head() -> None:
    lay = _layout("TT", 3, 256)
    small = apply_preset(lay, "microcephaly")
    head = [label_id(s) for s in ("skull", "brain", "thalami")]
    ratio = np.isin(small.label_map, head).sum() / np.isin(lay.label_map, head).sum()
    assert 0.45 < ratio < 0.6  # 0.72 ** 2 = 0.52


def test_preset_on_wrong_plane_is_a_clear_error() -> None:
    with pytest.raises(PresetPlaneError,
                       match=r"preset: 'cleft_lip' applies to plane\(s\) LIP, not to plane TV"):
        apply_preset(_layout("TV"), "cleft_lip")
    with pytest.raises(ValueError, match="preset: 'spina_bifida' is unknown"):
        preset("spina_bifida")


def test_edit_ops_basic_behaviour() -> None:
    lay = _layout("FL", 4, 128)
    femur = label_id("femur")
    n0 = (lay.label_map == femur).sum()
    assert not (apply_edit(lay, Remove(structure="femur")).label_map == femur).any()
    grown = apply_edit(lay, Dilate(structure="femur", mm=1.5, within=("soft_tissue",)))
    assert (grown.label_map == femur).sum() > n0
    shrunk = apply_edit(lay, Erode(structure="femur", mm=0.4))
    assert (shrunk.label_map == femur).sum() < n0
    _ys, xs = np.nonzero(lay.label_map == femur)
    moved = apply_edit(lay, Translate(structures=("femur",), dx_mm=5.0))
    _ys2, xs2 = np.nonzero(moved.label_map == femur)
    assert xs2.mean() - xs.mean() == pytest.approx(5.0 / lay.mm_per_px, abs=1.5)
    rot = apply_edit(lay, Rotate(structures=("femur", "soft_tissue"), degrees=30))
    assert (rot.label_map != lay.label_map).sum() > 50
    scaled = apply_edit(lay, Scale(structures=("femur",), factor=(0.5, 1.0)))
    assert (scaled.label_map == femur).sum() == pytest.approx(n0 * 0.5, rel=0.15)
    ins = apply_edit(lay, Insert(structure="femur", center=(0.5, 0.8), axes_mm=(3, 3),
                                 within=("soft_tissue", "amniotic_fluid")))
    assert (ins.label_map == femur).sum() > n0
    cut = apply_edit(lay, Cut(structure="femur", width_mm=4.0))
    comps = ndimage.label(cut.label_map == femur)[1]
    assert comps == 2


def test_edit_errors_name_the_edit_and_reason() -> None:
    lay = _layout("FL")
    with pytest.raises(EditError, match=r"^edits\[1\]\.structure: \(remove\) 'skull' is "
                                        r"not part of plane FL") as info:
        apply_edits(lay, [Remove(structure="femur"), Remove(structure="skull")])
    assert (info.value.field, isinstance(info.value, InvalidRequestError)) == (
        "edits[1].structure", True)
    gone = apply_edit(lay, Remove(structure="femur"))
    with pytest.raises(EditError, match="^structures: 'femur' is absent from this layout"):
        apply_edit(gone, Scale(structures=("femur",), factor=2.0))
    with pytest.raises(EditError, match=r"^edits\[0\]\.toward: \(translate\) 'femur' is absent"):
        apply_edits(gone, [Translate(structures=("soft_tissue",), toward="femur")])
    with pytest.raises(EditError, match=r"^within: 'skull' is not part of plane FL"):
        apply_edit(lay, Dilate(structure="femur", mm=1.0, within=("soft_tissue", "skull")))


def test_edits_parse_from_json_with_field_errors() -> None:
    edits = parse_edits([{"op": "scale", "structures": ["femur"], "factor": [0.6, 1.0]},
                         {"op": "cut", "structure": "upper_lip", "width_frac": 0.1}])
    assert isinstance(edits[0], Scale) and isinstance(edits[1], Cut)
    with pytest.raises(ValidationError, match="factor"):
        parse_edits({"op": "scale", "structures": ["femur"], "factor": 50})
    with pytest.raises(ValidationError, match="union_tag_invalid|does not match any"):
        parse_edits({"op": "explode", "structure": "femur"})
    with pytest.raises(ValidationError, match="exactly one of width_mm or width_frac"):
        parse_edits({"op": "cut", "structure": "femur"})


@pytest.mark.parametrize("name", ["ventriculomegaly", "microcephaly", "absent_csp"])
def test_edits_keep_the_layouts_own_outside_of_the_scan(name: str) -> None:
    """An edit re-applies the input's background (our fan, an imported scan's sector or
    none at all): a layout without one does not gain our fan."""
    from fetalflex.anatomy.layout import extract

    code = preset(name).planes[0]
    full = _layout(code, 3)
    sl = extract(full)
    for outside in ("none", "custom"):
        lm = rasterize(sl.model_copy(update={"sector": "none"}), 128).label_map.copy()
        if outside == "custom":
            lm[:, :20] = BACKGROUND  # a rectangle scan's side band, not our fan
        after = apply_preset(Layout(code, lm, full.field_mm, full.ga_weeks), name)
        np.testing.assert_array_equal(after.label_map == BACKGROUND, lm == BACKGROUND)
