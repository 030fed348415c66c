#!/usr/bin/python3
"""Serve an H.264 MP4 file as a live RTSP camera (GStreamer's RTSP server), to try a config or test capture
without a camera:

    /usr/bin/python3 scripts/rtsp_serve.py samples/gate_us.mp4 --port 8554 --path gate
    # then: source: rtsp://127.0.0.1:8554/gate

Each client gets the file from its start at the file's own frame rate (no re-encoding); at the end of the
file the stream ends, as a camera that drops off does, and the next client connection starts it again.
Needs Debian's python3-gi, gir1.2-gst-rtsp-server-1.0 and gstreamer1.0-plugins-good (make test installs
them); it runs on the system Python, which has the GObject bindings, not on the project's venv.
Prints "serving rtsp://HOST:PORT/PATH" once clients can connect.
"""
import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def pipeline(path):
    # qtdemux hands rtph264pay the file's H.264 as it is (avc), so no encoder plugin is needed
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    return '( filesrc location="%s" ! qtdemux ! queue ! rtph264pay name=pay0 pt=96 config-interval=1 )' % location


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="an MP4 file with H.264 video")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="cam", help="stream path: rtsp://HOST:PORT/PATH")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.video):
        print("error: %s: no such video file" % args.video, file=sys.stderr)
        return 2
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(os.path.abspath(args.video)))
    factory.set_shared(False)  # one pipeline per client: each starts at the file's first frame
    server.get_mount_points().add_factory("/" + args.path.lstrip("/"), factory)
    if server.attach(None) == 0:
        print("error: cannot listen on %s:%d (port in use?)" % (args.host, args.port), file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("serving rtsp://%s:%d/%s" % (args.host, server.get_bound_port(), args.path.lstrip("/")), flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
