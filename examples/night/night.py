#!/usr/bin/env python3
"""The work of the example night (examples/night.toml), called by its do-scripts; the Python standard library only.

    night.py stats FILE                 FILE's byte statistics -> FILE.stats.tmp (in the job's working directory)
    night.py summary FIRST FILE...      the chunk's statistics combined -> FIRST without .uvh5 + .summary.json

A raw file is found in the job's working directory (the scheduler links absolute inputs there) or, for the bare
names a `session.closed` night carries, where the catalogue says this site's copy is (`obsflow locate`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

CHUNK = 8 * 1024 * 1024


def local_copy(name: str) -> Path:
    """The path of this site's copy of `name`: the working directory's link, else the catalogue's answer."""
    if Path(name).exists():
        return Path(name)
    answer = subprocess.run(["obsflow", "locate", name, "--json"], capture_output=True, text=True, check=False)
    if answer.returncode != 0:
        sys.exit(f"night.py: cannot locate {name}: {answer.stderr.strip() or answer.stdout.strip()}")
    for instance in json.loads(answer.stdout)["instances"]:
        if instance.get("local") and instance.get("path"):
            return Path(instance["path"])
    sys.exit(f"night.py: the catalogue knows no copy of {name} at this site")


def byte_statistics(path: Path) -> dict[str, object]:
    """Size, mean and standard deviation of the byte values, their Shannon entropy (bits per byte), zero bytes."""
    counts = [0] * 256
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            for value in range(256):
                counts[value] += chunk.count(value)
    size = sum(counts)
    mean = sum(v * c for v, c in enumerate(counts)) / size if size else 0.0
    variance = sum(c * (v - mean) ** 2 for v, c in enumerate(counts)) / size if size else 0.0
    entropy = -sum(c / size * math.log2(c / size) for c in counts if c) if size else 0.0
    return {"size": size, "mean": round(mean, 4), "std": round(math.sqrt(variance), 4),
            "entropy_bits_per_byte": round(entropy, 4), "zero_bytes": counts[0]}


def stats(name: str) -> None:
    """Write `<name>.stats.tmp`: the byte statistics of this site's copy of the raw file `name`."""
    source = local_copy(name)
    record = {"file": name, **byte_statistics(source)}
    Path(f"{name}.stats.tmp").write_text(json.dumps(record) + "\n")
    print(f"{name}: {record['size']} bytes, entropy {record['entropy_bits_per_byte']} bits/byte")


def summary(first: str, files: list[str]) -> None:
    """Combine the chunk's `.stats.tmp` files into `<first>.summary.json` (named after its earliest file, so it
    belongs to that observation) and declare it as the job's output."""
    names = [os.path.basename(f) for f in files]
    per_file = [json.loads(Path(f"{name}.stats.tmp").read_text()) for name in names]
    total = sum(int(r["size"]) for r in per_file)
    product = {
        "files": names,
        "total_bytes": total,
        "mean_entropy_bits_per_byte": round(sum(r["entropy_bits_per_byte"] for r in per_file) / len(per_file), 4),
        "per_file": per_file,
    }
    out = Path(first.removesuffix(".uvh5") + ".summary.json")
    out.write_text(json.dumps(product, indent=1) + "\n")
    with open(os.environ.get("OBSFLOW_OUTPUTS_FILE", os.devnull), "a") as declared:
        declared.write(f"{out}\n")
    print(f"{out}: {len(names)} files, {total} bytes")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "stats":
        stats(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "summary":
        summary(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
