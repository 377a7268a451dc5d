"""Corridor's services: ingest, classifier, alerts, and the runtime and CLI that run them."""
