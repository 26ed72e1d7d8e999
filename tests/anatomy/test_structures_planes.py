from __future__ import annotations

import json

import pytest

from fetalflex.anatomy.planes import PLANE_CODES, PLANES, plane, plane_index
from fetalflex.anatomy.structures import (
    NUM_LABELS,
    STRUCTURES,
    label_id,
    structure,
)
from fetalflex.anatomy.vocabulary import VOCABULARY_PATH, vocabulary_json
from fetalflex.errors import UnknownPlaneError, UnknownStructureError

# Label ids are a public contract (model channels, API, user label maps): pin them.
PINNED = {"background": 0, "maternal_tissue": 1, "amniotic_fluid": 2, "skull": 3,
          "lateral_ventricle": 7, "cisterna_magna": 13, "stomach": 16, "spine": 18,
          "septum": 27, "femur": 30, "nostrils": 34}


@pytest.mark.parametrize(("name", "lid"), sorted(PINNED.items()))
def test_label_ids_are_stable(name: str, lid: int) -> None:
    assert label_id(name) == lid


def test_table_is_dense_and_unique() -> None:
    shipped = json.loads(VOCABULARY_PATH.read_text())["structures"]  # what other languages read
    assert [(s["id"], s["name"]) for s in shipped] == [(s.id, s.name) for s in STRUCTURES]
    assert [s.id for s in STRUCTURES] == list(range(NUM_LABELS))
    assert len({s.name for s in STRUCTURES}) == NUM_LABELS


def test_planes_are_the_design_set() -> None:
    assert PLANE_CODES == ("TV", "TT", "TC", "AC", "4CH", "FL", "LIP")
    assert [plane_index(c) for c in PLANE_CODES] == list(range(7))


DESIGN_STRUCTURES = {
    "TV": {"skull", "brain", "midline_falx", "cavum_septi_pellucidi", "lateral_ventricle",
           "choroid_plexus"},
    "TT": {"skull", "brain", "midline_falx", "cavum_septi_pellucidi", "thalami",
           "third_ventricle"},
    "TC": {"skull", "brain", "cavum_septi_pellucidi", "thalami", "cerebellar_hemispheres",
           "vermis", "cisterna_magna"},
    "AC": {"abdominal_wall", "abdomen", "stomach", "umbilical_vein", "spine", "aorta"},
    "4CH": {"thorax", "lungs", "heart", "left_ventricle", "right_ventricle", "left_atrium",
            "right_atrium", "septum", "descending_aorta", "spine"},
    "FL": {"soft_tissue", "femur"},
    "LIP": {"upper_lip", "lower_lip", "nose", "nostrils"},
}


@pytest.mark.parametrize("p", PLANES, ids=lambda p: p.code)
def test_plane_structures_match_design(p) -> None:  # type: ignore[no-untyped-def]
    assert set(p.structures) == DESIGN_STRUCTURES[p.code] | {"maternal_tissue", "amniotic_fluid"}


def test_unknown_names_give_clear_errors() -> None:
    with pytest.raises(UnknownStructureError, match="'lateral_ventricles' is unknown"):
        structure("lateral_ventricles")
    with pytest.raises(UnknownStructureError, match="label id 99"):
        structure(99)
    with pytest.raises(UnknownPlaneError, match="^plane: 'XX' is unknown; known planes: TV") as e:
        plane("XX")
    assert e.value.field == "plane"
    with pytest.raises(ValueError, match="not part of plane FL"):
        plane("FL").z_order("skull")


def test_vocabulary_json_is_regenerated_without_diff() -> None:
    committed = VOCABULARY_PATH.read_text()
    assert committed == vocabulary_json(), "run `make vocabulary` and commit the result"
    data = json.loads(committed)
    assert {s["name"]: s["id"] for s in data["structures"]}["femur"] == 30
