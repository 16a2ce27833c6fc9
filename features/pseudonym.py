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


# HMAC-SHA256 (RFC 2104) = SHA256((K ^ opad) || SHA256((K ^ ipad) || message)), K the key padded
# to SHA-256's 64-byte block (hashed first when longer). Written this way, DuckDB's sha256 computes
# `id_token` set-based over millions of IDs, in parallel and without a round trip through Python.
_BLOCK = 64


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """(inner, outer) padded keys of HMAC-SHA256 for `key`: the BLOB parameters of `id_token_sql`.
    They are as secret as the key: pass them as query parameters, never in SQL text or logs."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def id_token_sql(expr: str, inner: str = "$inner", outer: str = "$outer") -> str:
    """DuckDB SQL computing `id_token` of the VARCHAR `expr` (same tokens, checked by a test);
    `inner`/`outer` name the BLOB parameters holding `hmac_pads(key)`."""
    return f"left(sha256({outer} || unhex(sha256({inner} || encode('id:' || {expr})))), 32)"


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
