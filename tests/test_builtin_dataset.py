"""The built-in shapes dataset: deterministic, boxes that match the drawn objects, cached TFRecords."""
import collections
import glob
import json
import os

import numpy as np
import pytest

import mobiledets_tf  # noqa: F401
import tensorflow as tf
from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

from mobiledets_tf.config import BuiltinDataConfig, ConfigError, ExperimentConfig
from mobiledets_tf.data import builtin, shapes
from mobiledets_tf.data.sources import resolve_data
from mobiledets_tf.data.label_map import read_label_map

MAX_NOISE = 12  # shapes adds uniform integer noise of amplitude <= 12


def _tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_generation_is_deterministic(tmp_path):
    paths = [shapes.generate_shapes(str(tmp_path / d), "train", 5, seed=s, image_size=96)
             for d, s in (("a", 3), ("b", 3), ("c", 4))]
    a, b, c = (_tree(os.path.dirname(p)) for p in paths)
    assert sorted(a) == ["train.json"] + [f"train/{i:06d}.jpg" for i in range(1, 6)]
    assert a == b  # byte-identical images and JSON
    assert a["train.json"] != c["train.json"]
    assert all(a[k] != c[k] for k in a if k.endswith(".jpg"))
    data = json.loads(a["train.json"])
    assert [c["name"] for c in data["categories"]] == list(shapes.CLASS_NAMES)
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5, 6]
    # The JSON boxes are the rendered objects' visible extents.
    for image in data["images"]:
        drawn = shapes.render_image(3, image["id"] - 1, 96)
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        assert [a["bbox"] for a in anns] == [o.bbox() for o in drawn.objects]
        assert [a["category_id"] for a in anns] == [o.category_id for o in drawn.objects]


def test_boxes_cover_exactly_the_drawn_objects():
    size = 128
    num_objects = 0
    for index in range(25):
        drawn = shapes.render_image(11, index, size)
        assert 1 <= len(drawn.objects) <= shapes.MAX_OBJECTS
        differs = np.abs(drawn.image.astype(int) - drawn.background.astype(int)).max(axis=-1) > MAX_NOISE
        covered = np.zeros((size, size), bool)
        for obj in drawn.objects:
            x, y, w, h = obj.bbox()
            assert 0 <= x and 0 <= y and w >= 2 and h >= 2 and x + w <= size and y + h <= size
            assert obj.area >= (1 - shapes.MAX_OCCLUDED) * obj.full_area - 1
            # Most of each box differs from the background, and so do its border rows and columns.
            box = differs[y:y + h, x:x + w]
            assert box.mean() > 0.25, (index, obj.category_id, box.mean())
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            covered[y:y + h, x:x + w] = True
            num_objects += 1
        # Outside the boxes the image is the background plus noise: nothing drawn is left out.
        assert not differs[~covered].any(), index
    assert num_objects > 50


def test_classes_are_balanced():
    counts = collections.Counter(o.category_id for i in range(150) for o in shapes.render_image(5, i, 96).objects)
    expected = sum(counts.values()) / len(shapes.CLASS_NAMES)
    assert sorted(counts) == [1, 2, 3, 4, 5, 6]
    assert all(0.7 * expected < n < 1.3 * expected for n in counts.values()), counts


def _object_sides(layout, size=160, images=40):
    """Per image: the number of objects and the longer side of each object's whole shape, in pixels."""
    counts, sides = [], []
    for index in range(images):
        objects = shapes.render_image(7, index, size, layout).objects
        counts.append(len(objects))
        for o in objects:
            ys, xs = np.nonzero(o.full_mask)
            sides.append(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)
    return np.array(counts), np.array(sides)


def test_object_layout_sets_object_sizes_and_counts():
    default_counts, default_sides = _object_sides(shapes.ObjectLayout())
    counts, sides = _object_sides(shapes.ObjectLayout(min_size=0.08, max_size=0.2, max_objects=10))
    assert default_counts.max() <= shapes.MAX_OBJECTS < counts.max() <= 10 and counts.min() >= 1
    assert counts.mean() > 1.5 * default_counts.mean()
    # A shape of size s spans at most s * sqrt(1.6 * 2) (stretched, then rotated by 45 degrees).
    assert sides.max() <= 0.2 * 160 * np.sqrt(3.2) + 2 and sides.min() >= 0.08 * 160 * 0.5
    assert np.median(sides) < 0.7 * np.median(default_sides)


