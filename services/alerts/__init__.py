"""Alerts: match classified items to subscriptions and deliver them by webhook or email."""
