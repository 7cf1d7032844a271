# -*- coding: utf-8 -*-
# Copyright: pgshift contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# This module_utils is PRIVATE to the pgshift.ops collection. It may change without notice.
"""Names pgshift derives from a production database name, always within PostgreSQL's 63-byte limit.

``fit(base, suffix)`` is ``base + suffix`` when that fits; otherwise ``base`` is cut to a readable prefix (on a
character boundary) followed by ``_`` and 8 hex digits of the SHA-256 of the whole ``base``, then the suffix. The same
base always gives the same name, and two bases that share a long prefix still give different names. ``stem(base,
suffix)`` is the part before the suffix, so that copies with a timestamp suffix (``__prev_<ts>``) can be found by
pattern: the stem depends only on the base and the suffix's length.
"""

from __future__ import annotations

import hashlib

MAX_NAME = 63
_HASH_LEN = 8


def _cut(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form fits in ``limit`` bytes."""
    out = text.encode("utf-8")[:limit]
    return out.decode("utf-8", errors="ignore")


def stem(base: str, suffix_len: int, limit: int = MAX_NAME) -> str:
    """The part of a derived name before a suffix of ``suffix_len`` bytes."""
    if len(base.encode("utf-8")) + suffix_len <= limit:
        return base
    digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:_HASH_LEN]
    room = limit - suffix_len - _HASH_LEN - 1
    if room < 1:
        raise ValueError("a suffix of %d bytes leaves no room for a name within %d bytes" % (suffix_len, limit))
    return _cut(base, room) + "_" + digest


def fit(base: str, suffix: str, limit: int = MAX_NAME) -> str:
    """``base + suffix``, shortened with a stable hash of ``base`` when it would exceed ``limit`` bytes."""
    return stem(base, len(suffix.encode("utf-8")), limit) + suffix


def valid_name(name: str) -> bool:
    return 0 < len(name.encode("utf-8")) <= MAX_NAME
