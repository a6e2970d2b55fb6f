"""Print a benchmark's rows as a Markdown table (what docs/ quotes), and keep them as JSON."""
import json
from typing import List, Optional, Sequence


def emit(header: Sequence[str], rows: List[Sequence[str]], json_path: Optional[str] = None,
         quiet: bool = False) -> None:
    """Print the table (unless quiet) and write the rows to json_path, if given."""
    if not quiet:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"header": list(header), "rows": [list(r) for r in rows]}, f, indent=1)
