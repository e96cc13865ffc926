"""The built-in "shapes" detection dataset: procedurally drawn images, written as COCO JSON + JPEGs.

Six classes that differ by shape only (colour is random per object, from the whole RGB cube, and the
same palette is used for the clutter): circle, square, triangle, star, cross, ring. Each image has:
- a background: a linear gradient between two random colours, plus clutter that belongs to no class
  (random thin lines and small irregular blobs, all smaller than the smallest object);
- 1 to 5 objects, each with a random class (uniform), size (log-uniform, 12% to 60% of the image
  side; both ranges are an `ObjectLayout`, e.g. smaller and more objects for a harder set), aspect
  ratio (0.6 to 1.6 stretch), rotation and position (always fully inside the image);
  later objects may cover up to 30% of the area of earlier ones (placements that would cover more are
  re-drawn), and each object's colour is kept far from the colours under it;
- pixel noise (uniform, of a random amplitude up to +-12).

Boxes are the **visible extent**: the tight box of the object's pixels left visible after the later
objects are drawn (and `area` is the number of those pixels), so a box always encloses what the
detector can see. Boxes use COCO's [x, y, width, height] in pixels with pixel edges as coordinates
(a box [x, y, w, h] covers pixel columns x .. x+w-1).

Generation is deterministic: image `i` of a split is drawn from `numpy.random.default_rng([seed, i])`
with Pillow, so the same seed gives byte-identical JPEGs and JSON (for one Pillow/libjpeg version),
and image `i` does not depend on how many images are generated.

Layout written by `generate_shapes(output_dir, split, ...)`:

    output_dir/split/000001.jpg ...   the images (COCO image ids start at 1)
    output_dir/split.json             COCO annotations; file_name is relative to output_dir/split
"""
import dataclasses
import io
import json
import math
import os
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from mobiledets_tf import fileio
from mobiledets_tf.progress import progress_bar

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross", "ring")
GENERATOR_VERSION = 2  # bump when the drawing changes: cached copies are then regenerated
MIN_SIZE, MAX_SIZE = 0.12, 0.60        # default object size as a fraction of the image side
MIN_STRETCH, MAX_STRETCH = 0.6, 1.6     # aspect ratio (width / height before rotation)
MAX_OBJECTS = 5                         # default most objects per image
CLUTTER_SIZE = 0.05                     # largest clutter blob, as a fraction of the image side
MAX_OCCLUDED = 0.30                     # largest fraction of an object later objects may cover
MIN_COLOUR_DISTANCE = 90.0              # RGB distance between an object and the mean colour under it
JPEG_QUALITY = 92


@dataclasses.dataclass(frozen=True)
class ObjectLayout:
    """How many objects an image holds (1 to `max_objects`) and how large they are (log-uniform
    between `min_size` and `max_size`, as fractions of the image side): the dataset's difficulty."""
    min_size: float = MIN_SIZE
    max_size: float = MAX_SIZE
    max_objects: int = MAX_OBJECTS

    def __post_init__(self):
        if not CLUTTER_SIZE < self.min_size <= self.max_size <= 1.0:
            raise ValueError(f"object sizes must satisfy {CLUTTER_SIZE} (the largest clutter) < min_size <= "
                             f"max_size <= 1, got min_size {self.min_size} and max_size {self.max_size}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")


def image_dir(output_dir: str, split: str) -> str:
    """Where `generate_shapes` writes the images of `split` (the JSON file names are relative to it)."""
    return os.path.join(output_dir, split)


def _circle(n=48):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points=5, inner=0.42):
    t = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _triangle():
    t = np.array([-90.0, 30.0, 150.0]) * np.pi / 180
    p = np.stack([np.cos(t), np.sin(t)], axis=1)
    p[:, 1] += 0.25  # centre the bounding box: y spans [-0.75, 0.75]
    return p / 0.866


def _cross(half_width=0.32):
    a, b = half_width, 1.0
    return np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
                     (-b, a), (-b, -a), (-a, -a)])


# Unit shapes inside [-1, 1]^2: (outline, hole or None).
_SHAPES = {
    "circle": (_circle(), None),
    "square": (np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]), None),
    "triangle": (_triangle(), None),
    "star": (_star(), None),
    "cross": (_cross(), None),
    "ring": (_circle(), 0.55 * _circle()),
}


@dataclasses.dataclass
class ShapeObject:
    category_id: int           # 1-based index into CLASS_NAMES
    colour: Tuple[int, int, int]
    full_mask: np.ndarray      # [H, W] bool, the whole drawn shape
    visible_mask: np.ndarray   # [H, W] bool, what later objects left visible
    _full_area: int = dataclasses.field(default=None, repr=False)

    @property
    def full_area(self) -> int:
        if self._full_area is None:
            self._full_area = int(np.count_nonzero(self.full_mask))
        return self._full_area

    def bbox(self) -> List[int]:
        """Visible extent as COCO [x, y, w, h] in pixels."""
        ys, xs = np.nonzero(self.visible_mask)
        return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.visible_mask))


@dataclasses.dataclass
class ShapesImage:
    image: np.ndarray          # [H, W, 3] uint8, the final image
    background: np.ndarray     # [H, W, 3] uint8, gradient + clutter before objects and noise
    objects: List[ShapeObject]


def _random_colour(rng) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float64)


def _polygon_mask(size, outline, hole) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon([tuple(p) for p in outline], fill=255)
    if hole is not None:
        draw.polygon([tuple(p) for p in hole], fill=0)
    return np.asarray(mask) > 127


