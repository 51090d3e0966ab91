r"""A data card of prepared folders: shapes per source (ok, bad, excluded by train/filter_shapes.py,
in the validation split), licences and the package each came from, as a Markdown table (and JSON).

    python train/data_card.py --data data/train --json data/train/card.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from vat import data


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="a prepared folder, or a folder of them")
    p.add_argument("--json", type=Path, default=None, help="also write the counts here")
    return p.parse_args(argv)


def source_of(record: dict) -> str:
    """The row a record counts in: its source, augmented copies apart."""
    return f"{record['source']} (augmented copies)" if record.get("augment_of") else record["source"]


def card(directory: str | Path) -> dict[str, dict]:
    """Counts per source of every record under `directory`."""
    excluded = data.excluded_ids(directory)
    rows: dict[str, dict] = defaultdict(lambda: {"ok": 0, "bad": 0, "excluded": 0, "validation": 0,
                                                 "licences": Counter(), "packages": Counter()})
    for path in data.list_chunks(directory):
        for record in data.chunk_records(path):
            row = rows[source_of(record)]
            if not record["ok"]:
                row["bad"] += 1
                continue
            row["ok"] += 1
            row["excluded"] += record["id"] in excluded
            row["validation"] += data.in_validation(record["id"])
            row["licences"][record.get("licence") or "unknown"] += 1
            row["packages"][record.get("package") or record.get("library") or record["source"]] += 1
    return {name: {**row, "licences": dict(row["licences"].most_common()),
                   "packages": dict(row["packages"].most_common())} for name, row in sorted(rows.items())}


def markdown(rows: dict[str, dict]) -> str:
    lines = ["| source | shapes | unreadable | excluded (IoU filter) | validation | licences (shapes) |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        licences = ", ".join(f"{k} ({v:,})" for k, v in list(row["licences"].items())[:4])
        if len(row["licences"]) > 4:
            licences += f", {len(row['licences']) - 4} more"
        lines.append(f"| {name} | {row['ok']:,} | {row['bad']:,} | {row['excluded']:,} | {row['validation']:,} "
                     f"| {licences} |")
    total = {k: sum(r[k] for r in rows.values()) for k in ("ok", "bad", "excluded", "validation")}
    lines.append(f"| **total** | **{total['ok']:,}** | {total['bad']:,} | {total['excluded']:,} | "
                 f"{total['validation']:,} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    rows = card(args.data)
    if not rows:
        raise SystemExit(f"{args.data} holds no shards of train/prepare_data.py")
    print(markdown(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
