"""Make stores.geojson from the Helsinki shop footprints (© OpenStreetMap contributors, ODbL).

    python scripts/make_stores.py tests/data/helsinki_store_polygons.geojson [OUTPUT]

OUTPUT defaults to the repository's stores.geojson, wherever the command is run from. It
is replaced whole once the new one is written (never left empty or half written).

Each footprint gets a stable id from its OSM element (``osm-way-88777732``), a name (the
building's, else its shops' names), ``tags`` (the shop kinds) and the Helsinki time zone.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "stores.geojson"
ATTRIBUTION = "© OpenStreetMap contributors, ODbL 1.0 (https://www.openstreetmap.org/copyright)"


def store_of(feature: dict[str, Any]) -> dict[str, Any]:
    props = feature["properties"]
    store_id = f"osm-{props['osm_type']}-{props['osm_id']}"
    names = [n for n in props.get("shop_names") or [] if n]
    return {
        "type": "Feature",
        "id": store_id,
        "properties": {
            "name": props.get("name") or ", ".join(names[:3]) or f"Shop building {props['osm_id']}",
            "tags": sorted({k for k in props.get("shop_kinds") or [] if k != "yes"}),
            "timezone": "Europe/Helsinki",
            "osm_id": props["osm_id"],
            "shops": names,
        },
        "geometry": feature["geometry"],
    }


def main(source: str, output: Path = DEFAULT_OUTPUT) -> None:
    with Path(source).open(encoding="utf-8") as f:
        doc = json.load(f)
    stores = sorted((store_of(f) for f in doc["features"]), key=lambda s: s["id"])
    out = {"type": "FeatureCollection", "attribution": ATTRIBUTION, "features": stores}
    write_atomically(output, json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"{output}: {len(stores)} stores", file=sys.stderr)


def write_atomically(path: Path, text: str) -> None:
    """``path`` holds either its old content or all of ``text``, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        Path(tmp).chmod(0o644)  # mkstemp's 0600 would hide the file from the service's user
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink()
        raise


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: python {sys.argv[0]} SOURCE [OUTPUT]")
    main(sys.argv[1], *(Path(a) for a in sys.argv[2:]))
