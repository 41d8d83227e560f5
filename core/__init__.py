"""personae's domain: characters, their per-person state, prompts and the conversation engine.

Nothing here knows a chat platform, SQL or Redis; those live behind the Protocols in ``core.ports``.
"""
