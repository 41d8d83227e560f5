"""Where the model servers personae talks to differ, and how to tell which one answers.

All of them serve the OpenAI-style chat API; they part ways on three things (checked against each
server's source):

| server | guided JSON (``response_format``) | token count | model name |
|---|---|---|---|
| TGI | ``{"type": "json", "value": schema}`` | ``POST /tokenize {"inputs"}`` → list of tokens | ``"tgi"`` (anything else picks a LoRA adapter) |
| vLLM | ``{"type": "json_schema", "json_schema": {"name", "schema"}}`` | ``POST /tokenize {"model", "prompt"}`` → ``{"count", "tokens", ...}`` | the served name; any other is a 404 |
| SGLang | as vLLM | ``POST /v1/tokenize {"model", "prompt"}`` → ``{"count", "tokens", ...}`` | the served name |
| llama.cpp | as vLLM (it reads ``json_schema.schema``) | ``POST /tokenize {"content"}`` → ``{"tokens"}`` | ignored |

A server is TGI when ``GET /info`` answers with ``model_id`` and ``max_input_tokens``; otherwise
``GET /v1/models`` names the others in ``owned_by`` (``"vllm"``, ``"sglang"``, ``"llamacpp"``).
Anything else (llama-cpp-python says ``"me"``) is a plain OpenAI-style server: no guided JSON, token
counts estimated, and the model name left as configured.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping

import httpx

log = logging.getLogger(__name__)

KINDS = ("tgi", "vllm", "sglang", "llamacpp", "openai")
_OWNERS = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llamacpp"}
_NAMED = ("vllm", "sglang")  # servers that check the model name


class Unreachable(Exception):
    """The server could not be asked (network error or a 5xx): ask again later."""


class NotAModelServer(Exception):
    """Something answers at the URL, but neither TGI's ``/info`` (with ``model_id``) nor a JSON model
    list at ``/v1/models``: it does not look like a model server."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """One server kind and what it said about itself."""

    kind: str
    served_models: tuple[str, ...] = ()  # ids from GET /v1/models, in its order
    info: Mapping[str, Any] | None = field(default=None, compare=False)  # TGI's /info
    context_tokens: int | None = None  # prompt + answer the server allows (vLLM/SGLang ``max_model_len``), when it says

    def model_name(self, configured: str | None) -> str:
        """The ``model`` to send: the configured name, else the served one where the server checks it."""
        if configured:
            return configured
        if self.kind in (*_NAMED, "llamacpp") and self.served_models:
            return self.served_models[0]
        return "tgi"

    def response_format(
        self, schema: Mapping[str, Any], name: str = "answer", *, analysis_first: bool = False
    ) -> dict[str, Any] | None:
        """The ``response_format`` that constrains the answer to ``schema``, None where unsupported.

        ``analysis_first``: the answer may open with free text; on TGI a regex grammar shapes only
        the object at its end (see ``analysis_then_object``); elsewhere nothing is constrained (a JSON
        schema there would force the object from the first token, and the trained analysis with it).
        """
        if analysis_first:
            regex = analysis_then_object(schema) if self.kind == "tgi" else None
            return {"type": "regex", "value": regex} if regex is not None else None
        if self.kind == "tgi":
            return {"type": "json", "value": dict(schema)}
        if self.kind in (*_NAMED, "llamacpp"):
            return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema)}}
        return None

    def tokenize_request(self, text: str, model: str) -> tuple[str, dict[str, Any]] | None:
        """The route and body that count ``text``'s tokens, None where the server has none."""
        if self.kind == "tgi":
            return "/tokenize", {"inputs": text}
        if self.kind == "vllm":
            return "/tokenize", {"model": model, "prompt": text, "add_special_tokens": False}
        if self.kind == "sglang":
            return "/v1/tokenize", {"model": model, "prompt": text, "add_special_tokens": False}
        if self.kind == "llamacpp":
            return "/tokenize", {"content": text}
        return None


# A score as the alignment data writes it: 0-10, sometimes with a fraction (``7.5``).
_SCORE = r"(10|[0-9])(\.[0-9]{1,2})?"


