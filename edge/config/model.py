"""Typed views of a validated config. Defaults come from the JSON Schema's `default` keywords, so the
schema (and the reference docs generated from it) is the one place they are written."""
import io
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple


def _read_secret(env_name, path):
    if env_name:
        return os.environ.get(env_name)
    if path:
        with io.open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    return None


DEFAULT_SLOT = "default"  # the model slot of the top-level `model:` key


@dataclass
class ModelConfig:
    path: str
    characters: Optional[str] = None
    name: Optional[str] = None
    version: Optional[str] = None
    plate_format: Optional[str] = None


@dataclass
class RecognizerConfig:
    backend: str = "onnxruntime"
    providers: List[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    max_batch: int = 16
    max_wait_ms: float = 10.0
    threads: int = 0
    # TensorRT (edge/infer/tensorrt_backend.py); engine_dir is resolved by config_from_dict
    precision: str = "fp16"
    opt_batch: Optional[int] = None
    workspace_mb: int = 512
    dla_core: int = -1
    engine_dir: Optional[str] = None
    engines_keep: int = 2


@dataclass
class RoiConfig:
    id: str
    points: List[Tuple[float, float]]


@dataclass
class DetectorConfig:
    """The plate detector for cameras in mode 'detect' (edge/detect/); it runs on the recognizer's backend."""
    path: str
    threshold: float = 0.3
    nms_iou: float = 0.3
    margin: float = 0.05
    max_batch: int = 8
    name: Optional[str] = None
    version: Optional[str] = None


@dataclass
class CameraConfig:
    id: str
    source: str
    enabled: bool
    mode: str
    rois: List[RoiConfig]
    pacing: str
    loop: bool
    fps: float
    queue_size: int
    format: Optional[str] = None
    model: str = "default"  # the model slot that reads this camera's plates (Config.models)
    decoder: str = "auto"
    open_timeout_s: float = 10.0
    stall_timeout_s: float = 5.0
    username: Optional[str] = None
    password_env: Optional[str] = None
    password_file: Optional[str] = None
    detect_fps: float = 5.0
    zones: List[RoiConfig] = field(default_factory=list)
    masks: List[List[Tuple[float, float]]] = field(default_factory=list)
    min_plate_px: float = 30.0

    def password(self):
        """Read when the stream opens, so it never sits in the config object or its repr."""
        return _read_secret(self.password_env, self.password_file)

    def source_url(self):
        """The source with the credentials put in (for the decoder only: never log or show it)."""
        if not self.username:
            return self.source
        from urllib.parse import quote

        scheme, rest = self.source.split("://", 1)
        password = self.password()
        userinfo = quote(self.username, safe="") + (":" + quote(password, safe="") if password else "")
        return "%s://%s@%s" % (scheme, userinfo, rest)


@dataclass
class TrackingConfig:
    min_confidence: float
    min_plate_length: int
    max_edit_distance: int
    expire_s: float
    min_reads: int
    max_track_s: float
    format: Optional[str] = None
    replace_rules: List[Tuple[str, str]] = field(default_factory=list)
    known_plates: Dict[str, List[str]] = field(default_factory=dict)
    match_distance: int = 1
    box_iou: float = 0.1


@dataclass
class EventsConfig:
    snapshot: str = "none"
    snapshot_quality: int = 90
    format: str = "lpr-edge"
    retention_h: float = 0.0
    recent_reads: int = 50
    frame_snapshot: bool = False


@dataclass
class HealthConfig:
    host: str = "127.0.0.1"
    port: int = 8941
    stage_deadline_s: float = 30.0


@dataclass
class HomeAssistantConfig:
    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    status_topic: str = "homeassistant/status"
    presence_s: float = 60.0


@dataclass
class TlsConfig:
    ca_certs: Optional[str] = None
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    insecure: bool = False


@dataclass
class MqttConfig:
    host: str
    port: int
    topic_prefix: str
    protocol: str
    keepalive_s: int
    reconnect_min_s: float
    reconnect_max_s: float
    max_inflight: int
    status_interval_s: float = 60.0
    ack_timeout_s: float = 15.0
    connect_timeout_s: float = 10.0
    client_id: Optional[str] = None
    username: Optional[str] = None
    password_env: Optional[str] = None
    password_file: Optional[str] = None
    tls: Optional[TlsConfig] = None

    def password(self):
        """The password, read when needed so it never sits in the config object or its repr."""
        return _read_secret(self.password_env, self.password_file)


@dataclass
class OutboxConfig:
    path: str
    max_events: int
    max_bytes: int


@dataclass
class OtaConfig:
    """Over-the-air model updates (edge/ota/)."""
    enabled: bool = True
    public_keys: List[str] = field(default_factory=list)
    allow_unsigned: bool = False
    max_package_mb: float = 200.0
    download_timeout_s: float = 30.0
    download_retries: int = 3
    require_golden_set: bool = True
    golden_tolerance: float = 0.0
    probation_s: float = 300.0
    probation_min_crops: int = 50
    probation_max_read_drop: float = 0.25
    probation_max_score_drop: float = 0.15


@dataclass
class Config:
    device_id: str
    device_profile: str
    log_level: str
    state_dir: str
    print_events: bool
    exit_when_sources_end: bool
    model: ModelConfig
    recognizer: RecognizerConfig
    cameras: List[CameraConfig]
    tracking: TrackingConfig
    mqtt: MqttConfig
    outbox: OutboxConfig
    events: EventsConfig = field(default_factory=EventsConfig)
    home_assistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    ota: OtaConfig = field(default_factory=OtaConfig)
    detector: Optional[DetectorConfig] = None
    # model slots: "default" is `model`, the others come from `models:`; cameras[].model picks one
    models: Dict[str, ModelConfig] = field(default_factory=dict)
    base_dir: str = "."

    def as_dict(self):
        return asdict(self)

    def used_slots(self):
        """The model slots some enabled camera reads with, in camera order: only these are loaded. With
        every camera disabled, the default slot: the daemon still answers status and model commands."""
        out = []
        for camera in self.cameras:
            if camera.model not in out:
                out.append(camera.model)
        return out or [DEFAULT_SLOT]


def with_defaults(data, schema):
    """Copy of `data` with the schema's defaults filled in, recursively through objects and arrays."""
    if schema.get("type") == "object" and isinstance(data, dict):
        out = dict(data)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = sub["default"]
            if key in out:
                out[key] = with_defaults(out[key], sub)
        return out
    if schema.get("type") == "array" and isinstance(data, list) and "items" in schema:
        return [with_defaults(item, schema["items"]) for item in data]
    return data


def config_from_dict(data, schema, base_dir, profile_name, resolve):
    """Build Config from a validated mapping (profile already merged); `resolve` makes paths absolute."""
    d = with_defaults(data, schema)
    props = schema["properties"]
    model = _model(d["model"], base_dir, resolve)
    models = {DEFAULT_SLOT: model}
    for slot, entry in sorted(d.get("models", {}).items()):
        models[slot] = _model(entry, base_dir, resolve)
    cameras = []
    for cam in d["cameras"]:
        if not cam["enabled"]:
            continue
        cam = dict(cam)
        cam["rois"] = [RoiConfig(r["id"], [tuple(p) for p in r["points"]]) for r in cam.get("rois", [])]
        cam["zones"] = [RoiConfig(z["id"], [tuple(p) for p in z["points"]]) for z in cam.get("zones", [])]
        cam["masks"] = [[tuple(p) for p in m] for m in cam.get("masks", [])]
        cam["source"] = _resolve_source(cam["source"], base_dir, resolve)
        if cam.get("password_file"):
            cam["password_file"] = resolve(cam["password_file"], base_dir)
        cameras.append(CameraConfig(**cam))
    mqtt = with_defaults(d.get("mqtt", {}), props["mqtt"])
    tls = mqtt.pop("tls", None)
    for key in ("password_file",):
        if mqtt.get(key):
            mqtt[key] = resolve(mqtt[key], base_dir)
    if tls is not None:
        tls = dict(tls)
        for key in ("ca_certs", "certfile", "keyfile"):
            if tls.get(key):
                tls[key] = resolve(tls[key], base_dir)
        tls = TlsConfig(**tls)
    mqtt.setdefault("client_id", "lpr-edge-%s" % d["device_id"])
    state_dir = d.get("state_dir") or os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "state"
    state_dir = resolve(state_dir, base_dir if d.get("state_dir") else os.getcwd())
    outbox = with_defaults(d.get("outbox", {}), props["outbox"])
    outbox["path"] = resolve(outbox["path"], base_dir) if outbox.get("path") else os.path.join(state_dir, "outbox.sqlite3")
    return Config(
        device_id=d["device_id"],
        device_profile=profile_name,
        log_level=d["log_level"],
        state_dir=state_dir,
        print_events=d["print_events"],
        exit_when_sources_end=d["exit_when_sources_end"],
        model=model,
        recognizer=RecognizerConfig(**dict(d["recognizer"], engine_dir=_engine_dir(d["recognizer"], state_dir,
                                                                                  base_dir, resolve))),
        cameras=cameras,
        tracking=_tracking(with_defaults(d.get("tracking", {}), props["tracking"])),
        mqtt=MqttConfig(tls=tls, **mqtt),
        outbox=OutboxConfig(**outbox),
        events=EventsConfig(**with_defaults(d.get("events", {}), props["events"])),
        home_assistant=HomeAssistantConfig(**with_defaults(d.get("home_assistant", {}), props["home_assistant"])),
        health=HealthConfig(**with_defaults(d.get("health", {}), props["health"])),
        ota=_ota(with_defaults(d.get("ota", {}), props["ota"]), base_dir, resolve),
        detector=_detector(d.get("detector"), props["detector"], base_dir, resolve),
        models=models,
        base_dir=base_dir,
    )


def _model(entry, base_dir, resolve):
    entry = dict(entry)
    entry["path"] = resolve(entry["path"], base_dir)
    if entry.get("characters"):
        entry["characters"] = resolve(entry["characters"], base_dir)
    return ModelConfig(**entry)


def _engine_dir(recognizer, state_dir, base_dir, resolve):
    """TensorRT engines: recognizer.engine_dir, else the unit's cache directory, else <state_dir>/engines."""
    if recognizer.get("engine_dir"):
        return resolve(recognizer["engine_dir"], base_dir)
    cache = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return os.path.join(cache or state_dir, "engines")


def _detector(detector, schema, base_dir, resolve):
    if not detector or not detector.get("path"):
        return None
    detector = with_defaults(detector, schema)
    detector["path"] = resolve(detector["path"], base_dir)
    return DetectorConfig(**detector)


def _ota(o, base_dir, resolve):
    o = dict(o)
    o["public_keys"] = [resolve(p, base_dir) for p in o["public_keys"]]
    return OtaConfig(**o)


def _tracking(t):
    t = dict(t)
    t["replace_rules"] = [(r["pattern"], r["replacement"]) for r in t.get("replace_rules", [])]
    return TrackingConfig(**t)


def _resolve_source(source, base_dir, resolve):
    """Relative file and folder sources are taken from the config file's folder."""
    if source.startswith("file://") or source.startswith("dir://"):
        scheme, rest = source.split("://", 1)
        return "%s://%s" % (scheme, resolve(rest, base_dir))
    if "://" not in source:
        return resolve(source, base_dir)
    return source
