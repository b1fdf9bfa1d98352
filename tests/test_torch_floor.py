"""The torch floor declared in pyproject.toml is the one the code needs.

NEWER_APIS lists every torch API newer than torch 2.0 that the package calls, with the first release that has
it. The first versions come from the versioned PyTorch documentation (the API is in that release's docs and
not in the one before) and, for the gradient-norm pair, the pull request that added them:

- torch.compiler.assume_constant_result: in the torch.compiler API list of the 2.1 docs.
- torch.compiler.is_compiling: in torch.compiler.__all__ of 2.3, not of 2.2.
- torch.library.custom_op and CustomOpDef.register_fake / register_autograd: the 2.4 torch.library docs
  ("Creating new custom ops in Python"); the 2.2 and 2.3 docs only have define / impl / impl_abstract.
- torch.nn.utils.get_total_norm and clip_grads_with_norm_: pytorch/pytorch#139662 (merged November 2024),
  first released in 2.6.

The test checks that (a) each API exists in the installed torch, (b) the declared floor is at least the newest
first version in the table, (c) the package still calls each API of the table (so the table stays true), and
(d) no API of a short list of known newer names is called without being in the table.
"""

import importlib
import re
from pathlib import Path

import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]

# dotted path, first torch release with it, how the package calls it (a regex over its source)
NEWER_APIS = [
    ("torch.compiler.assume_constant_result", (2, 1), r"torch\.compiler\.assume_constant_result\b"),
    ("torch.compiler.is_compiling", (2, 3), r"torch\.compiler\.is_compiling\b"),
    ("torch.library.custom_op", (2, 4), r"torch\.library\.custom_op\b"),
    ("torch.library.CustomOpDef.register_fake", (2, 4), r"\.register_fake\b"),
    ("torch.library.CustomOpDef.register_autograd", (2, 4), r"\.register_autograd\b"),
    ("torch.nn.utils.get_total_norm", (2, 6), r"\bget_total_norm\b"),
    ("torch.nn.utils.clip_grads_with_norm_", (2, 6), r"\bclip_grads_with_norm_"),
]

# APIs added after torch 2.3 that code could easily start to use: a use must be in NEWER_APIS (by path)
KNOWN_NEWER = [
    ("torch.library.custom_op", r"\bcustom_op\b"),                          # 2.4
    ("torch.library.CustomOpDef.register_fake", r"\bregister_fake\b"),      # 2.4
    ("torch.library.CustomOpDef.register_autograd", r"\bregister_autograd\b"),  # 2.4
    ("torch.library.register_kernel", r"\bregister_kernel\b"),              # 2.4
    ("torch.library.register_vmap", r"\bregister_vmap\b"),                  # 2.4
    ("torch.library.opcheck", r"\bopcheck\b"),                              # 2.4
    ("torch.nn.functional.rms_norm", r"\brms_norm\b|\bRMSNorm\b"),          # 2.4
    ("torch.serialization.add_safe_globals", r"\badd_safe_globals\b|\bsafe_globals\b"),  # 2.4 / 2.5
    ("torch.library.infer_schema", r"\binfer_schema\b"),                    # 2.5
    ("torch.compiler.substitute_in_graph", r"\bsubstitute_in_graph\b"),     # 2.5
    ("torch.nn.attention.flex_attention", r"\bflex_attention\b"),           # 2.5
    ("torch.nn.Buffer", r"\bnn\.Buffer\b"),                                 # 2.5
    ("torch.library.triton_op", r"\btriton_op\b|\bwrap_triton\b"),          # 2.6
    ("torch.compiler.set_stance", r"\bset_stance\b"),                       # 2.6
    ("torch.accelerator", r"\btorch\.accelerator\b"),                       # 2.6
    ("torch.nn.utils.get_total_norm", r"\bget_total_norm\b"),               # 2.6
    ("torch.nn.utils.clip_grads_with_norm_", r"\bclip_grads_with_norm_"),   # 2.6
]


def resolve(path: str):
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for name in parts[k:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"\d+(?:\.\d+)*", text).group(0).split("."))


def declared_floor() -> tuple[int, ...]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = [m.group(1) for d in deps if (m := re.fullmatch(r"torch\s*>=\s*([0-9.]+)(?:\s*,.*)?", d.strip()))]
    assert len(floors) == 1, f"one 'torch>=X' requirement expected in pyproject.toml, got {deps}"
    return version(floors[0])


def package_source() -> str:
    files = sorted((REPO / "spikegrad").rglob("*.py"))
    assert files
    return "\n".join(f.read_text() for f in files)


@pytest.mark.parametrize("path", [row[0] for row in NEWER_APIS])
def test_each_api_exists_in_the_installed_torch(path):
    assert callable(resolve(path)), path


def test_declared_floor_covers_the_newest_api():
    floor = declared_floor()
    newest = max(NEWER_APIS, key=lambda row: row[1])
    assert floor >= newest[1], (f"pyproject.toml says torch>={'.'.join(map(str, floor))}, but {newest[0]} needs "
                                f"{'.'.join(map(str, newest[1]))}")
    assert version(torch.__version__) >= floor  # this environment meets it


def test_the_table_lists_apis_the_package_calls():
    source = package_source()
    unused = [path for path, _, pattern in NEWER_APIS if not re.search(pattern, source)]
    assert not unused, f"no longer used (drop them from NEWER_APIS and maybe lower the floor): {unused}"


def test_known_newer_apis_are_in_the_table_when_used():
    source, listed = package_source(), {row[0] for row in NEWER_APIS}
    missing = [path for path, pattern in KNOWN_NEWER if re.search(pattern, source) and path not in listed]
    assert not missing, f"used but not in NEWER_APIS (add them with their first torch version): {missing}"
