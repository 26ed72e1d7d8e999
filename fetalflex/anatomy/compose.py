"""Anatomy composition, defined once: what a generation's layouts are.

``plane`` + (a given layout | a template drawn from ``seed``) + ``preset`` + ``edits`` at
``size`` pixels -> the normal layout and, when there are edits, the abnormal one. The
Engine (per sample), the gRPC ``RenderLayout`` and ``Generate`` translation, and the CLI
compose through here; so do the inputs they read (edit JSON, label maps, structure lists).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fetalflex.anatomy.edits import EDIT_TYPES, Edit, apply_edits, parse_edits
from fetalflex.anatomy.layout import (
    DEFAULT_FIELD_MM,
    LabelMap,
    Layout,
    StructureList,
    extract,
    rasterize,
)
from fetalflex.anatomy.presets import preset as get_preset
from fetalflex.anatomy.templates import sample_template
from fetalflex.errors import InvalidRequestError

# Edit JSON is bounded before it is parsed (one --edit value or one API Edit message).
MAX_EDITS = 32  # after parsing (one JSON text may hold a list)
MAX_EDIT_JSON = 16 * 1024  # characters of one edit JSON text
MAX_JSON_DEPTH = 8  # edits are flat objects; deeper nesting is refused before validation


@dataclass(frozen=True)
class Anatomy:
    """A sample's layouts: the normal one, and the edited one when there are edits."""

    normal: Layout
    abnormal: Layout | None = None


def edit_list(plane: str, preset: str | None, edits: Sequence[Edit]) -> list[Edit]:
    """The preset's edits for ``plane`` (when given), then ``edits``."""
    out: list[Edit] = list(get_preset(preset).edits(plane)) if preset is not None else []
    return out + list(edits)


def normal_layout(plane: str, size: int, *, layout: Layout | None = None, seed: int = 0,
                  ga_weeks: float | None = None) -> Layout:
    """The given layout (checked against ``plane`` and ``size``), or the plane's template
    drawn from ``seed`` (at ``ga_weeks``, or a GA drawn from the seed)."""
    if layout is None:
        return rasterize(sample_template(plane, seed, ga_weeks), size)
    if layout.size != size:
        raise InvalidRequestError("layout", f"size {layout.size} does not match the image "
                                            f"size {size}")
    if layout.plane != plane:
        raise InvalidRequestError("layout", f"plane {layout.plane} differs from the "
                                            f"request's plane {plane}")
    return layout


def compose(plane: str, size: int, *, layout: Layout | None = None, seed: int = 0,
            ga_weeks: float | None = None, preset: str | None = None,
            edits: Sequence[Edit] = (), bound: Callable[[Layout], None] | None = None,
            ) -> Anatomy:
    """The normal layout (``normal_layout``) and, when the preset and edits make a
    non-empty list, the layout they edit it into. ``bound`` sees the normal layout before
    any edit runs (the service refuses maps too costly to edit)."""
    normal = normal_layout(plane, size, layout=layout, seed=seed, ga_weeks=ga_weeks)
    todo = edit_list(plane, preset, edits)
    if bound is not None:
        bound(normal)
    return Anatomy(normal, apply_edits(normal, todo) if todo else None)


def render_anatomy(plane: str, size: int, *, layout: Layout | None = None, seed: int = 0,
                   ga_weeks: float | None = None, preset: str | None = None,
                   edits: Sequence[Edit] = (), bound: Callable[[Layout], None] | None = None,
                   ) -> tuple[Layout, StructureList]:
    """What the service's RenderLayout and ``fetalflex layout`` answer: the layout a request
    describes (template or given), edited by its preset and edits, and its shapes as a
    structure list (``extract``). ``bound`` sees the normal layout before any edit and the
    result before the shapes are extracted (the service refuses maps too costly to edit or
    to extract)."""
    anatomy = compose(plane, size, layout=layout, seed=seed, ga_weeks=ga_weeks,
                      preset=preset, edits=edits, bound=bound)
    out = anatomy.abnormal or anatomy.normal
    if bound is not None and anatomy.abnormal is not None:
        bound(out)
    return out, extract(out)


