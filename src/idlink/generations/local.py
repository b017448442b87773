"""The ``local`` engine: plain components with the compiled union-find, in one call.

Dense contact ids and one spanning star per record (``Inputs.edges``) go to
``idlink._native._unionfind.connected_components``, which runs Rem's
union-find over every edge at once with the GIL released (docs/native.md).
The exact replay of the flagged components follows in
:func:`idlink.generations.recluster.finish`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from idlink._native import _unionfind

if TYPE_CHECKING:
    from idlink.generations.recluster import Inputs


def components(inputs: Inputs, details: dict[str, Any]) -> np.ndarray:
    """Each contact's plain component (numbered from 0 by smallest contact)."""
    src, dst = inputs.edges()
    count, labels = _unionfind.connected_components(inputs.contacts, src, dst)
    details["edges"] = int(len(src))
    details["plain_components"] = int(count)
    # The selector says which one it uses; a twin named directly (the tests) by its name.
    details["union_find"] = getattr(_unionfind, "IMPLEMENTATION", _unionfind.__name__[-2:])
    return np.frombuffer(labels, np.uint32).astype(np.int64)
