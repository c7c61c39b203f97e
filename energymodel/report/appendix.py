"""The report's appendix: the cost model's formulas, from the code's own docstrings."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from markupsafe import Markup, escape

_CODE = re.compile(r"``(.+?)``")
_STRONG = re.compile(r"\*\*([^*\n]+?)\*\*")
_EM = re.compile(r"(?<![\w*])\*([^*\n]+?)\*(?![\w*])")
_REF = re.compile(r":(?:func|class|mod|data|meth|attr):`~?([^`]+)`")


def _doc_html(text: str) -> Markup:
    """A docstring as escaped text with ``code`` spans (layout kept by CSS ``white-space: pre-wrap``)."""
    html = str(escape(inspect.cleandoc(text)))
    html = _REF.sub(lambda m: f"<code>{m.group(1)}</code>", html)
    html = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html)
    html = _STRONG.sub(lambda m: f"<strong>{m.group(1)}</strong>", html)
    html = _EM.sub(lambda m: f"<em>{m.group(1)}</em>", html)
    return Markup(html)


def _describe_elementwise(rule: Callable) -> str | None:
    names = getattr(getattr(rule, "__code__", None), "co_freevars", ())
    cells = getattr(rule, "__closure__", None) or ()
    env = dict(zip(names, (c.cell_contents for c in cells)))
    if not {"fwd", "bwd"} <= set(env):
        return None

    def ops(v) -> str:
        parts = [f"{getattr(v, k):g} {k}" for k in ("mac", "add", "mult", "cmp") if getattr(v, k)]
        return " + ".join(parts) or "nothing"

    saved = env.get("saved", 1.0)
    return (f"Element-wise, per output element: forward {ops(env['fwd'])}; backward {ops(env['bwd'])}; "
            f"keeps {saved:g} element(s) for the backward pass.")


def formulas() -> list[dict[str, Any]]:
    """The appendix: module docstrings of ops / counting / price / sharing, every counting rule, optimizers."""
    from .. import counting, ops, price, sharing

    out: list[dict[str, Any]] = []
    for mod, title in ((ops, "Counting rules (energymodel.ops)"), (counting, "Training and memory accesses "
                       "(energymodel.counting)"), (price, "Pricing and the dataflow model (energymodel.price)"),
                       (sharing, "Partial network sharing (energymodel.sharing)")):
        out.append({"title": title, "doc": _doc_html(mod.__doc__ or ""), "rules": [], "optimizers": []})
    rules = []
    for name, fn in vars(ops).items():
        if not name.endswith("_rule") or not callable(fn):
            continue
        applies = [cls.__name__ for cls, r in ops.MODULE_RULES.items() if r is fn]
        applies += [f"aten.{op}" for op, r in ops.ATEN_RULES.items() if r is fn]
        doc = fn.__doc__ or _describe_elementwise(fn) or ""
        rules.append({"name": name, "applies": ", ".join(applies), "doc": _doc_html(doc)})
    out[0]["rules"] = rules
    out[1]["optimizers"] = [
        {"name": o.name, "formula": o.formula, "reads": o.reads, "writes": o.writes, "mults": o.mults,
         "adds": o.adds, "state": o.state} for o in counting.OPTIMIZERS.values()
    ]
    return out
