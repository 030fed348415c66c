"""Configuration: one YAML file, validated against configs/schema/config.schema.json, merged over a device
profile, turned into typed objects. Every problem is reported at once, each naming the key path, the
value and what was expected; nothing starts on a bad config."""
import io
import json
import os
import re
import socket

import jsonschema
import yaml

from edge import resources
from edge.config.model import Config, config_from_dict
from edge.config.yamlload import load_yaml_text
from edge.recognize.plate_format import pattern_problem

SCHEMA_FILE = "configs/schema/config.schema.json"
PROFILE_SCHEMA_FILE = "configs/schema/device-profile.schema.json"
PROFILE_DIR = "configs/devices"
_SCHEMAS = {}


class ConfigError(ValueError):
    """A config that cannot run; `problems` holds one line per problem."""

    def __init__(self, source, problems):
        self.source = source
        self.problems = list(problems)
        ValueError.__init__(self, "\n".join("%s: %s" % (source, p) for p in self.problems))


def load_schema(relpath=SCHEMA_FILE):
    if relpath not in _SCHEMAS:
        with io.open(resources.find_data(relpath), encoding="utf-8") as f:
            _SCHEMAS[relpath] = json.load(f)
    return _SCHEMAS[relpath]


def _key_path(path):
    out = ""
    for part in path:
        out += "[%d]" % part if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(err):
    """One line: key path, the offending value, what was expected (from the schema's description)."""
    where = _key_path(err.absolute_path)
    value = json.dumps(err.instance, ensure_ascii=False, default=str)
    if len(value) > 80:
        value = value[:77] + "..."
    if err.validator == "additionalProperties":
        return "%s: %s" % (where, err.message.replace("were unexpected", "are not known keys")
                           .replace("was unexpected", "is not a known key"))
    if err.validator == "required":
        return "%s: %s" % (where, err.message)
    expected = err.message
    desc = err.schema.get("description")
    line = "%s: value %s is wrong: %s" % (where, value, expected)
    if desc:
        line += " (expected: %s)" % desc.split(". ")[0].rstrip(".")
    return line


def schema_problems(data, schema):
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in errors]


def detect_profile(root="/"):
    """'auto' profile: the Jetson module from the device tree, else an NVIDIA GPU, else the CPU
    (edge/infer/device.py; `root` is where a test's sample /proc and /etc trees are)."""
    from edge.infer.device import detect

    return detect(root).profile


def list_profiles():
    folder = resources.find_data(PROFILE_DIR)
    return sorted(os.path.splitext(n)[0] for n in os.listdir(folder) if n.endswith(".yaml"))


def load_profile(name):
    try:
        path = resources.find_data(os.path.join(PROFILE_DIR, name + ".yaml"))
    except IOError:
        raise ConfigError("device_profile", ["unknown device profile %r (known: %s)" % (name, ", ".join(list_profiles()))])
    with io.open(path, encoding="utf-8") as f:
        data = load_yaml_text(f.read(), path)
    schema = dict(load_schema(PROFILE_SCHEMA_FILE))
    schema["properties"] = dict(schema["properties"], recognizer=load_schema()["properties"]["recognizer"])
    problems = schema_problems(data, schema)
    if problems:
        raise ConfigError(path, problems)
    return data


def default_device_id():
    name = socket.gethostname().split(".")[0].lower() or "lpr-edge"
    return re.sub(r"[^a-z0-9_-]", "-", name)[:64]


