"""The split of a training set into its train and validation sides, by scene (or by strip of a scene): no scene is
on both sides.

It is deterministic: an explicit list of scene ids, or a fraction of the scenes ranked by a hash of their id (most
scenes keep their side when other scenes are added, but the count held out grows with the total).
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

from ssdiff_model.errors import BadInput

__all__ = ["assign_splits"]


def _rank(unit_id: str, seed: int) -> str:
    """The hex digest that orders units for the split (and seeds a unit's misregistration draws)."""
    return hashlib.sha256(f"{seed}:{unit_id}".encode()).hexdigest()


def assign_splits(unit_ids: Sequence[str], validation: float | Sequence[str] = 0.2, seed: int = 0
                  ) -> dict[str, str]:
    """unit id -> "train" or "validation". `validation` is a fraction of the units (ranked by a hash of their id
    and `seed`; at least one and at most all but one when there are two or more units and the fraction is > 0), or
    an explicit list of unit ids or of source ids (all units of that source).

    Args:
        unit_ids: the ids of the units (a scene's id, or `<scene id>#<k>of<n>` for its strips).
        validation: the fraction of units held out, or the unit or source ids held out.
        seed: seeds the ranking of a fraction.

    Returns:
        Each unit id's side.

    Raises:
        BadInput: a repeated unit id, a fraction outside [0, 1), an id not among the units, or every unit held out.
    """
    ids = list(unit_ids)
    if len(set(ids)) != len(ids):
        duplicated = sorted(i for i, c in Counter(ids).items() if c > 1)
        raise BadInput(f"the same scene is given twice: {duplicated}")
    if isinstance(validation, (int, float)) and not isinstance(validation, bool):
        if not 0.0 <= validation < 1.0:
            raise BadInput(f"validation fraction must be in [0, 1), got {validation}")
        n_val = round(validation * len(ids))
        if validation > 0 and len(ids) >= 2:
            n_val = min(max(n_val, 1), len(ids) - 1)
        chosen = set(sorted(ids, key=lambda i: _rank(i, seed))[:n_val])
    else:
        names = set(validation)
        chosen = {i for i in ids if i in names or i.split("#", 1)[0] in names}
        unknown = names - {i for i in ids} - {i.split("#", 1)[0] for i in ids}
        if unknown:
            raise BadInput(f"validation scenes {sorted(unknown)} are not among the sources ({', '.join(ids)})")
        if len(chosen) == len(ids):
            raise BadInput("every scene is in the validation list: nothing left to train on")
    return {i: "validation" if i in chosen else "train" for i in ids}
