"""COCO -> TFRecord conversion on a small dataset with every kind of problem, built here with Pillow."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mobiledets_tf  # noqa: F401
import tensorflow as tf
from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

from conftest import REPO_ROOT
from mobiledets_tf.data import coco_to_tfrecords
from mobiledets_tf.data import label_map as label_map_lib
from mobiledets_tf.data.example_format import make_detection_example
from mobiledets_tf.data.coco_to_tfrecords import (ConversionError, DatasetFormatError,
                                                  convert_coco_to_tfrecords)

W, H = 64, 48
CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 5, "name": "it's odd"}]


def _noise_image(mode="RGB", size=(W, H), seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode)


def _save(image, path, fmt, **kwargs):
    image.save(path, format=fmt, **kwargs)


def _build_dataset(root):
    """Images 1..10 and annotations covering every problem kind; returns (json path, image dir)."""
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir)
    p = lambda name: os.path.join(images_dir, name)  # noqa: E731
    _save(_noise_image(), p("good.jpg"), "JPEG", quality=90)
    good = io.BytesIO()
    _noise_image(seed=1).save(good, format="JPEG", quality=90)
    with open(p("corrupt.jpg"), "wb") as f:
        f.write(good.getvalue()[: len(good.getvalue()) // 2])  # truncated JPEG
    with open(p("notimage.jpg"), "w") as f:
        f.write("this is not an image\n")
    _save(_noise_image(seed=2), p("image.png"), "PNG")
    _save(_noise_image("L", seed=3), p("gray.jpg"), "JPEG")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[:, : W // 2] = (200, 10, 10, 255)  # left half opaque red, right half fully transparent
    _save(Image.fromarray(rgba, "RGBA"), p("rgba.png"), "PNG")
    _save(_noise_image(seed=4).convert("P", palette=Image.ADAPTIVE, colors=16), p("palette.png"), "PNG")
    _save(_noise_image(seed=5), p("empty.jpg"), "JPEG")
    _save(_noise_image(seed=6), p("mismatch.jpg"), "JPEG")
    names = ["good.jpg", "corrupt.jpg", "notimage.jpg", "image.png", "gray.jpg", "rgba.png",
             "palette.png", "empty.jpg", "missing.jpg", "mismatch.jpg"]
    images = [{"id": i + 1, "file_name": n, "width": W, "height": H} for i, n in enumerate(names)]
    images[9].update(width=100, height=100)  # mismatch.jpg is really 64x48
    images.reverse()  # the converter sorts by id
    ann = lambda aid, iid, cat, bbox, **kw: {"id": aid, "image_id": iid, "category_id": cat,  # noqa: E731
                                              "bbox": bbox, "area": float(bbox[2] * bbox[3]), "iscrowd": 0, **kw}
    annotations = [
        ann(101, 1, 1, [4, 6, 20, 10]),
        ann(102, 1, 2, [50, 30, 30, 30]),          # partly outside: clipped to [50, 30, 14, 18]
        ann(103, 1, 1, [10, 10, 0, 5]),             # zero area
        ann(104, 1, 99, [1, 1, 5, 5]),              # unknown category
        ann(105, 1, 2, [0, 0, 30, 30], iscrowd=1),  # crowd
        ann(201, 2, 1, [1, 1, 5, 5]),               # on the corrupt image
        ann(401, 4, 5, [8, 8, 16, 16]),
        ann(501, 5, 1, [0, 0, W, H]),
        ann(601, 6, 2, [2, 2, 10, 10]),
        ann(1001, 10, 1, [3, 4, 5, 6]),
        ann(999, 77, 1, [1, 1, 5, 5]),              # image 77 does not exist
    ]
    path = os.path.join(root, "instances.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
    return path, images_dir


def _files(directory):
    return sorted(os.listdir(directory))


def _decode_records(paths):
    decoder = TfExampleDecoder()
    records = {}
    for shard, path in enumerate(paths):
        for serialized in tf.data.TFRecordDataset(path):
            decoded = decoder.decode(serialized)
            example = tf.train.Example.FromString(serialized.numpy())
            record = {k: v.numpy() for k, v in decoded.items()}
            record["shard"] = shard
            record["encoded"] = example.features.feature["image/encoded"].bytes_list.value[0]
            record["format"] = example.features.feature["image/format"].bytes_list.value[0]
            record["texts"] = list(example.features.feature["image/object/class/text"].bytes_list.value)
            records[int(record["source_id"])] = record
    return records


@pytest.fixture
def dataset(tmp_path):
    return _build_dataset(str(tmp_path))


def test_errors_fail_the_conversion_and_name_every_offender(dataset, tmp_path):
    annotations, images = dataset
    out_dir = tmp_path / "out"
    with pytest.raises(ConversionError) as info:
        convert_coco_to_tfrecords(annotations, images, str(out_dir / "train"), num_shards=2)
    message = str(info.value)
    assert message.startswith("FAILED")
    for needle in ("corrupt.jpg (image 2)", "notimage.jpg (image 3)", "missing.jpg (image 9)",
                   "annotation 103", "annotation 104", "annotation 999", "unknown_category",
                   "zero_area_box", "unknown_image_id", "box_outside_image", "--skip_invalid"):
        assert needle in message, needle
    assert "truncated" in message and "not an image" in message and "file not found" in message
    assert info.value.report.counts()["unreadable_image"] == 3
    assert _files(out_dir) == []  # nothing under a final name, no temporary file left


def test_skip_invalid_writes_checked_records(dataset, tmp_path):
    annotations, images = dataset
    prefix = str(tmp_path / "out" / "train")
    report = convert_coco_to_tfrecords(annotations, images, prefix, num_shards=2, skip_invalid=True)
    assert report.counts() == {
        "unreadable_image": 3, "zero_area_box": 1, "invalid_box": 0, "unknown_category": 1,
        "unknown_image_id": 1, "size_mismatch": 1, "box_outside_image": 1, "crowd": 1,
        "no_annotations": 2, "converted_image": 4}
    assert (report.num_images_written, report.num_boxes_written) == (7, 7)
    assert (report.num_images_skipped, report.num_annotations_skipped) == (3, 4)
    skipped_annotations = {p.annotation_id for p in report.errors() if p.annotation_id is not None}
    assert skipped_annotations == {103, 104, 999}
    assert {p.image_file for p in report.problems if p.kind == "unreadable_image"} == {
        "corrupt.jpg", "notimage.jpg", "missing.jpg"}
    corrupt = next(p for p in report.problems if p.image_file == "corrupt.jpg")
    assert corrupt.message.endswith("skipped with its annotation(s) 201")

    out_dir = tmp_path / "out"
    assert _files(out_dir) == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                               "train.label_map.json", "train.label_map.pbtxt", "train.report.json"]
    saved = json.loads((out_dir / "train.report.json").read_text())
    assert saved["counts"] == report.counts() and len(saved["problems"]) == len(report.problems)
    assert label_map_lib.read_label_map(str(out_dir / "train.label_map.json")) == [
        (1, "circle"), (2, "square"), (5, "it's odd")]
    assert label_map_lib.read_label_map(str(out_dir / "train.label_map.pbtxt")) == \
        label_map_lib.read_label_map(str(out_dir / "train.label_map.json"))

    records = _decode_records(report.shard_paths)
    assert sorted(records) == [1, 4, 5, 6, 7, 8, 10]
    # Round-robin in id order: 1, 4, 5, 6, 7, 8, 10 -> shards 0, 1, 0, 1, 0, 1, 0.
    assert [records[i]["shard"] for i in (1, 4, 5, 6, 7, 8, 10)] == [0, 1, 0, 1, 0, 1, 0]
    good = records[1]
    np.testing.assert_allclose(good["groundtruth_boxes"], [
        [6 / H, 4 / W, 16 / H, 24 / W],
        [30 / H, 50 / W, 1.0, 1.0],          # clipped to the image
        [0.0, 0.0, 30 / H, 30 / W]], rtol=1e-6)
    assert good["groundtruth_classes"].tolist() == [1, 2, 2]
    assert good["groundtruth_is_crowd"].tolist() == [False, False, True]
    assert good["texts"] == [b"circle", b"square", b"square"]
    assert (good["height"], good["width"]) == (H, W) and good["image"].shape == (H, W, 3)
    with open(os.path.join(images, "good.jpg"), "rb") as f:
        assert good["encoded"] == f.read()  # RGB JPEGs are kept byte for byte
    assert records[4]["groundtruth_classes"].tolist() == [5] and records[4]["texts"] == [b"it's odd"]
    for empty in (7, 8):
        assert records[empty]["groundtruth_boxes"].shape == (0, 4)
    # The size mismatch uses the decoded size: box [3, 4, 5, 6] normalised by 64x48, not 100x100.
    assert (records[10]["height"], records[10]["width"]) == (H, W)
    np.testing.assert_allclose(records[10]["groundtruth_boxes"], [[4 / H, 3 / W, 10 / H, 8 / W]], rtol=1e-6)
    for converted in (4, 5, 6, 7):
        record = records[converted]
        assert record["format"] == b"jpeg"
        image = Image.open(io.BytesIO(record["encoded"]))
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (W, H))
        assert record["image"].shape == (H, W, 3)
    rgba = records[6]["image"].astype(int)
    assert np.abs(rgba[:, 4: W // 2 - 4] - [200, 10, 10]).max() < 20     # opaque part kept
    assert rgba[:, W // 2 + 4:].min() > 235                                # transparent part -> white


def test_rerun_with_fewer_shards_replaces_the_old_shards(dataset, tmp_path):
    annotations, images = dataset
    prefix = str(tmp_path / "out" / "train")
    convert_coco_to_tfrecords(annotations, images, prefix, num_shards=3, skip_invalid=True)
    report = convert_coco_to_tfrecords(annotations, images, prefix, num_shards=1, skip_invalid=True)
    assert len(report.removed_stale_shards) == 3
    assert [f for f in _files(tmp_path / "out") if f.endswith(".tfrecord")] == ["train-00000-of-00001.tfrecord"]
    assert sum(1 for _ in tf.data.TFRecordDataset(report.shard_paths)) == 7
    # A failing conversion leaves the previous complete output exactly as it was.
    before = {f: (tmp_path / "out" / f).read_bytes() for f in _files(tmp_path / "out")}
    with pytest.raises(ConversionError):
        convert_coco_to_tfrecords(annotations, images, prefix, num_shards=2)
    assert {f: (tmp_path / "out" / f).read_bytes() for f in _files(tmp_path / "out")} == before


def test_a_crash_mid_conversion_leaves_no_output(dataset, tmp_path, monkeypatch):
    annotations, images = dataset
    prefix = str(tmp_path / "out" / "train")
    os.makedirs(tmp_path / "out")
    stale = prefix + ".report.json.999999999.tmp"  # left by a killed run (no such process)
    open(stale, "w").close()
    calls = []

    def crash_on_third(**kwargs):
        calls.append(kwargs["filename"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return make_detection_example(**kwargs)

    monkeypatch.setattr(coco_to_tfrecords, "make_detection_example", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        convert_coco_to_tfrecords(annotations, images, prefix, num_shards=2, skip_invalid=True)
    assert _files(tmp_path / "out") == []  # the stale temporary went too


@pytest.mark.parametrize("content, expected", [
    ('{"images": [], "annotations": [,]}', "invalid JSON at line 1 column 32"),
    ('{"images": [], "categories": [{"id": 1, "name": "a"}]}', "missing key(s) 'annotations'"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "a"}], '
     '"annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": "1 2 3 4"}]}',
     "annotations[0] (id 7): field 'bbox' must be a list of 4 numbers"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}], '
     '"annotations": [], "categories": [{"id": 1, "name": "a"}]}', "images[1] (id 1): image id 1 also used"),
    ('{"images": [], "annotations": [], "categories": [{"id": 0, "name": "a"}]}',
     "categories[0] (id 0): field 'id' must be an integer >= 1"),
])
def test_malformed_annotation_files_are_named_before_any_output(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetFormatError) as info:
        convert_coco_to_tfrecords(str(path), str(tmp_path / "images"), str(tmp_path / "out" / "x"))
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists()


def test_label_map_formats(tmp_path):
    label_map = label_map_lib.make_label_map([(3, "ring"), (1, "circle"), (2, "it's \"quoted\"")])
    assert label_map_lib.num_classes(label_map) == 3
    for name in ("m.json", "m.pbtxt"):
        label_map_lib.write_label_map(label_map, str(tmp_path / name))
        assert label_map_lib.read_label_map(str(tmp_path / name)) == label_map
    assert "item {\n  id: 1\n  name: 'circle'\n}" in (tmp_path / "m.pbtxt").read_text()
    od_api = tmp_path / "od.pbtxt"
    od_api.write_text("# COCO\nitem {\n  name: \"/m/01g317\"\n  id: 1\n  display_name: \"person\"\n}\n"
                      "item { id: 90 display_name: 'toothbrush' keypoints { id: 0 label: 'x' } }\n")
    assert label_map_lib.read_label_map(str(od_api)) == [(1, "/m/01g317"), (90, "toothbrush")]
    assert label_map_lib.num_classes(label_map_lib.read_label_map(str(od_api))) == 90
    (tmp_path / "dup.json").write_text('[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]')
    with pytest.raises(label_map_lib.LabelMapError, match="dup.json: id 1 appears twice"):
        label_map_lib.read_label_map(str(tmp_path / "dup.json"))
    (tmp_path / "bad.pbtxt").write_text("item { name: 'a' }")
    with pytest.raises(label_map_lib.LabelMapError, match="bad.pbtxt: the item at line 1 has no id"):
        label_map_lib.read_label_map(str(tmp_path / "bad.pbtxt"))


def test_command_line(dataset, tmp_path):
    annotations, images = dataset
    prefix = str(tmp_path / "cli" / "data")
    command = [sys.executable, "-m", "mobiledets_tf.bin.make_tfrecords", f"--annotations={annotations}",
               f"--images={images}", f"--output={prefix}", "--num_shards=2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    failed = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120)
    assert failed.returncode == 1
    assert "FAILED" in failed.stderr and "corrupt.jpg (image 2)" in failed.stderr
    assert not (tmp_path / "cli").exists() or not os.listdir(tmp_path / "cli")
    ok = subprocess.run(command + ["--skip_invalid"], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "7 of 10 images and 7 boxes" in ok.stdout
    assert "Skipped (skip_invalid): 3 image(s) and 4 annotation(s)" in ok.stdout
    assert "errors: 3 unreadable_image, 1 zero_area_box, 1 unknown_category, 1 unknown_image_id" in ok.stdout
    assert os.path.exists(prefix + "-00001-of-00002.tfrecord") and os.path.exists(prefix + ".report.json")
