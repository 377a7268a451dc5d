"""Index creation for the MongoDB store that survives a changed definition.

``create_index`` is idempotent only for the same definition. When a version changed an index's
keys or options under the same name (subscriptions ``created`` went from ``created_at`` to
``(created_at, _id)``), MongoDB refuses it with IndexKeySpecsConflict / IndexOptionsConflict, and a
store that raised there would never start again. The old definition is dropped and the new one
built instead. New definitions get new names (:func:`retire_index` drops the old name), so a
previous version started during a rolling upgrade or a rollback finds its own index, not a
conflict. (TTL indexes change their expiry in place: ``MongoStore._expire``.)
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.errors import OperationFailure

log = logging.getLogger(__name__)

INDEX_OPTIONS_CONFLICT = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
INDEX_NOT_FOUND = 27
NAMESPACE_NOT_FOUND = 26


async def ensure_index(collection: Any, keys: Any, *, name: str, **options: Any) -> None:
    """Create index ``name`` on ``collection`` as given, replacing an index of that name defined
    otherwise. Raised: any other refusal (the same keys under another name among them), and a
    conflict on a unique index (dropping it would let duplicates in until it is rebuilt, and
    the rebuild would then fail on them)."""
    try:
        await collection.create_index(keys, name=name, **options)
        return
    except OperationFailure as exc:
        if exc.code not in INDEX_OPTIONS_CONFLICT or options.get("unique"):
            raise
        conflict = exc
    try:
        await collection.drop_index(name)
        log.warning("index %s.%s was defined otherwise; rebuilding it as %s", collection.name, name, keys)
    except OperationFailure as missing:
        if missing.code != INDEX_NOT_FOUND:
            raise
        # Gone already: another replica starting at the same time dropped it (and may have
        # rebuilt it), or the conflict is with an index of another name, which the next
        # create_index raises again.
    try:
        await collection.create_index(keys, name=name, **options)
    except OperationFailure as again:
        if again.code in INDEX_OPTIONS_CONFLICT:
            raise again from conflict
        raise


async def retire_index(collection: Any, name: str) -> None:
    """Drop index ``name`` (an earlier version's, replaced under a new name) if it is there."""
    try:
        await collection.drop_index(name)
    except OperationFailure as exc:
        if exc.code not in (INDEX_NOT_FOUND, NAMESPACE_NOT_FOUND):
            raise
    else:
        log.info("index %s.%s of an earlier version dropped", collection.name, name)
