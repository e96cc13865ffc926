"""Label maps: the list of (category id, name) of a detection dataset, as JSON or OD API pbtxt.

Two files carry the same label map:
- `label_map.json`: `[{"id": 1, "name": "circle"}, ...]`, what this package reads and writes;
- `label_map.pbtxt`: the TF Object Detection API text format, `item { id: 1 name: 'circle' }`, for
  tools that expect it.
`read_label_map` reads either (chosen by the file extension). Category ids are positive integers;
the detector predicts class index `id - 1`, so `num_classes(label_map)` is the largest id (as the
Object Detection API does for COCO's 90 ids, of which 80 are used).
"""
import json
import re
from typing import Iterable, List, NamedTuple, Sequence, Tuple, Union

from mobiledets_tf import fileio


class Category(NamedTuple):
    id: int
    name: str


LabelMap = List[Category]


class LabelMapError(ValueError):
    """A label map file or list that is malformed; the message names the file and the item."""


def make_label_map(items: Iterable[Union[Category, Tuple[int, str]]], source: str = "label map") -> LabelMap:
    """Validates (id, name) pairs and returns them as a label map sorted by id.

    Ids must be distinct integers >= 1 and names non-empty strings; `source` names the origin in
    error messages.
    """
    label_map, seen = [], {}
    for i, item in enumerate(items):
        try:
            cid, name = item
        except (TypeError, ValueError):
            raise LabelMapError(f"{source}: item {i} is {item!r}, expected an (id, name) pair") from None
        if isinstance(cid, bool) or not isinstance(cid, int) or cid < 1:
            raise LabelMapError(f"{source}: item {i} has id {cid!r}; ids must be integers >= 1")
        if not isinstance(name, str) or not name:
            raise LabelMapError(f"{source}: item {i} (id {cid}) has name {name!r}; names must be "
                                f"non-empty strings")
        if cid in seen:
            raise LabelMapError(f"{source}: id {cid} appears twice ({seen[cid]!r} and {name!r})")
        seen[cid] = name
        label_map.append(Category(cid, name))
    if not label_map:
        raise LabelMapError(f"{source}: the label map is empty")
    return sorted(label_map)


def num_classes(label_map: Sequence[Category]) -> int:
    """The number of classes the detector predicts: the largest category id (index = id - 1)."""
    if not label_map:
        raise LabelMapError("num_classes: the label map is empty")
    return max(c.id for c in label_map)


def class_names(label_map: Sequence[Category]) -> List[str]:
    """Names in id order."""
    return [c.name for c in sorted(label_map)]


def names_by_class_index(label_map: Sequence[Category], count: int, missing=None) -> list:
    """The name of each class index 0..count-1 (category id - 1), `missing` for unused ids."""
    names = [missing] * count
    for category in label_map:
        if category.id <= count:
            names[category.id - 1] = category.name
    return names


def label_map_to_json(label_map: Sequence[Category]) -> str:
    return json.dumps([{"id": c.id, "name": c.name} for c in sorted(label_map)], indent=1) + "\n"


def _pbtxt_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def label_map_to_pbtxt(label_map: Sequence[Category]) -> str:
    return "".join(f"item {{\n  id: {c.id}\n  name: {_pbtxt_quote(c.name)}\n}}\n" for c in sorted(label_map))


def write_label_map(label_map: Sequence[Category], path: str) -> None:
    """Writes the label map atomically, as JSON for a `.json` path and OD API text for `.pbtxt`."""
    label_map = make_label_map(label_map)
    if path.endswith(".json"):
        fileio.write_text_atomically(path, label_map_to_json(label_map))
    elif path.endswith(".pbtxt"):
        fileio.write_text_atomically(path, label_map_to_pbtxt(label_map))
    else:
        raise LabelMapError(f"{path}: a label map file name must end in .json or .pbtxt")