def _semantic_problems(data, base_dir):
    """Checks a schema cannot express: unique ids, ROIs present in roi mode, regexes, files that exist."""
    problems = []
    seen = set()
    for i, cam in enumerate(data.get("cameras", [])):
        where = "cameras[%d]" % i
        if cam["id"] in seen:
            problems.append("%s.id: value %r is wrong: camera ids must be unique" % (where, cam["id"]))
        seen.add(cam["id"])
        if cam.get("mode", "roi") == "roi" and not cam.get("rois"):
            problems.append("%s.rois: missing: mode 'roi' needs at least one ROI (or set mode: crop)" % where)
        roi_ids = [r["id"] for r in cam.get("rois", [])]
        for reserved in sorted(set(roi_ids) & {"plate", "frame"}):  # the ids of detected plates and crop mode
            problems.append("%s.rois: ROI id %r is reserved (mode detect's plates and mode crop's frames): name it "
                            "otherwise" % (where, reserved))
        for dup in sorted(set(r for r in roi_ids if roi_ids.count(r) > 1)):
            problems.append("%s.rois: ROI id %r is used twice" % (where, dup))
        for j, roi in enumerate(cam.get("rois", [])):
            pts = roi["points"]
            if polygon_area(pts) < 16:
                problems.append("%s.rois[%d].points: value %s is wrong: the four points enclose no area"
                                % (where, j, json.dumps(pts)))
            elif _self_intersecting(pts):
                problems.append("%s.rois[%d].points: value %s is wrong: the outline crosses itself (give the "
                                "corners in order: top-left, top-right, bottom-right, bottom-left)"
                                % (where, j, json.dumps(pts)))
        problems.extend(_detect_problems(where, cam, data))
        if "format" in cam:
            problems.extend(_regex_problem("%s.format" % where, cam["format"]))
        problems.extend(_camera_credential_problems(where, cam, base_dir))
    if "format" in data.get("tracking", {}):
        problems.extend(_regex_problem("tracking.format", data["tracking"]["format"]))
    for i, rule in enumerate(data.get("tracking", {}).get("replace_rules", [])):
        problems.extend(_regex_problem("tracking.replace_rules[%d].pattern" % i, rule["pattern"]))
    problems.extend(_model_problems("model", data.get("model", {}), base_dir))
    slots = data.get("models", {})
    if "default" in slots:
        problems.append("models.default: the slot named default is the top-level model: key; give this one "
                        "another name")
    for slot in sorted(slots):
        problems.extend(_model_problems("models.%s" % slot, slots[slot], base_dir))
    known = ["default"] + sorted(s for s in slots if s != "default")
    for i, cam in enumerate(data.get("cameras", [])):
        slot = cam.get("model", "default")
        if slot not in known:  # one line naming the camera and the key: a typo must not start a daemon
            problems.append("cameras[%d].model: camera %r names model slot %r, which the config does not have "
                            "(slots: %s; add it under models:)" % (i, cam["id"], slot, ", ".join(known)))
    detector = data.get("detector", {})
    if "path" in detector and not os.path.isfile(_resolve(detector["path"], base_dir)):
        problems.append("detector.path: value %r is wrong: no such file (%s)"
                        % (detector["path"], _resolve(detector["path"], base_dir)))
    mqtt = data.get("mqtt", {})
    if "password_env" in mqtt and mqtt["password_env"] not in os.environ:
        problems.append("mqtt.password_env: environment variable %r is not set" % mqtt["password_env"])
    if "password_file" in mqtt and not os.path.isfile(_resolve(mqtt["password_file"], base_dir)):
        problems.append("mqtt.password_file: value %r is wrong: no such file" % mqtt["password_file"])
    for key in ("ca_certs", "certfile", "keyfile"):
        value = mqtt.get("tls", {}).get(key)
        if value is not None and not os.path.isfile(_resolve(value, base_dir)):
            problems.append("mqtt.tls.%s: value %r is wrong: no such file" % (key, value))
    for i, key in enumerate(data.get("ota", {}).get("public_keys", [])):
        if not os.path.isfile(_resolve(key, base_dir)):
            problems.append("ota.public_keys[%d]: value %r is wrong: no such file" % (i, key))
    if mqtt.get("reconnect_min_s", 1) > mqtt.get("reconnect_max_s", 60):
        problems.append("mqtt.reconnect_min_s: value %r is wrong: larger than reconnect_max_s" % mqtt["reconnect_min_s"])
    return problems


def _detect_problems(where, cam, data):
    """Mode 'detect' needs a detector; zones and masks must be simple polygons with an area."""
    problems = []
    if cam.get("mode") == "detect" and not data.get("detector", {}).get("path"):
        problems.append("%s.mode: 'detect' needs a detector: set detector.path (lpr-edge's, NVIDIA's LPDNet or a "
                        "YOLO end-to-end .onnx)" % where)
    polygons = [("zones[%d].points" % j, z["points"]) for j, z in enumerate(cam.get("zones", []))]
    polygons += [("masks[%d]" % j, m) for j, m in enumerate(cam.get("masks", []))]
    for key, points in polygons:
        problem = polygon_problem(points)
        if problem:
            problems.append("%s.%s: value %s is wrong: %s" % (where, key, json.dumps(points), problem))
    zone_ids = [z["id"] for z in cam.get("zones", [])]
    for dup in sorted(set(z for z in zone_ids if zone_ids.count(z) > 1)):
        problems.append("%s.zones: zone id %r is used twice" % (where, dup))
    if (cam.get("zones") or cam.get("masks")) and cam.get("mode") != "detect":
        problems.append("%s.zones: zones and masks apply to mode 'detect' only" % where)
    return problems


def polygon_area(points):
    area = 0.0
    for k in range(len(points)):
        x1, y1 = points[k]
        x2, y2 = points[(k + 1) % len(points)]
        area += x1 * y2 - x2 * y1
    return abs(area) / 2.0


