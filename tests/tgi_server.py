"""The TGI-protocol test double, under the name the tests use (it lives in the package for ``personae bench``)."""

from bots.llm.tgi_double import *  # noqa: F401,F403
