"""Texts of exact lengths for the tests of message-size boundaries."""


def sentences(length: int) -> str:
    """Sentences of exactly ``length`` characters (at least 22), the last one ending the text with its full stop."""
    sentence = "The rest is silence. "
    text = (sentence * ((length - 1) // len(sentence))).rstrip()
    text = text[:-1] + "o" * (length - len(text)) + "."
    assert len(text) == length
    return text


def just_over(limit: int) -> tuple[str, str]:
    """A text of ``limit`` + 1 characters whose last boundary within ``limit`` is at ``limit`` itself
    (a sentence's end and its space), and the head a platform should cut there."""
    head = sentences(limit - 1)
    return head + " I", head
