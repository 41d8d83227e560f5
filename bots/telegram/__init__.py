"""The Telegram adapter: python-telegram-bot v22 in front of the engine and the command layer.

``run_telegram(app)`` runs the bot until cancelled; ``build_application(app)`` gives the assembled
Application (tests drive it against a local Bot API with ``serving``).
"""

from bots.telegram.application import TelegramStartError, Tuning, build_application, run_telegram, serving

__all__ = ["TelegramStartError", "Tuning", "build_application", "run_telegram", "serving"]
