"""A vLLM- (or SGLang-) style server on 127.0.0.1: the TGI double with the other servers' dialect.

Generation, streaming and scripted failures are the TGI double's; what differs is what vLLM and SGLang
do differently (see ``bots.llm.dialects``): no ``/info``; ``/v1/models`` says ``owned_by: "vllm"``
(or ``"sglang"``) and lists the served model name; a request for any other model name is a 404;
guided JSON is OpenAI's ``{"type": "json_schema", "json_schema": {...}}`` and TGI's ``{"type": "json"}``
is a 400; tokenize takes ``{"model", "prompt"}`` and answers ``{"count", "max_model_len", "tokens"}``
(vLLM at ``/tokenize``, SGLang at ``/v1/tokenize``). Error bodies are vLLM's
``{"error": {"message", "type", "param", "code"}}``.

    async with VLLMServer(served_model_name="bd-rp") as server:
        ... ModelClient(server.base_url, ...) ...
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bots.llm.tgi_double import MODEL_ID, TGIServer, split_tokens

_GUIDED_TYPES = ("text", "json_object", "json_schema", "structural_tag")


class VLLMServer(TGIServer):
    """A fake vLLM (``kind="vllm"``) or SGLang (``kind="sglang"``) serving ``served_model_name``."""

    def __init__(self, *, served_model_name: str = "bd-rp", kind: str = "vllm", max_model_len: int = 4608, **kw: Any) -> None:
        if kind not in ("vllm", "sglang"):
            raise ValueError(f"kind must be vllm or sglang, not {kind!r}")
        super().__init__(**kw)
        self.served_model_name = served_model_name
        self.kind = kind
        self.max_model_len = max_model_len
        # SGLang serves tokenize under /v1 (vLLM under the root, which the TGI double already routes).
        self.app.router.routes.append(Route("/v1/tokenize", self._tokenize, methods=["POST"]))

    @property
    def tokenize_path(self) -> str:
        return "/tokenize" if self.kind == "vllm" else "/v1/tokenize"

    @staticmethod
    def _openai_error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status)

    def _validate(self, body: Any, *, chat: bool) -> JSONResponse | None:
        if isinstance(body, dict) and body.get("model") != self.served_model_name:
            return self._openai_error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")
        fmt = body.get("response_format") if isinstance(body, dict) else None
        if fmt is not None:
            if not isinstance(fmt, dict) or fmt.get("type") not in _GUIDED_TYPES:
                kind = fmt.get("type") if isinstance(fmt, dict) else fmt
                return self._openai_error(400, f"response_format type {kind!r} is not one of {', '.join(_GUIDED_TYPES)}", "BadRequestError")
            if fmt["type"] == "json_schema" and not isinstance((fmt.get("json_schema") or {}).get("schema"), dict):
                return self._openai_error(400, "response_format.json_schema.schema is required", "BadRequestError")
        return super()._validate(body, chat=chat)

    async def _generate(self, request: Request) -> Response:
        await self._record(request)  # TGI's native route: vLLM and SGLang have none
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def _info(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        card = {"id": self.served_model_name, "object": "model", "created": 0, "owned_by": self.kind, "root": MODEL_ID, "parent": None, "max_model_len": self.max_model_len}
        return JSONResponse({"object": "list", "data": [card]})

    async def _tokenize(self, request: Request) -> Response:
        body = await self._record(request)
        if request.url.path != self.tokenize_path:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return self._openai_error(400, "prompt: field required", "BadRequestError", "prompt")
        if body.get("model") not in (None, self.served_model_name):
            return self._openai_error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")
        text = body["prompt"]
        tokens = [1000 + i for i, _ in enumerate(split_tokens(text, None) if text else [])]
        return JSONResponse({"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens, "token_strs": None})
