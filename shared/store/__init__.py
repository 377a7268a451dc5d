"""The store: one interface (:class:`Store`), a MongoDB-wire adapter and a SQLite adapter."""

from shared.store.base import EventQuery, SectorCount, Store

__all__ = ["EventQuery", "SectorCount", "Store"]
