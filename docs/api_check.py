"""After `mkdocs build`: is every public name of the API in the built reference?

Usage: python docs/api_check.py SITE_DIR

Fails (exit 1) when a name of ``spikegrad.__all__`` or of a documented module's ``__all__`` has no
entry in the API pages. Prints, as a report that does not fail, the public functions, classes and
methods without a docstring and the parameters without a type annotation.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

MODULES = ("spikegrad.neurons", "spikegrad.functional", "spikegrad.surrogates", "spikegrad.encoding",
           "spikegrad.losses", "spikegrad.regularizers", "spikegrad.models", "spikegrad.training", "spikegrad.data",
           "spikegrad.temporal", "spikegrad.hardware", "spikegrad.sharpening", "spikegrad.conversion",
           "spikegrad.interop", "spikegrad.sweep", "spikegrad.kernels", "spikegrad.plots", "spikegrad.malloc")


def built_ids(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site / "api").rglob("*.html"):
        ids.update(re.findall(r'id="(spikegrad[\w.]*)"', page.read_text(encoding="utf-8")))
    return ids


def canonical(obj) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else None


def main() -> int:
    ids = built_ids(Path(sys.argv[1]))
    missing, undocumented, unannotated = [], [], []
    seen: set[int] = set()
    for name in ("spikegrad", *MODULES):
        module = importlib.import_module(name)
        for export in getattr(module, "__all__", ()):
            if export == "__version__":
                continue
            obj = getattr(module, export)
            paths = {f"{name}.{export}", canonical(obj)} - {None}
            if inspect.ismodule(obj):
                paths = {obj.__name__}
            if canonical(obj) is None:  # a constant: rendered where another documented module holds it too
                paths |= {f"{m}.{export}" for m in MODULES
                          if getattr(importlib.import_module(m), export, None) is obj}
            if not paths & ids:
                missing.append(f"{name}.{export}")
            if id(obj) in seen or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            seen.add(id(obj))
            members = [(export, obj)]
            if inspect.isclass(obj):
                members += [(f"{export}.{k}", v) for k, v in vars(obj).items()
                            if not k.startswith("_") and inspect.isfunction(v)]
            for label, member in members:
                if not inspect.getdoc(member):
                    undocumented.append(f"{name}.{label}")
                target = member.__init__ if inspect.isclass(member) else member
                try:
                    params = inspect.signature(target).parameters.values()
                except (TypeError, ValueError):
                    continue
                bare = [p.name for p in params if p.annotation is inspect.Parameter.empty
                        and p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
                if bare and not (inspect.isclass(member) and member.__init__ is object.__init__):
                    unannotated.append(f"{name}.{label}({', '.join(bare)})")
    if undocumented:
        print(f"api_check: {len(undocumented)} public objects without a docstring:")
        print("".join(f"  {u}\n" for u in undocumented), end="")
    if unannotated:
        print(f"api_check: {len(unannotated)} public signatures with unannotated parameters:")
        print("".join(f"  {u}\n" for u in unannotated), end="")
    if missing:
        print(f"api_check: ERROR: {len(missing)} public names are not in the API reference:", file=sys.stderr)
        print("".join(f"  {m}\n" for m in missing), end="", file=sys.stderr)
        return 1
    print("api_check: every public name is in the API reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
