"""Prometheus metrics (prometheus-client). Counters and gauges are read from the stages at scrape time
by one collector, so the hot loops carry no metric code; the two histograms (inference latency and
batch size) are observed by the recognizer worker."""
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge.track.tracker import REJECT_REASONS

CAMERA_STATES = ("starting", "streaming", "reconnecting", "ended", "failed")


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.inference_seconds = Histogram(
            "lpr_edge_inference_seconds", "Time of one recognizer batch (preprocess, inference, decode)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=self.registry)
        self.batch_size = Histogram("lpr_edge_batch_size", "Plate crops per recognizer batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.app = None

    def attach(self, app):
        self.app = app
        self.registry.register(_AppCollector(app))

    def observe_batch(self, size, seconds):
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)


class _AppCollector:
    def __init__(self, app):
        self.app = app

    def collect(self):
        app = self.app
        frames = CounterMetricFamily("lpr_edge_frames", "Frames read per camera", labels=["camera"])
        dropped = CounterMetricFamily("lpr_edge_frames_dropped", "Frames dropped because the queue was full",
                                      labels=["camera"])
        reconnects = CounterMetricFamily("lpr_edge_camera_reconnects", "Source reopen attempts", labels=["camera"])
        state = GaugeMetricFamily("lpr_edge_camera_state", "1 for the camera's current state",
                                  labels=["camera", "state"])
        for capture in app.captures:
            cid = capture.camera.id
            frames.add_metric([cid], capture.frames)
            dropped.add_metric([cid], app.dropped_frames(cid))
            reconnects.add_metric([cid], capture.reconnects)
            for s in CAMERA_STATES:
                state.add_metric([cid, s], 1.0 if capture.state == s else 0.0)
        yield frames
        yield dropped
        yield reconnects
        yield state
        tracker = app.worker.tracker
        reads = CounterMetricFamily("lpr_edge_crops_read", "Plate crops run through the recognizer")
        reads.add_metric([], app.worker.crops_read)
        yield reads
        rejected = CounterMetricFamily("lpr_edge_reads_rejected", "Reads that never joined a track, by reason",
                                       labels=["reason"])
        for reason in REJECT_REASONS:
            rejected.add_metric([reason], tracker.rejected[reason])
        yield rejected
        refits = CounterMetricFamily("lpr_edge_reads_plate_format",
                                     "Reads that did not fit the model's plate format: re-decoded to fit (refit), or "
                                     "kept as read (miss): the model has no class_probs output, or no path of its timesteps fits",
                                     labels=["result"])
        refits.add_metric(["refit"], sum(r.format_refits for r in app.recognizers.values()))  # every model slot
        refits.add_metric(["miss"], sum(r.format_misses for r in app.recognizers.values()))
        yield refits
        short = CounterMetricFamily("lpr_edge_tracks_too_short", "Tracks that ended with fewer than min_reads reads")
        short.add_metric([], tracker.dropped_tracks)
        yield short
        events = CounterMetricFamily("lpr_edge_events", "Plate events committed to the outbox")
        events.add_metric([], app.events_committed)
        yield events
        published = CounterMetricFamily("lpr_edge_events_published", "Events acknowledged by the broker")
        published.add_metric([], app.publisher.published)
        yield published
        refused = CounterMetricFamily("lpr_edge_events_refused", "Events the broker refused in its PUBACK (MQTT 5)")
        refused.add_metric([], app.publisher.rejected)
        yield refused
        ev_dropped = CounterMetricFamily("lpr_edge_events_dropped", "Events dropped because the outbox was full")
        ev_dropped.add_metric([], app.events_dropped + app.commits.dropped)
        yield ev_dropped
        depth = app.publisher.outbox_depth or (0, 0)
        outbox = GaugeMetricFamily("lpr_edge_outbox_events", "Events waiting in the outbox")
        outbox.add_metric([], depth[0])
        yield outbox
        snapshots = GaugeMetricFamily("lpr_edge_outbox_snapshots", "Snapshot rows waiting in the outbox")
        snapshots.add_metric([], app.publisher.outbox_snapshots)
        yield snapshots
        held = GaugeMetricFamily("lpr_edge_events_held",
                                 "Events the outbox could not take (disk full), held in memory and retried")
        held.add_metric([], len(app.commits.held))
        yield held
        expired = CounterMetricFamily("lpr_edge_outbox_expired",
                                      "Unpublished outbox rows deleted because they were older than events.retention_h")
        expired.add_metric([], app.publisher.expired)
        yield expired
        failures = CounterMetricFamily("lpr_edge_outbox_commit_failures",
                                       "Outbox commits that failed (disk full or I/O error) and were retried")
        failures.add_metric([], app.commits.failures)
        yield failures
        outbox_bytes = GaugeMetricFamily("lpr_edge_outbox_bytes", "Payload bytes waiting in the outbox")
        outbox_bytes.add_metric([], depth[1])
        yield outbox_bytes
        connected = GaugeMetricFamily("lpr_edge_mqtt_connected", "1 while connected to the broker")
        connected.add_metric([], 1.0 if app.publisher.connected else 0.0)
        yield connected
        backend = GaugeMetricFamily("lpr_edge_backend_info", "1 for the inference backend in use; fallback is 1 when "
                                    "it runs in place of tensorrt (see /healthz for why)", labels=["backend", "fallback"])
        backend.add_metric([app.recognizer.backend.name, "1" if app.recognizer.backend.fallback_reason else "0"], 1.0)
        yield backend
        load = GaugeMetricFamily("lpr_edge_model_load_seconds",
                                 "Seconds to load the model (engine build included where the backend builds one)")
        load.add_metric([], app.model_load_seconds)
        yield load
