"""The TGI-protocol test double, under the name the tests use (it lives in the package for ``personae bench``)."""

from bots.llm.tgi_double import DEFAULT_REPLY, FAIL_KINDS, Failure, Recorded, TGIServer  # noqa: F401
