"""Copy a report's figures into docs/science/gallery/ as small PNGs (900 px wide at most, 8-bit palette).

    python docs/science/gallery_images.py REPORT_DIR STEM [STEM ...]

STEM is a figure's file stem in REPORT_DIR/figures (e.g. paper000_fig03_sharpness_jacobian); the copy keeps the
stem. gallery.md shows them with the commands that made them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

WIDTH = 900
OUT = Path(__file__).resolve().parent / "gallery"


def main(argv) -> None:
    report, stems = Path(argv[0]), argv[1:]
    OUT.mkdir(exist_ok=True)
    for stem in stems:
        image = Image.open(report / "figures" / f"{stem}.png").convert("RGB")
        if image.width > WIDTH:
            image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
        image.quantize(colors=128).save(OUT / f"{stem}.png", optimize=True)
        print(f"{OUT / stem}.png: {(OUT / f'{stem}.png').stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(sys.argv[1:])
