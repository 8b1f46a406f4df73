"""Market vocabulary shared by every layer: the six categories and how unknown ones are mapped."""

from __future__ import annotations

CATEGORIES = ("sports", "politics", "economics", "climate", "crypto", "other")
FALLBACK_CATEGORY = "other"


def normalize_category(value: str | None) -> str:
    """Lower-cased category, or `other` for a missing or unknown one."""
    lowered = (value or "").strip().lower()
    return lowered if lowered in CATEGORIES else FALLBACK_CATEGORY
