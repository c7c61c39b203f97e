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
_REF = re.compile(r":(?:func|class|mod|data|meth|attr|obj|exc):`~?([^`]+)`")
_TICK = re.compile(r"(?<![`\w])`([^`\n]+)`(?!`)")
_ITEM = re.compile(r"^(?:[-*•]|\d+\.)\s+")
_DIRECTIVE = re.compile(r"^\.\. [\w-]+::.*$")


def _inline(text: str) -> str:
    """Escaped text with reST inline markup turned into HTML (``code``, roles, **strong**, *em*)."""
    html = str(escape(text))
    html = _REF.sub(lambda m: f"<code>{m.group(1).rpartition('.')[2] if m.group(0).find('~') > 0 else m.group(1)}</code>",
                    html)
    html = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html)
    html = _TICK.sub(lambda m: f"<code>{m.group(1)}</code>", html)
    html = _STRONG.sub(lambda m: f"<strong>{m.group(1)}</strong>", html)
    return _EM.sub(lambda m: f"<em>{m.group(1)}</em>", html)


def _doc_html(text: str) -> Markup:
    """A docstring as HTML: paragraphs re-flowed (hard line breaks dropped), lists as lists, indented and
    ``::`` blocks as preformatted text, reST directives dropped and inline markup turned into HTML."""
    lines = inspect.cleandoc(text).splitlines()
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    out: list[str] = []
    literal_next = False
    for block in (b for b in blocks if b):
        if _DIRECTIVE.match(block[0]):
            block = block[1:]
            literal_next = True
            if not block:
                continue
        if literal_next or all(line.startswith((" ", "\t")) for line in block):
            body = inspect.cleandoc("\n".join(block))
            out.append(f'<pre class="formula">{escape(body)}</pre>')
            literal_next = False
            continue
        literal_next = block[-1].rstrip().endswith("::")
        if literal_next:
            block[-1] = block[-1].rstrip()[:-1]  # "...::" -> "...:"
        if _ITEM.match(block[0]):
            items: list[list[str]] = []
            for line in block:
                if _ITEM.match(line):
                    items.append([_ITEM.sub("", line)])
                else:
                    items[-1].append(line.strip())
            tag = "ol" if block[0][0].isdigit() else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(' '.join(i))}</li>" for i in items) + f"</{tag}>")
        else:
            out.append(f"<p>{_inline(' '.join(line.strip() for line in block))}</p>")
    return Markup("\n".join(out))


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
    """The appendix: the docstrings of the counting, dataflow, pricing and sharing modules, every counting rule,
    optimizers."""
    from energymodel.analysis import points, sharing
    from energymodel.count import ops, phases
    from energymodel.memory import levels
    from energymodel.price import pricing

    out: list[dict[str, Any]] = []
    for mod, title in ((ops, "Counting rules (energymodel.count.ops)"),
                       (phases, "Training and memory accesses (energymodel.count.phases)"),
                       (levels, "The dataflow model (energymodel.memory.levels)"),
                       (pricing, "Pricing (energymodel.price.pricing)"),
                       (points, "Sharing points and fractions (energymodel.analysis.points)"),
                       (sharing, "Partial network sharing (energymodel.analysis.sharing)")):
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
         "adds": o.adds, "state": o.state} for o in phases.OPTIMIZERS.values()
    ]
    return out
