"""Corridor's common code: settings, event envelope, bus and store adapters, HTTP safety, metrics."""
