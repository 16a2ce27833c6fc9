"""Keyed pseudonyms: id tokens for delivered identifiers, and the student_key.

Both are HMAC-SHA256 with the deployment's secret (EWS_HOME/keys/pseudonym.key), so nobody
without the key can recompute a token from a citizen ID, and the same ID always gives the same
token within a deployment. Tokens are computed over *distinct* identifiers only (one HMAC per
child, not per row), then joined back to rows set-based.
"""

from __future__ import annotations

import hashlib
import hmac


def id_token(key: bytes, normalised_id: str) -> str:
    """Token of a delivered student identifier (citizen ID or G-code, as normalised)."""
    return hmac.new(key, b"id:" + normalised_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def student_key(key: bytes, anchor: str) -> str:
    """The pseudonymous key of one real child; `anchor` is the linkage cluster's stable anchor."""
    return student_keys(key, [anchor])[0]


def student_keys(key: bytes, anchors: list[str]) -> list[str]:
    """`student_key` for many anchors (millions per linkage run): "S" + the first 20 hex digits of
    HMAC-SHA256(secret, "student:" + anchor). The keyed state after the common prefix is computed
    once and copied, which saves a third of the time."""
    base = hmac.new(key, b"student:", hashlib.sha256)
    out = []
    for anchor in anchors:
        h = base.copy()
        h.update(anchor.encode("utf-8"))
        out.append("S" + h.hexdigest()[:20])
    return out
