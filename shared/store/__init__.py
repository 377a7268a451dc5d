"""The store: one interface (:class:`Store`), a MongoDB-wire adapter and a SQLite adapter."""

from shared.store.base import AgreementActivity, EventQuery, SectorCount, Store

__all__ = ["AgreementActivity", "EventQuery", "SectorCount", "Store"]
