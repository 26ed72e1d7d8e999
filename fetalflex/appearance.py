"""Image appearances a denoiser can be asked for: the one table of their names.

* ``phantom``: the look of our B-mode phantom simulator (full label maps, every structure).
* ``real``: the look of real clinical scans (HC18 and FETAL_PLANES_DB, learned from partial
  anatomy: the head outline or only the plane; see the model card for what this means).

A denoiser whose config lists appearances takes the appearance as a one-hot part of its
condition vector; one that lists none (v1-v3) draws phantoms only.
"""

from __future__ import annotations

from typing import Final, Literal

from fetalflex.errors import InvalidRequestError

Appearance = Literal["phantom", "real"]
APPEARANCES: Final[tuple[Appearance, ...]] = ("phantom", "real")
# What a request gets when it does not say: real where the weights serve it, else phantom.
PREFERRED: Final[tuple[Appearance, ...]] = ("real", "phantom")


def appearance_index(name: str, served: tuple[str, ...]) -> int:
    """The position of ``name`` in a model's appearances, or a named error listing them."""
    key = name.strip().lower()
    if key in served:
        return served.index(key)
    if not served and key == "phantom":
        return -1  # a model without appearance conditioning draws phantoms
    offered = ", ".join(served) or "phantom"
    raise InvalidRequestError("appearance", f"{name!r} is not served by these weights "
                              f"(they serve: {offered}); choose one of those or load weights "
                              f"trained for it (--weights)")


def default_appearance(served: tuple[str, ...]) -> Appearance:
    for a in PREFERRED:
        if a in served:
            return a
    return "phantom"
