"""The audit log: every change is an event; rules and notifiers come later."""

from provisor.events.log import EventView, query_events, record_event

__all__ = ["EventView", "query_events", "record_event"]
