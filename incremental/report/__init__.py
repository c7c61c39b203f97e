"""The HTML report of a finished run (:mod:`.html`), built with ``energymodel.report``.

May import :mod:`incremental.run` and every floor below it.
"""


from energymodel._imports import lazy_exports

#: public name -> the module that defines it (imported on first use)
_EXPORTS = {
    "write_html_report": "incremental.report.html",
}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
