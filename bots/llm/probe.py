"""One look at a model server before the first turn: is it there, and which model does it serve."""

from __future__ import annotations

import asyncio
import ssl

import httpx

from core.errors import ModelError

PROBE_TIMEOUT_S = 5.0


async def served_model(base_url: str, *, api_key: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """The id of the first model ``/v1/models`` lists, or None if the server does not say.

    Raises ModelError when nothing answers at ``base_url``: a wrong PERSONAE_LLM_URL should stop
    start-up with one line, not the first person's message. Any HTTP answer counts as "there".
    """
    url = base_url.rstrip("/") + "/v1/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    from bots.llm.client import tls_context

    # The model clients' TLS context: a certificate they trust (SSL_CERT_FILE, say) passes here too.
    verify = await asyncio.to_thread(tls_context, httpx)
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False, verify=verify) as client:
            response = await client.get(url, headers=headers)
    except httpx.ConnectError as exc:
        if _untrusted_certificate(exc):
            raise ModelError(
                f"the model server at {base_url} has a certificate this machine does not trust; "
                "name its CA in SSL_CERT_FILE (or fix PERSONAE_LLM_URL)",
                retryable=False,
            ) from None
        raise ModelError(
            f"the model server at {base_url} refused the connection; is it running (PERSONAE_LLM_URL)?", retryable=True
        ) from None
    except httpx.TimeoutException:
        raise ModelError(
            f"the model server at {base_url} did not answer within {timeout_s:g} s; check PERSONAE_LLM_URL", retryable=True
        ) from None
    except httpx.HTTPError as exc:
        raise ModelError(f"the model server at {base_url} could not be reached ({exc}); check PERSONAE_LLM_URL", retryable=True) from None
    if response.status_code in (401, 403):
        raise ModelError(
            f"the model server at {base_url} refused the credentials ({response.status_code}); "
            "check PERSONAE_LLM_API_KEY (it must match the server's --api-key)",
            retryable=False,
            status=response.status_code,
        )
    try:
        models = response.json().get("data") or []
        return str(models[0]["id"]) if response.is_success and models else None
    except (ValueError, AttributeError, KeyError, IndexError, TypeError):
        return None


def _untrusted_certificate(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # httpx's error wraps httpcore's, which wraps ssl's
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
