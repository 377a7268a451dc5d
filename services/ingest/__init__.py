"""Ingest: poll feeds, parse, normalise, dedupe, publish to corridor.items.raw.v1."""