def polygon_problem(points, min_area=16.0):
    """Why these points are not a usable polygon (None when they are)."""
    if _self_intersecting(points):  # first: a bow tie's two halves cancel in the area
        return "the outline crosses itself (give the corners in order around the shape)"
    if polygon_area(points) < min_area:
        return "the points enclose no area"
    return None


def _model_problems(where, model, base_dir):
    """A model entry (the top-level model or a models: slot): its plate format and its files."""
    problems = []
    if model.get("plate_format"):
        problem = pattern_problem(model["plate_format"])
        if problem:
            problems.append("%s.plate_format: value %r is wrong: %s" % (where, model["plate_format"], problem))
    for key in ("path", "characters"):
        if key in model and not os.path.isfile(_resolve(model[key], base_dir)):
            problems.append("%s.%s: value %r is wrong: no such file (%s)"
                            % (where, key, model[key], _resolve(model[key], base_dir)))
    return problems


def _self_intersecting(points):
    """True when two non-adjacent edges of the closed polygon cross (a bow tie)."""
    n = len(points)
    edges = [(points[k], points[(k + 1) % n]) for k in range(n)]
    for a in range(n):
        for b in range(a + 1, n):
            if b == a + 1 or (a == 0 and b == n - 1):
                continue
            if _segments_cross(edges[a], edges[b]):
                return True
    return False


def _segments_cross(e, f):
    def side(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    (p1, p2), (p3, p4) = e, f
    d1, d2, d3, d4 = side(p3, p4, p1), side(p3, p4, p2), side(p1, p2, p3), side(p1, p2, p4)
    return d1 * d2 < 0 and d3 * d4 < 0


def _camera_credential_problems(where, cam, base_dir):
    has_password = "password_env" in cam or "password_file" in cam
    if not (has_password or "username" in cam):
        return []
    problems = []
    scheme, sep, rest = cam["source"].partition("://")
    if not sep or scheme not in ("rtsp", "rtsps", "http", "https", "rtmp"):
        problems.append("%s.username: only network sources (rtsp, http, ...) take credentials" % where)
    elif "@" in rest.split("/", 1)[0]:
        problems.append("%s.source: has credentials in it as well as username/password_*: keep them out of "
                        "the URL" % where)
    if has_password and "username" not in cam:
        problems.append("%s.username: missing: password_env/password_file need a username" % where)
    if "password_env" in cam and "password_file" in cam:
        problems.append("%s.password_env: give password_env or password_file, not both" % where)
    if "password_env" in cam and cam["password_env"] not in os.environ:
        problems.append("%s.password_env: environment variable %r is not set" % (where, cam["password_env"]))
    if "password_file" in cam and not os.path.isfile(_resolve(cam["password_file"], base_dir)):
        problems.append("%s.password_file: value %r is wrong: no such file" % (where, cam["password_file"]))
    return problems


def _regex_problem(where, pattern):
    try:
        re.compile(pattern)
    except re.error as exc:
        return ["%s: value %r is wrong: not a regular expression (%s)" % (where, pattern, exc)]
    return []


def _resolve(path, base_dir):
    path = os.path.expandvars(os.path.expanduser(path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def parse_config(data, source="<config>", base_dir="."):
    """Validate a config mapping and build the typed Config; ConfigError lists every problem."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["the file must hold a mapping of keys, not %s" % type(data).__name__])
    problems = schema_problems(data, load_schema())
    if problems:
        raise ConfigError(source, problems)
    problems = _semantic_problems(data, base_dir)
    if problems:
        raise ConfigError(source, problems)
    profile_name = data.get("device_profile", "auto")
    if profile_name == "auto":
        profile_name = detect_profile()
    profile = load_profile(profile_name)
    merged = dict(data)
    merged["recognizer"] = dict(profile["recognizer"], **data.get("recognizer", {}))
    merged.setdefault("device_id", default_device_id())
    return config_from_dict(merged, load_schema(), base_dir, profile_name, _resolve)


def load_config(path):
    """Read, validate and build the config from a YAML file."""
    try:
        with io.open(path, encoding="utf-8") as f:
            text = f.read()
    except (IOError, OSError) as exc:
        raise ConfigError(path, ["cannot read: %s" % exc])
    except UnicodeDecodeError:
        raise ConfigError(path, ["not a YAML text file (binary data: a model or an image given as the config?)"])
    try:
        data = load_yaml_text(text, path)
    except yaml.YAMLError as exc:
        raise ConfigError(path, ["not valid YAML: %s" % str(exc).replace("\n", " ")])
    return parse_config(data, path, os.path.dirname(os.path.abspath(path)))


__all__ = ["Config", "ConfigError", "load_config", "parse_config", "detect_profile", "list_profiles"]
