"""The terminal as a third platform: ``personae chat``."""