def _sample_shape(rng, name, size, layout: ObjectLayout):
    """Outline (and hole) of a randomly sized, stretched, rotated and placed shape, in pixels."""
    outline, hole = _SHAPES[name]
    extent = size * math.exp(rng.uniform(math.log(layout.min_size), math.log(layout.max_size)))
    stretch = rng.uniform(MIN_STRETCH, MAX_STRETCH)
    scale = np.array([math.sqrt(stretch), 1.0 / math.sqrt(stretch)]) * extent / 2
    theta = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    outline = (outline * scale) @ rot.T
    hole = None if hole is None else (hole * scale) @ rot.T
    lo, hi = outline.min(axis=0), outline.max(axis=0)
    span = hi - lo
    limit = size - 3.0
    if span.max() > limit:  # rotated and stretched too large for the image: shrink it
        shrink = limit / span.max()
        outline, lo, hi = outline * shrink, lo * shrink, hi * shrink
        hole = None if hole is None else hole * shrink
    centre = np.array([rng.uniform(1.0 - lo[0], size - 2.0 - hi[0]),
                       rng.uniform(1.0 - lo[1], size - 2.0 - hi[1])])
    return outline + centre, None if hole is None else hole + centre


def _background(rng, size) -> np.ndarray:
    c0, c1 = _random_colour(rng), _random_colour(rng)
    angle = rng.uniform(0, 2 * math.pi)
    coords = np.linspace(0.0, 1.0, 16)  # a 16x16 linear gradient, upsampled (exact for a linear ramp)
    t = coords[None, :] * math.cos(angle) + coords[:, None] * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    small = np.clip(c0 + t[..., None] * (c1 - c0) + 0.5, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(small, "RGB").resize((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(3, 13)):  # thin lines
        p = rng.uniform(0, size, size=4)
        draw.line([(p[0], p[1]), (p[2], p[3])], fill=tuple(int(c) for c in _random_colour(rng)),
                  width=int(rng.integers(1, 4)))
    for _ in range(rng.integers(2, 9)):  # small irregular blobs, smaller than any object
        n = int(rng.integers(5, 9))
        radius = size * rng.uniform(0.01, CLUTTER_SIZE / 2) * rng.uniform(0.6, 1.0, size=n)
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=n))
        centre = rng.uniform(0, size, size=2)
        pts = centre + np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
        draw.polygon([tuple(p) for p in pts], fill=tuple(int(c) for c in _random_colour(rng)))
    return np.asarray(canvas).copy()


def render_image(seed: int, index: int, image_size: int = 320, layout: ObjectLayout = ObjectLayout()) -> ShapesImage:
    """Draws image `index` of the dataset with `seed` (deterministic)."""
    rng = np.random.default_rng([seed, index])
    size = image_size
    background = _background(rng, size)
    canvas = background.copy()
    objects: List[ShapeObject] = []
    for _ in range(int(rng.integers(1, layout.max_objects + 1))):
        category = int(rng.integers(len(CLASS_NAMES)))
        for _attempt in range(20):
            outline, hole = _sample_shape(rng, CLASS_NAMES[category], size, layout)
            mask = _polygon_mask(size, outline, hole)
            if np.count_nonzero(mask) < 16:
                continue
            if all(np.count_nonzero(o.visible_mask & ~mask) >= (1 - MAX_OCCLUDED) * o.full_area
                   for o in objects):
                break
        else:
            continue  # no placement found that keeps earlier objects visible enough: drop this draw
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        window = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))  # the shape's box: faster indexing
        under = canvas[window][mask[window]].mean(axis=0, dtype=np.float64)
        colours = [_random_colour(rng) for _ in range(8)]
        distances = [np.linalg.norm(c - under) for c in colours]
        colour = next((c for c, d in zip(colours, distances) if d >= MIN_COLOUR_DISTANCE),
                      colours[int(np.argmax(distances))])
        canvas[window][mask[window]] = colour.astype(np.uint8)
        for o in objects:
            o.visible_mask &= ~mask
        objects.append(ShapeObject(category + 1, tuple(int(c) for c in colour), mask, mask.copy()))
    amplitude = int(rng.integers(3, 13))  # uniform integer pixel noise in [-amplitude, amplitude]
    noise = rng.integers(-amplitude, amplitude + 1, size=canvas.shape, dtype=np.int16)
    image = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    return ShapesImage(image=image, background=background, objects=objects)


def categories() -> List[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)]


def generate_shapes(output_dir: str, split: str, num_images: int, seed: int, image_size: int = 320,
                    layout: ObjectLayout = ObjectLayout()) -> str:
    """Writes `num_images` images of `split` and their COCO JSON; returns the JSON path.

    The images go to `image_dir(output_dir, split)`, the JSON (written last, atomically) to
    `output_dir/split.json`.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    images_path = image_dir(output_dir, split)
    fileio.makedirs(images_path)
    images, annotations = [], []
    for index in progress_bar(range(num_images), desc=f"drawing shapes/{split}", unit="img"):
        drawn = render_image(int(seed), index, image_size, layout)
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        out = io.BytesIO()
        Image.fromarray(drawn.image, "RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
        fileio.write_bytes_atomically(os.path.join(images_path, file_name), out.getvalue())
        images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
        for obj in drawn.objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": obj.category_id, "bbox": obj.bbox(), "area": obj.area,
                                "iscrowd": 0})
    data = {
        "info": {"description": "mobiledets_tf built-in shapes dataset", "split": split, "seed": int(seed),
                 "image_size": image_size, "generator_version": GENERATOR_VERSION,
                 "object_layout": dataclasses.asdict(layout),
                 "boxes": "visible extent of each object's pixels"},
        "images": images, "annotations": annotations, "categories": categories(),
    }
    json_path = os.path.join(output_dir, f"{split}.json")
    fileio.write_text_atomically(json_path, json.dumps(data, separators=(",", ":")) + "\n")
    return json_path
