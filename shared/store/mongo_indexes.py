"""Index creation for the MongoDB store that survives a changed definition.

``create_index`` is idempotent only for the same definition. When a version changes an index's
keys or options under the same name (subscriptions ``created`` went from ``created_at`` to
``(created_at, _id)``), MongoDB refuses it with IndexKeySpecsConflict / IndexOptionsConflict, and a
store that raised there would never start again. The old definition is dropped and the new one
built instead. (TTL indexes change their expiry in place: ``MongoStore._expire``.)
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.errors import OperationFailure

log = logging.getLogger(__name__)

INDEX_OPTIONS_CONFLICT = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
INDEX_NOT_FOUND = 27


async def ensure_index(collection: Any, keys: Any, *, name: str, **options: Any) -> None:
    """Create index ``name`` on ``collection`` as given, replacing an index of that name defined
    otherwise. Any other refusal (the same keys under another name among them) is raised."""
    try:
        await collection.create_index(keys, name=name, **options)
    except OperationFailure as exc:
        if exc.code not in INDEX_OPTIONS_CONFLICT:
            raise
        try:
            await collection.drop_index(name)
        except OperationFailure as missing:
            if missing.code != INDEX_NOT_FOUND:
                raise
            raise exc from None  # the conflict is with an index of another name: not ours to drop
        log.warning("index %s.%s was defined otherwise; rebuilt as %s", collection.name, name, keys)
        await collection.create_index(keys, name=name, **options)
