"""Griffe extension for the API reference: the docstrings are written with Sphinx roles and
reStructuredText literals; this turns them into the Markdown that mkdocstrings renders.

* ``:func:`name``` (and ``:class:``, ``:mod:``, ``:meth:``, ``:attr:``, ``:data:``, ``:exc:``)
  becomes a cross-reference ``[`name`][full.path]`` when the name resolves, in the scope of the
  object whose docstring it is, to an object the reference documents (a public name under
  :data:`DOCUMENTED`); otherwise a plain code span. A leading ``~`` shows only the last component.
* A paragraph ending in ``::`` ends in ``:``, and the indented RST literal block after it becomes a
  fenced code block.
* RST's escaped space (``\\ ``, as in ````nn.Module````\\ s) is dropped.
* Simple RST tables (``====  ====`` rules) become Markdown tables.
* ``extra_repr`` (``nn.Module``'s repr hook) and instance attributes without a docstring (``self.x = x`` in ``__init__``) are left out: they
  repeat the constructor's arguments, which are documented.

Nothing here changes the code or what the docstrings say.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# Modules whose public names the API reference renders (docs/api/*.md).
DOCUMENTED = (
    "spikegrad.neurons", "spikegrad.functional", "spikegrad.surrogates", "spikegrad.encoding", "spikegrad.losses",
    "spikegrad.regularizers", "spikegrad.models", "spikegrad.training", "spikegrad.data", "spikegrad.temporal",
    "spikegrad.hardware", "spikegrad.sharpening", "spikegrad.conversion", "spikegrad.interop", "spikegrad.sweep",
    "spikegrad.plots", "spikegrad.kernels", "spikegrad.malloc",
)

ROLE = re.compile(r":(?:py:)?(func|class|mod|meth|attr|data|exc|obj|const):`([^`]+)`")


# Single objects rendered outside their module's page.
EXTRA = ("spikegrad.kernels.events.SpikeTimes",)


def _rendered(pkg: griffe.Module) -> set[str]:
    """Paths of everything the API pages render: each documented module, its public members
    (re-exports under both names) and their public members, recursively."""
    out: set[str] = {"spikegrad"}

    def add(obj: griffe.Object | griffe.Alias, name_path: str) -> None:
        out.add(name_path)
        try:
            target = obj.final_target if obj.is_alias else obj
        except Exception:  # noqa: BLE001 - an alias to something outside the package
            return
        out.add(target.path)
        if target.is_class:
            for name, member in target.members.items():
                if not name.startswith("_"):
                    add(member, f"{name_path}.{name}")
                    add(member, f"{target.path}.{name}")

    for path in DOCUMENTED:
        mod = pkg[path.removeprefix("spikegrad.")]
        out.add(mod.path)
        for name, member in mod.members.items():
            if member.is_public and not (member.is_alias and member.is_module) and not member.is_module:
                add(member, f"{mod.path}.{name}")
    for path in EXTRA:
        add(pkg[path.removeprefix("spikegrad.")], path)
    return out


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` as seen from ``obj``, or None."""
    if target.startswith("spikegrad"):
        return target
    if target.startswith("."):  # relative module, e.g. :mod:`.activations` in a package docstring
        module = obj if obj.is_module else obj.module
        base = module.path if module.is_init_module else module.path.rsplit(".", 1)[0]
        return f"{base}.{target.lstrip('.')}"
    head, _, rest = target.partition(".")
    scope = obj
    while scope is not None:
        try:
            full = scope.resolve(head)
        except Exception:  # noqa: BLE001 - griffe raises NameResolutionError and friends
            scope = scope.parent
            continue
        return f"{full}.{rest}" if rest else full
    return None


def _roles(obj: griffe.Object, rendered: set[str], text: str) -> str:
    def link(m: re.Match) -> str:
        target = m.group(2).strip()
        if "<" in target and target.endswith(">"):  # `text <target>` form
            target = target[target.index("<") + 1:-1]
        short = target.startswith("~")
        target = target.lstrip("~")
        shown = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
        if m.group(1) in ("func", "meth") and not shown.endswith(")"):
            shown += "()"
        full = _resolve(obj, target)
        if full is None or full not in rendered:
            return f"`{shown}`"
        return f"[`{shown}`][{full}]"

    return ROLE.sub(link, text)


def _rst_table(lines: list[str]) -> list[str]:
    """Markdown for one simple RST table (its lines, rules included)."""
    rule = lines[0]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", rule)]
    rows: list[list[str]] = []
    rules = 0
    for line in lines:
        if re.fullmatch(r"\s*=[= ]*", line):
            rules += 1
            continue
        cells = [line[a:(spans[k + 1][0] if k + 1 < len(spans) else len(line))].strip().replace("|", "\\|")
                 for k, (a, _) in enumerate(spans)]
        if rows and not cells[0] and rules >= 2:  # a continuation line of the previous row
            rows[-1] = [f"{p} {c}".strip() for p, c in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    if not rows:
        return lines
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(spans)]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return ["", *out, ""]


def _rst_tables(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    k = 0
    while k < len(lines):
        if re.fullmatch(r"=+( +=+)+\s*", lines[k]):
            # a simple table: rule, header, rule, rows..., rule
            end = k + 1
            n_rules = 1
            while end < len(lines) and n_rules < 3:
                if re.fullmatch(r"=+( +=+)+\s*", lines[end]):
                    n_rules += 1
                end += 1
            if n_rules == 3:
                out += _rst_table(lines[k:end])
                k = end
                continue
        out.append(lines[k])
        k += 1
    return "\n".join(out)


ARGS = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes|Other Parameters):\s*$")


