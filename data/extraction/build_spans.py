"""Turn the hand-annotated passages (``passages_*.txt``) into ``spans.jsonl``.

Markup, one passage per line: ``[T job title]``, ``[S skill]``, ``[K task]``, ``[P person]``;
``# cat: NAME`` sets the category of the lines below it, other ``#`` lines are comments.
Each output line: ``{"id", "category", "text", "spans": [{"label", "start", "end", "text"}]}`` with
character offsets into ``text`` (``text[start:end] == span text``).

Run: ``python data/extraction/build_spans.py`` (rewrites ``spans.jsonl`` beside this file).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABELS = {"T": "job title", "S": "skill", "K": "task", "P": "person"}
_MARK = re.compile(r"\[([TSKP]) ([^\[\]]+)\]")


def parse_line(line: str) -> tuple[str, list[dict[str, object]]]:
    text_parts: list[str] = []
    spans: list[dict[str, object]] = []
    pos = 0
    length = 0
    for match in _MARK.finditer(line):
        before = line[pos : match.start()]
        text_parts.append(before)
        length += len(before)
        surface = match.group(2)
        spans.append({"label": LABELS[match.group(1)], "start": length, "end": length + len(surface), "text": surface})
        text_parts.append(surface)
        length += len(surface)
        pos = match.end()
    text_parts.append(line[pos:])
    text = "".join(text_parts)
    if "[" in text or "]" in text:
        raise ValueError(f"unbalanced markup in: {line!r}")
    return text, spans


def build(paths: list[Path]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in paths:
        category = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("# cat:"):
                category = line.removeprefix("# cat:").strip()
                continue
            if line.startswith("#"):
                continue
            text, spans = parse_line(line)
            rows.append({"id": f"{path.stem}-{len(rows):03d}", "category": category, "text": text, "spans": spans})
    return rows


def main() -> int:
    rows = build(sorted(HERE.glob("passages_*.txt")))
    out = HERE / "spans.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} examples, {sum(len(r['spans']) for r in rows)} spans -> {out}")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