# ---------------------------------------------------------------- inputs


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        stack.extend((c, d + 1) for c in children)
    return deepest


def edit_json(field: str, text: str) -> Any:
    """Edit JSON text -> data, bounded in size and nesting before anything else is done
    (errors name ``field``); ``parse_edits`` validates the data."""
    if len(text) > MAX_EDIT_JSON:
        raise InvalidRequestError(field, f"at most {MAX_EDIT_JSON} characters, got "
                                         f"{len(text)}")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(field, f"not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise InvalidRequestError(field, f"nested more than {MAX_JSON_DEPTH} deep") from None
    except ValueError as exc:
        raise InvalidRequestError(field, f"not valid JSON ({exc})") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise InvalidRequestError(field, f"nested more than {MAX_JSON_DEPTH} deep")
    return data


def edit_error(field: str, exc: Any, listed: bool) -> InvalidRequestError:
    """One edit's validation error, named as the user wrote it: an unknown key first (with
    the closest known one), else the first error; the path without pydantic's union tag."""
    import difflib


    errs = exc.errors()
    err = next((e for e in errs if e["type"] == "extra_forbidden"), errs[0])
    loc = list(err["loc"])
    index = loc.pop(0) if listed and loc and isinstance(loc[0], int) else None
    if not listed and loc and isinstance(loc[0], int):
        loc.pop(0)
    op = loc.pop(0) if loc and loc[0] in EDIT_TYPES else None
    where = field + (f"[{index}]" if index is not None else "")
    if err["type"] == "extra_forbidden" and loc:
        key = str(loc[-1])
        known = sorted(EDIT_TYPES[str(op)].model_fields) if op else []
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else (
            f" (known keys: {', '.join(known)})" if known else "")
        return InvalidRequestError(where, f"unknown key {key!r} in a {op!r} edit{hint}")
    path = ".".join(str(x) for x in loc)
    return InvalidRequestError(f"{where}.{path}" if path else where,
                               str(err["msg"]).removeprefix("Value error, "))


def edits_from_json(field: str, texts: Sequence[str], text_key: str = "") -> list[Edit]:
    """Edit JSON texts (each one object or a list) -> edits. Errors name ``field[i]`` (and
    ``.text_key`` for JSON that does not parse) or, for a bad edit, ``field[i].key``."""
    from pydantic import ValidationError

    out: list[Edit] = []
    for i, text in enumerate(texts):
        data = edit_json(f"{field}[{i}]" + (f".{text_key}" if text_key else ""), text)
        try:
            out += parse_edits(data)
        except ValidationError as exc:
            raise edit_error(f"{field}[{i}]", exc, listed=isinstance(data, list)) from None
        if len(out) > MAX_EDITS:
            raise InvalidRequestError(field, f"at most {MAX_EDITS} edits in all")
    return out


def label_map_layout(field: str, label_map: LabelMap, plane: str, size: int,
                     field_mm: float = DEFAULT_FIELD_MM, ga_weeks: float | None = None
                     ) -> Layout:
    """A label map of ``plane`` at ``size`` pixels as a layout (errors name ``field``)."""
    if label_map.shape != (size, size):
        raise InvalidRequestError(field, f"is {label_map.shape[1]}x{label_map.shape[0]}, "
                                         f"needs {size}x{size}")
    try:
        return Layout(plane, label_map, field_mm, ga_weeks)
    except InvalidRequestError as exc:
        raise InvalidRequestError(field, exc.reason) from None


def structures_layout(field: str, structures: StructureList, plane: str, size: int
                      ) -> Layout:
    """A structure list of ``plane``, rasterized at ``size`` (errors name ``field``)."""
    if structures.plane != plane:
        raise InvalidRequestError(field, f"a {structures.plane} layout, not {plane}")
    return rasterize(structures, size)