def _split_inline(line: str, indent: int, names: set[str]) -> list[str]:
    """``a: text. b: more`` (two entries on one line) -> two lines, where ``b`` is a known name."""
    parts = [line]
    while True:
        m = None
        for m_ in re.finditer(r"(?<=[.)`]) ([A-Za-z_]\w*(?:, [A-Za-z_]\w*)*): ", parts[-1]):
            if all(n in names for n in m_.group(1).split(", ")):
                m = m_
                break
        if m is None:
            return parts
        last = parts.pop()
        parts += [last[:m.start()], " " * indent + last[m.start() + 1:]]


def _split_names(text: str, names: set[str] = frozenset()) -> str:
    """In an ``Args:`` section, ``a, b: description`` becomes one entry per name (griffe's Google
    parser takes one name per entry; the description is repeated), and ``a: text. b: text`` (two
    entries on one line, ``b`` a parameter or member of the object) becomes two entries."""
    lines = text.split("\n")
    out_lines: list[str] = []
    in_args, base = False, 0
    for line in lines:  # first pass: one entry per line
        m = ARGS.match(line)
        indent = len(line) - len(line.lstrip())
        if m:
            in_args, base = True, len(m.group(1))
        elif line.strip() and indent <= base:
            in_args = False
        if in_args and not m and re.match(r"^\s*[A-Za-z_]\w*(?:, [A-Za-z_]\w*)*(?: \([^)]*\))?: ", line):
            out_lines += _split_inline(line, indent, names)
        else:
            out_lines.append(line)
    lines = out_lines
    out: list[str] = []
    k = 0
    while k < len(lines):
        out.append(lines[k])
        m = ARGS.match(lines[k])
        k += 1
        if not m:
            continue
        base = len(m.group(1))
        entry_indent = None
        while k < len(lines):
            line = lines[k]
            indent = len(line) - len(line.lstrip())
            if line.strip() and indent <= base:
                break  # the section ended
            if entry_indent is None and line.strip():
                entry_indent = indent
            e = re.match(r"^(\s*)([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)+)\s*(\([^)]*\))?:(.*)$", line)
            if e and len(e.group(1)) == entry_indent:
                block = [e.group(4)]
                k += 1
                while k < len(lines) and lines[k].strip() and \
                        len(lines[k]) - len(lines[k].lstrip()) > entry_indent:
                    block.append(lines[k])
                    k += 1
                for name in re.split(r"\s*,\s*", e.group(2)):
                    out.append(f"{e.group(1)}{name}{e.group(3) or ''}:{block[0]}")
                    out.extend(block[1:])
                continue
            out.append(line)
            k += 1
    return "\n".join(out)


def _literal_blocks(text: str) -> str:
    """``paragraph::`` + blank line + indented block (RST) -> ``paragraph:`` + a fenced code block.

    Fenced, not indented: griffe's Google parser reads a line ending in ``:`` followed by an
    indented block as an admonition."""
    lines = text.split("\n")
    out: list[str] = []
    k = 0
    while k < len(lines):
        line = lines[k]
        m = re.match(r"^(\s*)(.*?)(\s*)::\s*$", line)
        if not m:
            out.append(line)
            k += 1
            continue
        indent = len(m.group(1))
        if m.group(2):
            out.append(f"{m.group(1)}{m.group(2)}:")
        j = k + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        block = []
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
        if not block:
            k += 1
            continue
        cut = min(len(b) - len(b.lstrip()) for b in block if b.strip())
        pad = " " * indent
        out += ["", f"{pad}```text", *[f"{pad}{b[cut:]}" if b.strip() else "" for b in block], f"{pad}```", ""]
        k = j
    return "\n".join(out)


def _names(obj: griffe.Object) -> set[str]:
    """Parameter names of a function (or of a class's ``__init__``) and member names of a class."""
    names: set[str] = set()
    target = obj.members.get("__init__") if obj.is_class else obj
    if target is not None and not target.is_alias and target.is_function:
        names |= {p.name for p in target.parameters}
    if obj.is_class:
        names |= set(obj.members)
    return names


class SphinxToMarkdown(griffe.Extension):
    """Rewrites every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        seen: set[str] = set()
        rendered = _rendered(pkg)

        def walk(obj: griffe.Object) -> None:
            if obj.path in seen:
                return
            seen.add(obj.path)
            if obj.docstring is not None:
                text = _rst_tables(obj.docstring.value.replace("\\ ", ""))  # RST's escaped space: ``x``\\ s
                text = _literal_blocks(_split_names(text, _names(obj)))
                obj.docstring.value = _roles(obj, rendered, text)
            init = obj.members.get("__init__") if obj.is_class else None
            if init is not None and not init.is_alias and init.lineno and init.endlineno:
                # attributes set in __init__ without a docstring repeat the constructor's arguments
                for name in [n for n, m in obj.members.items() if not m.is_alias and m.is_attribute
                             and m.docstring is None and m.lineno and init.lineno <= m.lineno <= init.endlineno]:
                    del obj.members[name]
            if obj.is_class and "extra_repr" in obj.members:  # nn.Module's repr hook, not API
                del obj.members["extra_repr"]
            for member in list(obj.members.values()):
                if not member.is_alias:
                    walk(member)

        walk(pkg)
