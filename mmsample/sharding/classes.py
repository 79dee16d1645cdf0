"""The class order of the sharding tool: which class index each label gets, and the rule in words.

Place in the data flow: `mmsample shard` (`mmsample.sharding.table.check_rows`) orders the labels of
the input table before any shard is written; the index stored in each sample's `.cls` member and
`manifest.json`'s `classes` follow it. The rule, also printed by `mmsample shard`:

1. `--classes FILE` (`classes=`): class i is line i + 1 of the file, as given.
2. Every label an integer in 0..99,999 (CSV cells such as `7`, JSONL numbers such as `7`): class i
   is label i, the classes are 0..max(label), and classes no row has are kept (and listed as
   empty).
3. Every label an integer, some negative or >= 100,000 (`MAX_INTEGER_CLASSES`, e.g. ids used as
   labels): numeric order (class i is the i-th smallest label).
4. Otherwise: sorted order of the label text (Unicode code points: `B` before `a`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

INTEGER = re.compile(r"^[+-]?[0-9]+$")
MAX_INTEGER_CLASSES = 100_000  # an integer label above this is not taken as a class index
HOW_TO_CHOOSE = (
    "to choose the order, give --classes FILE (classes=[...]): one label a line, class i on "
    "line i + 1"
)


@dataclass
class ClassOrder:
    """The classes (index i -> name), the rule that ordered them, and the classes without rows.

    `rule` is "given", "integer", "numeric" or "text" (see the module docstring)."""

    names: list[str]
    rule: str
    empty: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the summary of `mmsample shard`: the count, the rule, the empty ones."""
        n = len(self.names)
        shown = ", ".join(self.names[:6]) + (", ..." if n > 6 else "")
        if self.rule == "given":
            text = f"{n} classes in the order given ({shown})"
        elif self.rule == "integer":
            text = f"{n} classes: every label is an integer, so class i is label i (0..{n - 1})"
        elif self.rule == "numeric":
            text = (
                f"{n} classes in numeric order ({shown}): labels are integers but not all "
                f"class indices 0..{MAX_INTEGER_CLASSES - 1}, so class i is the i-th smallest "
                f"label; {HOW_TO_CHOOSE}"
            )
        else:
            text = (
                f"{n} classes in sorted order of the label text ({shown}); class i is the i-th; "
                f"{HOW_TO_CHOOSE}"
            )
        if self.empty:
            more = f", ... ({len(self.empty)} in all)" if len(self.empty) > 10 else ""
            text += f"; empty (no row has the label): {', '.join(self.empty[:10])}{more}"
        return text


def canonical_label(label: str, order: ClassOrder) -> str:
    """The class name of `label` under `order` (`07` is class `7` when labels are integers)."""
    if order.rule in ("integer", "numeric") and INTEGER.match(label):
        return str(int(label))
    return label


def order_classes(labels: Iterable[str], classes: Sequence[str] | None = None) -> ClassOrder:
    """The class order of a table with these row labels ("" = missing, ignored), or the given
    `classes`."""
    present = {label for label in labels if label}
    if classes is not None:
        names = list(classes)
        return ClassOrder(names, "given", [c for c in names if c not in present])
    if present and all(INTEGER.match(label) for label in present):
        values = sorted({int(label) for label in present})
        if values[0] >= 0 and values[-1] < MAX_INTEGER_CLASSES:
            names = [str(i) for i in range(values[-1] + 1)]
            have = {str(v) for v in values}
            return ClassOrder(names, "integer", [c for c in names if c not in have])
        return ClassOrder([str(v) for v in values], "numeric")
    return ClassOrder(sorted(present), "text")
