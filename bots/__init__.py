"""The outermost layer: platform adapters (Discord, Telegram, console), the CLI, the model client and
the composition root that wires them to core and storage."""
