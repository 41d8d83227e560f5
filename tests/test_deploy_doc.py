"""docs/deploy.md says what the code does where an operator decides on replicas."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_replicas_section_says_the_model_capacity_is_shared() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text[text.index("## 11.") : text.index("## 12.") if "## 12." in text else len(text)]
    assert "not shared yet" not in section.lower()
    assert "N times as many" not in section
    assert "PERSONAE_LLM_MAX_IN_FLIGHT" in section and "PERSONAE_REDIS_URL" in section
