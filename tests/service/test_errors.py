"""The one error map: named domain errors and pydantic's are INVALID_ARGUMENT naming the
field; anything else, a plain ValueError included, is INTERNAL with an id."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
import pytest
from pydantic import ValidationError

from fetalflex.anatomy.edits import Remove, apply_edits
from fetalflex.anatomy.layout import rasterize
from fetalflex.anatomy.planes import plane
from fetalflex.anatomy.presets import preset
from fetalflex.anatomy.templates import sample_template
from fetalflex.errors import (
    EditError,
    InvalidRequestError,
    PresetPlaneError,
    UnknownPlaneError,
    UnknownPresetError,
)
from fetalflex.request import GenerationRequest
from service.errors import MAX_DETAIL, CancelledError, OverloadedError, status_for


def _raised(fn: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


DOMAIN = [
    (lambda: plane("XX"), UnknownPlaneError, "plane: 'XX' is unknown"),
    (lambda: preset("spina_bifida"), UnknownPresetError, "preset: 'spina_bifida' is unknown"),
    (lambda: preset("cleft_lip").edits("TV"), PresetPlaneError,
     "preset: 'cleft_lip' applies to plane(s) LIP"),
    (lambda: apply_edits(rasterize(sample_template("FL", 0), 64),
                         [Remove(structure="skull")]), EditError, "edits[0].structure: "),
    (lambda: rasterize(sample_template("FL", 0), 8), InvalidRequestError, "size: must be"),
]


@pytest.mark.parametrize(("fn", "kind", "start"), DOMAIN, ids=[d[2].split(":")[0] for d in DOMAIN])
def test_domain_errors_are_invalid_argument_naming_the_field(fn: Callable[[], object],
                                                             kind: type,
                                                             start: str) -> None:
    exc = _raised(fn)
    assert isinstance(exc, kind)
    st = status_for(exc)
    assert (st.code, st.reason, st.error_id) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid",
                                                 None)
    assert st.message.startswith(start), st.message


def test_validation_errors_name_the_field() -> None:
    exc = _raised(lambda: GenerationRequest(plane="TV", guidance=-1))
    assert isinstance(exc, ValidationError)
    st = status_for(exc)
    assert st.code == grpc.StatusCode.INVALID_ARGUMENT and st.message.startswith("guidance: ")


@pytest.mark.parametrize("exc", [ValueError("steps: secret-internal-detail"),
                                 KeyError("secret-internal-detail"),
                                 RuntimeError("secret-internal-detail")])
def test_anything_else_is_internal_with_an_id_logged_with_its_traceback(
        exc: Exception, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="fetalflex.service"):
        st = status_for(exc)
    assert st.code == grpc.StatusCode.INTERNAL and st.reason == "internal"
    assert st.error_id and st.message == f"internal error (id {st.error_id})"
    [record] = caplog.records
    assert st.error_id in record.getMessage() and record.exc_info is not None


def test_service_errors_and_bounded_messages() -> None:
    assert status_for(OverloadedError("busy")).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_for(CancelledError("gone")).code == grpc.StatusCode.CANCELLED
    st = status_for(InvalidRequestError("plane", "x" * 10_000))
    assert len(st.message) == MAX_DETAIL and st.message.startswith("plane: x")
