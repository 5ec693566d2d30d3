"""docs/predict_demo.png: blurred | restored (predict.py) | sharp of one full frame, 2x nearest.

python docs/predict_figure.py <predict out_dir> <dataset root> docs/predict_demo.png <clip> <stem>
(the commands that made the committed figure are in README.md, "Deblur your own footage").
"""
import sys
from pathlib import Path
from PIL import Image, ImageDraw

pred_dir, data_root, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
clip, stem = sys.argv[4], sys.argv[5]
panels = [("blurred input", data_root / "GOPRO_Large/test_GT_blurred" / clip / f"{stem}.png"),
          ("restored (predict.py)", pred_dir / clip / f"{stem}.png"),
          ("sharp (not used)", data_root / "GOPRO_Large/test_GT" / clip / f"{stem}.png")]
images = [Image.open(p).convert("RGB") for _, p in panels]
w, h = images[0].size
scale, gap, top = 2, 6, 18
strip = Image.new("RGB", (3 * w * scale + 2 * gap, h * scale + top), "white")
draw = ImageDraw.Draw(strip)
for i, ((label, _), im) in enumerate(zip(panels, images)):
    x = i * (w * scale + gap)
    strip.paste(im.resize((w * scale, h * scale), Image.NEAREST), (x, top))
    draw.text((x + 4, 3), label, fill="black")
strip.save(out, optimize=True)
print(out, strip.size)
