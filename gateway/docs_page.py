"""``GET /docs``: the gateway's OpenAPI description as a page that reads without the network.

The server renders every operation (method, path, summary, request body schema,
answers) into plain HTML, so the page works on a host with no way out. Where the
browser can reach the Swagger UI package on its CDN, Swagger UI replaces that
listing with its interactive view of ``openapi.json``.
"""
from __future__ import annotations

import html
import json
from typing import Any

_SWAGGER = "https://unpkg.com/swagger-ui-dist@5"
_METHODS = ("get", "post", "put", "delete", "patch")
_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}"
          "pre{margin:0;font-size:.85em;max-height:20em;overflow:auto}")


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in spec.get("paths", {}).items()
            for method, op in item.items() if method in _METHODS]


def _body_schema(op: dict[str, Any]) -> str:
    content = op.get("requestBody", {}).get("content", {})
    for kind in ("application/json", *content):
        if kind in content:
            return json.dumps(content[kind].get("schema", {}), indent=1, sort_keys=True)
    return ""


def render(spec: dict[str, Any]) -> str:
    """The HTML page of an OpenAPI description (``gateway.openapi.describe``)."""
    info = spec.get("info", {})
    title = html.escape(f"{info.get('title', 'zeroserve')} {info.get('version', '')}".strip())
    rows = []
    for method, path, op in _operations(spec):
        answers = ", ".join(html.escape(str(code)) for code in op.get("responses", {}))
        schema = _body_schema(op)
        rows.append(f"<tr><td>{method}</td><td><code>{html.escape(path)}</code></td>"
                    f"<td>{html.escape(op.get('summary', ''))}</td>"
                    f"<td>{f'<pre>{html.escape(schema)}</pre>' if schema else ''}</td>"
                    f"<td>{answers}</td></tr>")
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{title}</title><style>{_STYLE}</style>"
        f"<link rel=\"stylesheet\" href=\"{_SWAGGER}/swagger-ui.css\"></head>\n<body>"
        f"<div id=\"ui\"><h1>{title}</h1><p>The machine-readable description is "
        "<a href=\"openapi.json\">openapi.json</a>.</p>\n<table><tr><th>method</th><th>path"
        "</th><th>what</th><th>request body</th><th>answers</th></tr>\n"
        + "\n".join(rows) +
        "\n</table></div>\n"
        f"<script src=\"{_SWAGGER}/swagger-ui-bundle.js\"></script>\n"
        "<script>if (window.SwaggerUIBundle) "
        "SwaggerUIBundle({url: \"openapi.json\", dom_id: \"#ui\"});</script>\n"
        "</body></html>\n")
