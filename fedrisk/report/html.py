"""report.html: the Markdown report as one self-contained page (figures inlined) that can be mailed.

Rendered with markdown-it-py (already a dependency of rich); raw HTML in the Markdown is disabled, so
config names and party names cannot inject markup. The first page ends at the horizontal rule, which
prints as a page break.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
blockquote { border-left: 6px solid #c0392b; background: #fdecea; margin: 1em 0; padding: 0.6em 1em; }
img { max-width: 100%; border: 1px solid #ddd; }
code { background: #f4f4f4; padding: 0 0.2em; }
hr { border: 0; border-top: 2px solid #bbb; margin: 2em 0; }
@media print { hr { page-break-after: always; border: 0; } img { page-break-inside: avoid; } }
"""
_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def render_html(markdown: str, title: str, directory: Path | None = None) -> str:
    """The report as one HTML page; images under ``directory`` become data: URIs, others stay links."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def image(self, tokens, idx, options, env) -> str:  # markdown-it's render-rule signature
        token = tokens[idx]
        inlined = _data_uri(directory, token.attrGet("src"))
        if inlined:
            token.attrSet("src", inlined)
        return self.image(tokens, idx, options, env)

    md.add_render_rule("image", image)
    body = md.render(markdown)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def _data_uri(directory: Path | None, src: str | int | float | None) -> str | None:
    """The file at ``src`` (relative, inside ``directory``) as a base64 data: URI; None if not inlinable."""
    if directory is None or not isinstance(src, str) or ":" in src or src.startswith("/"):
        return None
    root = directory.resolve()
    path = (root / src).resolve()
    kind = _TYPES.get(path.suffix.lower())
    if kind is None or not path.is_relative_to(root) or not path.is_file():
        return None
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
