"""Make stores.geojson from the Helsinki shop footprints (© OpenStreetMap contributors, ODbL).

    python scripts/make_stores.py ../shared/data/helsinki_store_polygons.geojson > stores.geojson

Each footprint gets a stable id from its OSM element (``osm-way-88777732``), a name (the
building's, else its shops' names), ``tags`` (the shop kinds) and the Helsinki time zone.
"""

from __future__ import annotations

import json
import sys
from typing import Any

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


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        source = json.load(f)
    stores = sorted((store_of(f) for f in source["features"]), key=lambda s: s["id"])
    out = {"type": "FeatureCollection", "attribution": ATTRIBUTION, "features": stores}
    json.dump(out, sys.stdout, ensure_ascii=False, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