@pytest.mark.parametrize("layout,pattern", [
    (dict(min_size=0.04), r"0.05 \(the largest clutter\) < min_size <= max_size <= 1, got min_size 0.04"),
    (dict(min_size=0.5, max_size=0.3), r"min_size <= max_size"),
    (dict(max_size=1.2), r"max_size <= 1"),
    (dict(max_objects=0), r"max_objects must be >= 1, got 0"),
])
def test_bad_object_layouts_are_rejected(layout, pattern):
    with pytest.raises(ValueError, match=pattern):
        shapes.ObjectLayout(**layout)


def test_config_defaults_are_the_default_layout_and_bad_layouts_are_config_errors():
    builtin_config, layout = BuiltinDataConfig(), shapes.ObjectLayout()
    assert (builtin_config.min_object_size, builtin_config.max_object_size, builtin_config.max_objects) == (
        layout.min_size, layout.max_size, layout.max_objects)
    config = ExperimentConfig()
    config.override({"data": {"builtin": {"min_object_size": 0.4, "max_object_size": 0.2}}})
    with pytest.raises(ConfigError, match=r"data.builtin.min_object_size.*min_size <= max_size"):
        resolve_data(config)


def _count_records(pattern):
    decoder = TfExampleDecoder()
    n, boxes = 0, 0
    for serialized in tf.data.TFRecordDataset(sorted(glob.glob(pattern))):
        decoded = decoder.decode(serialized)
        assert decoded["image"].shape == (96, 96, 3)
        classes = decoded["groundtruth_classes"].numpy()
        assert classes.min() >= 1 and classes.max() <= 6
        n, boxes = n + 1, boxes + len(classes)
    return n, boxes


def _stats(paths):
    return {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in paths}


def test_builtin_dataset_is_generated_once_and_regenerated_when_incomplete(tmp_path, monkeypatch):
    kwargs = dict(num_train=7, num_val=3, image_size=96, seed=1, num_shards=2)
    ds = builtin.builtin_dataset(root=str(tmp_path / "ds"), **kwargs)
    assert ds.num_classes == 6 and ds.class_names == list(shapes.CLASS_NAMES)
    assert [c.name for c in read_label_map(ds.label_map_path)] == list(shapes.CLASS_NAMES)
    assert os.path.exists(ds.label_map_path.replace(".json", ".pbtxt"))
    train_shards, val_shards = sorted(glob.glob(ds.train_pattern)), sorted(glob.glob(ds.val_pattern))
    assert len(train_shards) == 2 and len(val_shards) == 2
    with open(ds.val_annotations) as f:
        val_json = json.load(f)
    assert _count_records(ds.train_pattern)[0] == 7
    assert _count_records(ds.val_pattern) == (3, len(val_json["annotations"]))
    # Train and val are drawn from different seeds.
    train_dir = os.path.join(ds.root, "raw", "train")
    val_dir = os.path.join(ds.root, "raw", "val")
    with open(os.path.join(train_dir, "000001.jpg"), "rb") as f1, open(os.path.join(val_dir, "000001.jpg"), "rb") as f2:
        assert f1.read() != f2.read()

    files = train_shards + val_shards + [ds.val_annotations, os.path.join(ds.root, "manifest.json")]
    before = _stats(files)
    again = builtin.builtin_dataset(root=str(tmp_path / "ds"), **kwargs)
    assert again == ds and _stats(files) == before  # reused, nothing rewritten

    os.remove(os.path.join(ds.root, "manifest.json"))  # as if a generation had been killed
    builtin.builtin_dataset(root=str(tmp_path / "ds"), **kwargs)
    after = _stats(files)
    assert all(after[p] != before[p] for p in files)  # every file written anew
    assert _count_records(ds.train_pattern)[0] == 7

    monkeypatch.setenv(builtin.ENV_VAR, str(tmp_path / "cache"))
    default = builtin.builtin_dataset(**kwargs)
    assert os.path.dirname(default.root) == str(tmp_path / "cache")
    assert os.path.basename(default.root).startswith("shapes-")
    # Another object layout is another dataset, in its own folder, drawn with that layout.
    dense = builtin.builtin_dataset(**kwargs, layout=shapes.ObjectLayout(0.1, 0.3, 9))
    assert dense.root != default.root and dense.params["max_objects"] == 9
    with open(dense.val_annotations) as f:
        assert json.load(f)["info"]["object_layout"] == {"min_size": 0.1, "max_size": 0.3, "max_objects": 9}
