"""Log lines as JSON (PERSONAE_LOG_FORMAT=json): one object a line, for a log collector.

Each line carries ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, and during a turn
``conversation`` and ``turn`` (``core.observe``'s context variables: the conversation's key and the
stored message's id). A failure adds ``error`` (its kind and first line) and, with ``--debug``,
``traceback``. What people wrote is never quoted unless PERSONAE_LOG_MESSAGE_TEXT=true
(``core.observe.quoted``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from core import observe


class JsonFormatter(logging.Formatter):
    full_tracebacks = False

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        conversation, turn = observe.conversation_id.get(), observe.turn_id.get()
        if conversation is not None:
            line["conversation"] = conversation
        if turn is not None:
            line["turn"] = turn
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            first = (str(error).strip().splitlines() or [""])[0][:300]
            line["error"] = f"{type(error).__name__}{': ' + first if first else ''}"
            if self.full_tracebacks:
                line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
