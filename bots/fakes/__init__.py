"""Local stand-ins for Discord's and Telegram's APIs (and the model server's), for tests and ``personae bench``.

``bots.fakes.discord.FakeDiscord`` and ``bots.fakes.telegram.FakeTelegram`` serve the real client
libraries on 127.0.0.1; with ``limits`` set they enforce the platforms' rate limits the way the
platforms do (429 with ``retry_after`` past them).
"""
