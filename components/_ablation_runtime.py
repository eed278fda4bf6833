"""Run-time glue of the ablation components (:mod:`components.ablation`).

A separate module because the components import it in the pod, where ``kfp.dsl`` is only the
executor's part (importing :mod:`components.ablation`, which declares components, fails there).
"""

from __future__ import annotations

import re

_CREDENTIALS_IN_URL = re.compile(r"//[^/@]*:[^/@]*@")


def storage_url(storage: str | None) -> str | None:
    """The ``storage`` argument, or None (then ``$FAKEFACE_ABLATION_STORAGE``, then params).

    A URL with ``user:password@`` is refused: the password would be a pipeline parameter, stored
    in the run's spec. Put such a URL in the Kubernetes Secret as FAKEFACE_ABLATION_STORAGE.
    """
    storage = (storage or "").strip()
    if _CREDENTIALS_IN_URL.search(storage):
        raise ValueError(
            "the storage argument holds a password (user:password@); leave it empty and put the URL "
            "in the Kubernetes Secret as FAKEFACE_ABLATION_STORAGE"
        )
    return storage or None
