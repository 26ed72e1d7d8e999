"""The spec is validated up front with errors naming its keys; items and seeds come from the
spec alone; shards are disjoint and together are the plan."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fetalflex.dataset.plan import parse_shard, plan, shard
from fetalflex.dataset.spec import SpecError, load_spec, parse_spec
from fetalflex.request import GenerationRequest
from tests.dataset.conftest import ITEMS, SPEC


def _errors(change: dict[str, Any], drop: tuple[str, ...] = ()) -> list[str]:
    data = copy.deepcopy(SPEC)
    for k in drop:
        data.pop(k)
    for path, value in change.items():
        node = data
        *head, last = path.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    return exc.value.lines


@pytest.mark.parametrize(("change", "want"), [
    ({"planes.tv.count": -1}, "planes.TV.count: must be >= 0"),
    ({"planes.tv.presets": {"hydrocephalus": -2}},
     "planes.TV.presets.hydrocephalus: must be >= 0"),
    ({"planes.tv.presets": {"short_femur": 1}},
     "planes.TV.presets.short_femur: applies to plane(s) FL, not to plane TV"),
    ({"planes.tv.presets": {"nope": 1}}, "planes.TV.presets.nope: unknown preset"),
    ({"planes.XY": {"count": 1}}, "planes.XY: unknown plane"),
    ({"planes.tv.colour": 1}, "planes.TV.colour: unknown key"),
    ({"generation.steps": 0}, "generation.steps: must be >= 1"),
    ({"generation.seed": 3}, "generation.seed: set per item by the spec's own keys"),
    ({"generation.repaint": {"jump_length": 0}}, "generation.repaint.jump_length: must be >= 1"),
    ({"ga_weeks": [30, 20]}, "ga_weeks: the range's start 30 is above its end 20"),
    ({"ga_weeks": [12, 20]}, "ga_weeks.0: must be >= 18"),
    ({"planes.FL.ga_weeks": [24, 40]}, "planes.FL.ga_weeks.1: must be <= 32"),
    ({"formats": ["png", "tiff"]}, "formats.1:"),
    ({"planes.AC.edits": {"big_stomach": {"count": 1, "edits": [
        {"op": "scale", "structures": ["femur"], "factor": 2}]}}},
     "planes.AC.edits.big_stomach.edits.0: "),  # the edit's own reason follows
    ({"planes.AC.edits": {"Big Stomach": {"count": 1, "edits": [
        {"op": "remove", "structure": "stomach"}]}}},
     "planes.AC.edits.Big Stomach: a name of lower-case letters"),
    ({"planes": {"TV": {"count": 0}}}, "planes: no items (every count is 0)"),
    ({"contact_sheet": 1000}, "contact_sheet: must be <= 120"),
])
def test_errors_name_the_key(change: dict[str, Any], want: str) -> None:
    lines = _errors(change)
    assert any(line.startswith(want) for line in lines), lines


def test_every_error_at_once_and_required_keys() -> None:
    lines = _errors({"planes.tv.count": -1, "seed": -4})
    assert "seed: must be >= 0, got -4" in lines
    assert "planes.TV.count: must be >= 0, got -1" in lines
    assert _errors({}, drop=("planes",)) == ["planes: required"]


def test_yaml_and_json_read_alike(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "s.json").write_text(json.dumps(SPEC))
    a, b = load_spec(tmp_path / "s.yaml"), load_spec(tmp_path / "s.json")
    assert a == b and a.sha256() == b.sha256()
    (tmp_path / "bad.yaml").write_text("planes: {TV: [\n")
    with pytest.raises(SpecError, match=r"bad.yaml:\d+: not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "s.txt").write_text("{}")
    with pytest.raises(SpecError, match="a spec is a .yaml, .yml or .json file"):
        load_spec(tmp_path / "s.txt")


def test_requests_take_the_schema_defaults_for_what_the_spec_leaves_unset() -> None:
    items = plan(parse_spec({"planes": {"TV": {"count": 1}}}))
    (req,) = [it.request for it in items]
    fields = GenerationRequest.model_fields
    for k in ("steps", "guidance", "control_scale", "sampler", "repaint"):
        assert getattr(req, k) == fields[k].default, k
    spec = parse_spec(SPEC)
    assert all(it.request.steps == 1 and it.request.repaint.steps == 2 for it in plan(spec))


def test_a_spec_chooses_the_appearance() -> None:
    items = plan(parse_spec({"planes": {"TT": {"count": 1}},
                             "generation": {"appearance": "Real"}}))
    assert items[0].request.appearance == "real"
    assert plan(parse_spec({"planes": {"TT": {"count": 1}}}))[0].request.appearance is None
    with pytest.raises(SpecError, match="appearance"):
        parse_spec({"planes": {"TT": {"count": 1}}, "generation": {"appearance": "cartoon"}})


def test_items_and_seeds_come_from_the_spec_alone() -> None:
    spec = parse_spec(SPEC)
    items = plan(spec)
    assert len(items) == ITEMS == len({it.id for it in items}) == len({it.seed for it in items})
    assert plan(parse_spec(copy.deepcopy(SPEC))) == items  # same spec, same plan
    assert [it.id for it in items] == [
        "tv-normal-00000", "tv-normal-00001", "tv-hydrocephalus-00000", "ac-normal-00000",
        "ac-edit-big_stomach-00000", "fl-short_femur-00000"]
    by_id = {it.id: it for it in items}
    assert by_id["tv-hydrocephalus-00000"].pair and not by_id["fl-short_femur-00000"].pair
    assert by_id["fl-short_femur-00000"].request.ga_weeks == 24
    for it in items:
        ga = it.request.ga_weeks
        assert ga is not None and 20 <= ga <= 30 and (ga * 16).is_integer()  # float32-exact
    # Raising one count adds items and changes none of the others (ids, seeds, requests).
    more = copy.deepcopy(SPEC)
    more["planes"]["tv"]["count"] = 5
    grown = {it.id: it for it in plan(parse_spec(more))}
    assert len(grown) == ITEMS + 3 and all(grown[k] == v for k, v in by_id.items())
    # Another seed base: other seeds.
    other = plan(parse_spec({**SPEC, "seed": 6}))
    assert not {it.seed for it in other} & {it.seed for it in items}


def test_shards_are_disjoint_and_cover_the_plan() -> None:
    items = plan(parse_spec(SPEC))
    for n in (1, 2, 4, 7):
        parts = [shard(items, i, n) for i in range(n)]
        ids = [it.id for p in parts for it in p]
        assert sorted(ids) == sorted(it.id for it in items) and len(set(ids)) == len(ids)
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
