"""Ids of predictions and jobs, tagged with the region that made them.

With ``region.name`` set, an id reads ``<region>-<random hex>`` (32 characters in all, 120 bits
or more of randomness), so any region, and the global front, can tell where a prediction's
log row or a job lives without asking a shared database.
"""

from __future__ import annotations

import re
import uuid

ID_LENGTH = 32
REGION_NAME = re.compile(r"^[a-z0-9]{1,8}$")


def new_id(region: str | None = None) -> str:
    random = uuid.uuid4().hex
    if not region:
        return random
    return f"{region}-{random}"[:ID_LENGTH]


def region_of(identifier: str) -> str | None:
    """The region an id was made in, or None for an untagged one (made before regions)."""
    region, dash, _ = identifier.partition("-")
    return region if dash and REGION_NAME.match(region) else None
