"""MkDocs hook: ``{{ version }}`` in a page becomes ``spikegrad.__version__`` (read from the source,
without importing the package); the tutorials' printed output is shown as plain text."""

from __future__ import annotations

import re
from pathlib import Path

_INIT = Path(__file__).resolve().parent.parent / "spikegrad" / "__init__.py"


def _version() -> str:
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', _INIT.read_text(), re.M)
    if m is None:
        raise RuntimeError(f"no __version__ in {_INIT}")
    return m.group(1)


VERSION = _version()


def on_page_markdown(markdown: str, **kwargs) -> str:
    # the printed output of the tutorials is text, not shell code to highlight
    markdown = markdown.replace("```{.shell .mkd-glr-script-out-disp }", "```{.text .mkd-glr-script-out-disp }")
    return markdown.replace("{{ version }}", VERSION)
