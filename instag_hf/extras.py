"""Which optional extra a step needs, checked when the step is built, not at import.

``pip install instag_hf`` installs what tagging, the request cache and the card need; the
rest comes in extras named after their job (``setup.py``). A step that needs one calls
:func:`require` when it is built, so a missing extra is one line naming it
(``pip install 'instag_hf[normalize]'``) instead of an ``ImportError`` deep in a map.
Nothing here imports the packages it checks: finding them is enough, and cheap.
"""

from __future__ import annotations

import importlib.util

from instag_hf.errors import MissingExtraError

#: Extra -> the import names it brings that instag_hf imports.
EXTRAS: dict[str, tuple[str, ...]] = {
    "normalize": ("transformers", "torch", "nltk", "sklearn", "scipy"),
    "evaluate": ("evaluate",),
    "ray": ("ray",),
}


def missing(*modules: str) -> list[str]:
    """The import names among ``modules`` that cannot be found in this environment."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require(extra: str, *modules: str, step: str) -> None:
    """Fail with one line naming ``extra`` unless ``modules`` (default: all of it) are installed.

    Args:
        extra: The extra's name in ``setup.py`` (a key of :data:`EXTRAS`).
        modules: The import names this step needs; default every one of the extra.
        step: What needs them, for the message (``"semantic aggregation"``).

    Raises:
        MissingExtraError: One of them is not installed.

    Example:
        >>> require("normalize", "nltk", step="rule aggregation")  # doctest: +SKIP
    """
    absent = missing(*(modules or EXTRAS[extra]))
    if absent:
        raise MissingExtraError(
            f"{step} needs {', '.join(absent)}, which is not installed: pip install 'instag_hf[{extra}]'",
            extra=extra,
        )