def analysis_then_object(schema: Mapping[str, Any]) -> str | None:
    """A regex (for TGI's ``{"type": "regex"}`` grammar) of free text without braces followed by the
    flat object ``schema`` describes, keys in its order, each a score; None for any other schema.

    TGI compiles the regex to a state machine (outlines), so it stays simple: no nesting, bounded
    spacing, and nothing after the closing brace (the answer ends there).
    """
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, Mapping) or not properties:
        return None
    if any(not isinstance(p, Mapping) or p.get("type") not in ("integer", "number") for p in properties.values()):
        return None
    pairs = ", ?".join(re.escape(json.dumps(key, ensure_ascii=False)) + ": ?" + _SCORE for key in properties)
    return r"[^{}]*\{\s?" + pairs + r"\s?\}"


LAYOUT_SETTING = "PERSONAE_PROMPT_LAYOUT"
# BeyondDialogue's models are published as ``…-BD-RP`` (yuyouyu/Mistral-Nemo-BD-RP, Qwen2-7B-BD-RP).
_BD_MARK = "bd-rp"


def choose_layout(setting: str, dialect: Dialect | None, configured_model: str | None) -> tuple[str, str]:
    """The prompt layout to use (``training`` or ``chat``) and why, for PERSONAE_PROMPT_LAYOUT=``setting``.

    ``auto`` takes the training layout when the served model (TGI's ``model_id``, an id from
    ``/v1/models``) or PERSONAE_LLM_MODEL names a BeyondDialogue model, the server's chat template otherwise.
    """
    if setting != "auto":
        return setting, f"{LAYOUT_SETTING}={setting}"
    names: list[tuple[str, str]] = []
    if dialect is not None:
        model_id = (dialect.info or {}).get("model_id")
        if model_id:
            names.append(("the server's model_id", str(model_id)))
        names += [("the served model", m) for m in dialect.served_models if m != model_id]
    if configured_model:
        names.append(("PERSONAE_LLM_MODEL", configured_model))
    for where, name in names:
        if _BD_MARK in name.lower():
            return "training", f"auto: {where} {name!r} is a BeyondDialogue model, trained on this layout"
    if not names:
        return "chat", "auto: the server has not said which model it serves (yet); the chat template meanwhile"
    where, name = names[0]
    return "chat", f"auto: {where} {name!r} is not a BeyondDialogue model (no 'BD-RP' in its name)"


def token_count(body: Any) -> int | None:
    """The number of tokens in a tokenize answer of any of the shapes above, None if it is none of them."""
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict):
        count = body.get("count")
        if isinstance(count, int) and not isinstance(count, bool):
            return count
        tokens = body.get("tokens")
        if isinstance(tokens, list):
            return len(tokens)
    return None


async def detect(client: httpx.AsyncClient, *, timeout_s: float) -> Dialect:
    """Ask the server at ``client.base_url`` what it is. Raises Unreachable when it cannot tell yet,
    NotAModelServer when what answers shows no sign of being one (TGI's /info, a /v1/models list)."""
    info = await _get_json(client, "/info", timeout_s)
    if isinstance(info, dict) and "model_id" in info and "max_input_tokens" in info:
        return Dialect("tgi", (str(info["model_id"]),), info)
    models = await _get_json(client, "/v1/models", timeout_s)
    entries = models.get("data") if isinstance(models, dict) else None
    if not isinstance(entries, list) and not (isinstance(info, dict) and "model_id" in info):
        raise NotAModelServer("it answers, but neither GET /info (TGI) nor GET /v1/models (a JSON model list) does")
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    ids = tuple(str(e["id"]) for e in entries if e.get("id"))
    owners = {str(e.get("owned_by", "")).lower() for e in entries}
    kind = next((_OWNERS[o] for o in owners if o in _OWNERS), "openai")
    lengths = [e.get("max_model_len") for e in entries]
    context = next((n for n in lengths if isinstance(n, int) and not isinstance(n, bool)), None)
    return Dialect(kind, ids, context_tokens=context)


def _network_problem(exc: httpx.HTTPError, client: httpx.AsyncClient) -> str:
    """What went wrong, in a person's words where it is known: "cannot resolve host X" for a name no
    DNS knows, the exception's name otherwise."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host {client.base_url.host}"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


async def _get_json(client: httpx.AsyncClient, path: str, timeout_s: float) -> Any:
    """The JSON a GET answers, None for a 4xx or a body that is not JSON."""
    try:
        response = await client.get(path, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise Unreachable(f"GET {path} failed ({_network_problem(exc, client)})") from exc
    if response.status_code >= 500:
        raise Unreachable(f"GET {path} answered {response.status_code}")
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None