def read_label_map(path: str) -> LabelMap:
    """Reads a `.json` or `.pbtxt` label map; errors name the file and the offending item."""
    try:
        text = fileio.read_text(path)
    except OSError as e:
        raise LabelMapError(f"{path}: cannot read label map: {e.strerror}") from e
    if path.endswith(".json"):
        return _parse_json(text, path)
    if path.endswith(".pbtxt"):
        return _parse_pbtxt(text, path)
    raise LabelMapError(f"{path}: a label map file name must end in .json or .pbtxt")


def _parse_json(text: str, path: str) -> LabelMap:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelMapError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, list):
        raise LabelMapError(f"{path}: expected a JSON list of {{\"id\": ..., \"name\": ...}} objects")
    items = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "id" not in item or "name" not in item:
            raise LabelMapError(f"{path}: item {i} is {item!r}, expected {{\"id\": ..., \"name\": ...}}")
        items.append((item["id"], item["name"]))
    return make_label_map(items, source=path)


_TOKEN = re.compile(r"""\s*(?:(\#[^\n]*)|([{}:])|("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|([^\s{}:"'#]+))""")
_UNESCAPE = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


def _tokens(text: str, path: str):
    pos = 0
    while True:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            rest = text[pos:].strip()
            if rest:
                line = text.count("\n", 0, pos) + 1
                raise LabelMapError(f"{path}: line {line}: cannot parse {rest[:20]!r}")
            return
        pos = m.end()
        line = text.count("\n", 0, m.start()) + 1
        if m.group(1):
            continue
        if m.group(2):
            yield m.group(2), "punct", line
        elif m.group(3):
            raw = m.group(3)[1:-1]
            yield re.sub(r"\\(.)", lambda e: _UNESCAPE.get(e.group(1), e.group(1)), raw), "string", line
        else:
            yield m.group(4), "word", line


def _parse_pbtxt(text: str, path: str) -> LabelMap:
    """Parses `item { id: N name: '...' [display_name: '...'] ... }` blocks; other fields are ignored."""
    tokens = list(_tokens(text, path))
    items, i = [], 0

    def expect(value, what):
        nonlocal i
        if i >= len(tokens) or tokens[i][0] != value or tokens[i][1] == "string":
            got = f"{tokens[i][0]!r} at line {tokens[i][2]}" if i < len(tokens) else "the end of the file"
            raise LabelMapError(f"{path}: expected {what}, got {got}")
        i += 1

    def skip_value():
        nonlocal i
        if i < len(tokens) and tokens[i][0] == "{" and tokens[i][1] == "punct":
            depth = 0
            while i < len(tokens):
                if tokens[i][1] == "punct" and tokens[i][0] in "{}":
                    depth += 1 if tokens[i][0] == "{" else -1
                i += 1
                if depth == 0:
                    return
            raise LabelMapError(f"{path}: unclosed '{{'")
        i += 1

    while i < len(tokens):
        start_line = tokens[i][2]
        expect("item", "'item'")
        expect("{", "'{' after 'item'")
        fields = {}
        while i < len(tokens) and not (tokens[i][0] == "}" and tokens[i][1] == "punct"):
            key, kind, line = tokens[i]
            if kind != "word":
                raise LabelMapError(f"{path}: line {line}: expected a field name, got {key!r}")
            i += 1
            if i < len(tokens) and tokens[i][0] == ":" and tokens[i][1] == "punct":
                i += 1
            if key in ("id", "name", "display_name"):
                if i >= len(tokens):
                    raise LabelMapError(f"{path}: line {line}: field {key!r} has no value")
                fields[key] = tokens[i]
                i += 1
            else:
                skip_value()
        expect("}", "'}' closing the item")
        if "id" not in fields:
            raise LabelMapError(f"{path}: the item at line {start_line} has no id")
        value, kind, line = fields["id"]
        if kind != "word" or not re.fullmatch(r"-?\d+", value):
            raise LabelMapError(f"{path}: line {line}: id {value!r} is not an integer")
        name_field = fields.get("name") or fields.get("display_name")
        if name_field is None:
            raise LabelMapError(f"{path}: the item at line {start_line} (id {value}) has no name")
        items.append((int(value), name_field[0]))
    return make_label_map(items, source=path)
