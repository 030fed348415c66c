"""`lpr-edge model ...`: keygen, pack, verify (anywhere), and install, list, rollback on a device's state
directory. Exit codes as the rest of the CLI: 0 ok, 2 a bad package, key, config or argument (one line
naming what is wrong), 1 a failure worth trying again (network, busy)."""
import json
import os
import sys
import tempfile

from edge.ota import OtaError

EXIT_OK, EXIT_FAILURE, EXIT_BAD = 0, 1, 2
RETRYABLE = ("unreachable", "stalled", "interrupted", "truncated", "busy", "download_failed", "range_refused",
             "cancelled", "no_daemon", "timeout")


def _fail(exc):
    print("error: %s" % exc, file=sys.stderr)
    return EXIT_FAILURE if getattr(exc, "code", None) in RETRYABLE else EXIT_BAD


def cmd_keygen(args):
    from edge.ota.signing import keygen

    try:
        kid = keygen(args.keyfile)
    except OtaError as exc:
        return _fail(exc)
    except OSError as exc:
        return _fail(OtaError("bad_key", "cannot write %s: %s" % (args.keyfile, exc.strerror or exc)))
    print("wrote %s (private, mode 0600) and %s.pub; key id %s" % (args.keyfile, args.keyfile, kid))
    return EXIT_OK


def cmd_pack(args):
    from edge.ota.pack import pack

    if not args.key and not args.unsigned:
        print("error: --key KEYFILE is required (or --unsigned for a lab package)", file=sys.stderr)
        return EXIT_BAD
    if args.serial < 1:
        print("error: --serial must be 1 or more", file=sys.stderr)
        return EXIT_BAD
    try:
        manifest = pack(args.model, args.out, args.name, args.version, args.serial, key_path=args.key,
                        characters_path=args.characters, golden_dir=args.golden, kind=args.kind,
                        min_accuracy=args.min_accuracy, min_daemon_version=args.min_daemon_version,
                        replaces=args.replaces, plate_format=args.plate_format, release_summary=args.summary,
                        slot=args.slot)
    except OtaError as exc:
        return _fail(exc)
    golden = manifest["golden"]
    print("wrote %s: %s %s serial %d, %d files, golden set %s%s%s" % (
        args.out, manifest["name"], manifest["version"], manifest["serial"], len(manifest["files"]),
        "%d crops, %.1f%% required" % (golden["count"], 100 * golden["plate_accuracy"]) if golden else "none",
        ", for slot %s" % args.slot if args.slot else "", "" if args.key else ", UNSIGNED"))
    return EXIT_OK


def cmd_verify(args):
    """Everything a device checks before it switches, except the policy against what it serves."""
    from edge.ota.check import check_contract, check_golden, load_recognizer
    from edge.ota.install import load_public_keys
    from edge.ota.package import open_package, remove_tree

    tmp = tempfile.mkdtemp(prefix="lpr-edge-verify-")
    try:
        keys = load_public_keys(args.public_key or [])
        package = open_package(args.package, keys, allow_unsigned=args.allow_unsigned,
                               dest=os.path.join(tmp, "pkg"))
        m = package.manifest
        folder = os.path.join(tmp, "pkg")
        recognizer = load_recognizer(os.path.join(folder, m["model"]), os.path.join(folder, m["characters"]),
                                     m["name"], m["version"], m.get("plate_format"))
        try:
            check_contract(recognizer, m["contract"])
            accuracy = check_golden(recognizer, folder, m["golden"])
        finally:
            recognizer.close()
    except OtaError as exc:
        return _fail(exc)
    finally:
        remove_tree(tmp)
    print("OK %s: %s %s serial %d (%s), signed by %s, %d files intact, contract ok, golden set %s" % (
        args.package, m["name"], m["version"], m["serial"], m["kind"], package.signed_by or "nobody (unsigned)",
        len(m["files"]), "%.1f%%" % (100 * accuracy) if accuracy is not None else "none"))
    return EXIT_OK


def _open(args):
    """(config, store, daemon_running) for a command on the state dir. With a daemon running on it the
    command goes to the daemon over MQTT; otherwise it runs here, after the start-up recovery."""
    from edge.cli import _load_config_or_exit
    from edge.ota.store import ModelStore

    config = _load_config_or_exit(args.config, preflight=False)  # the running daemon holds the port
    if config is None:
        return None, None, False
    store = ModelStore(config.state_dir)
    if store.daemon_lock.held_by_other():
        return config, store, True
    store.recover()
    return config, store, False


def _remote(config, command):
    """Send a command to the running daemon; exit code from its final reply."""
    from edge.ota.remote import send

    reply = send(config, command)
    if reply["status"] == "ok":
        print(reply.get("message") or "%s: ok (%s)" % (command["action"], json.dumps(reply.get("model") or
                                                                                    reply.get("data"))))
        return EXIT_OK
    raise OtaError(reply.get("error") or "failed", reply.get("message") or json.dumps(reply))


def cmd_install(args):
    from edge.ota.install import Installer, current_model
    from edge.ota.remote import install_command

    try:
        config, store, running = _open(args)
        if config is None:
            return EXIT_BAD
        if running:
            return _remote(config, install_command(args.source, args.sha256, args.size, args.allow_downgrade,
                                                   args.slot))
        installer = Installer(store, config.ota, config.recognizer,
                              lambda slot: current_model(store, config.models[slot], slot), report=_print_progress,
                              slots=sorted(config.models))
        outcome = installer.run(args.source, sha256=args.sha256, size=args.size, allow_downgrade=args.allow_downgrade,
                                slot=args.slot)
        if outcome.noop:
            print(outcome.message)
            return EXIT_OK
        outcome.recognizer.close()
        # offline: no live traffic to judge, the golden set was the test
        store.activate(outcome.installed.folder_name, outcome.slot)
        store.record({"state": "active", "reason": "installed offline", "model": outcome.installed.describe()},
                     outcome.slot)
    except OtaError as exc:
        return _fail(exc)
    print("%s; active now (previous kept for `lpr-edge model rollback`)" % outcome.message)
    return EXIT_OK


def _print_progress(state, **detail):
    if state == "downloading" and detail.get("percent") is not None:
        sys.stderr.write("\rdownloading %5.1f%%" % detail["percent"])
        if detail["percent"] >= 100:
            sys.stderr.write("\n")
    elif state == "building":  # a line per 10 s of a TensorRT build, not one per tick
        if detail.get("elapsed_s", 0) % 10 < 0.5:
            sys.stderr.write("building the TensorRT engine (%d s)\n" % detail.get("elapsed_s", 0))
    elif state != "downloading":
        sys.stderr.write("%s\n" % state)
    sys.stderr.flush()


def cmd_list(args):
    try:
        config, store, running = _open(args)
        if config is None:
            return EXIT_BAD
        if running:
            from edge.ota.remote import send

            data = send(config, {"action": "status"})["data"]
            if args.json:
                print(json.dumps(data, sort_keys=True))
            else:
                for slot, payload in sorted(data.get("slots", {"default": data}).items()):
                    m = payload["model"]
                    print("active:   %s%s %s (serial %s, sha256 %s); the daemon says: %s%s" % (
                        _slot_label(slot), m["name"], m["version"], m["serial"], m["sha256"][:12], payload["state"],
                        " (%s)" % payload["message"] if payload.get("message") else ""))
            return EXIT_OK
        state = store.read_state()
        out = _offline_listing(config, store, state, "default")
        out["slots"] = dict((slot, _offline_listing(config, store, state, slot)) for slot in sorted(config.models))
    except OtaError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return EXIT_OK
    for slot, listed in sorted(out["slots"].items()):
        a = listed["active"]
        print("active:   %s%s %s (serial %s, sha256 %s)%s" % (_slot_label(slot), a["name"], a["version"], a["serial"],
                                                            a["sha256"][:12], "" if a["folder"] else
                                                            ", the config's model"))
        p = listed["previous"]
        print("previous: %s%s" % (_slot_label(slot), "%s %s (serial %s)" % (p["name"], p["version"], p["serial"])
                                  if isinstance(p, dict) else p or "none"))
    for r in out["refused"]:
        print("refused:  %s serial %s (%s): %s" % (r["name"], r["serial"], r.get("version"), r["reason"]))
    return EXIT_OK


def _offline_listing(config, store, state, slot):
    """A slot's active and previous model (the default slot's at the top level, as before slots)."""
    from edge.ota.install import current_model

    pointer = store.pointer(state, slot)
    previous = store.installed(pointer["previous"], slot)
    return {"active": current_model(store, config.models[slot], slot),
            "previous": previous.describe() if previous else ("the config's model" if pointer["active"] else None),
            "refused": state["refused"], "last": store.last(state, slot)}


def _slot_label(slot):
    return "" if slot == "default" else "[%s] " % slot


def cmd_rollback(args):
    try:
        config, store, running = _open(args)
        if config is None:
            return EXIT_BAD
        slot = args.slot or "default"
        if slot not in config.models:
            raise OtaError("unknown_slot", "the config has no model slot %r (slots: %s)"
                           % (slot, ", ".join(sorted(config.models))))
        if running:
            return _remote(config, {"action": "rollback", "slot": slot})
        state, bad = store.rollback(slot)
        now = store.active(slot)
        store.record({"state": "rolled_back", "reason": "rolled back by hand", "model": bad.describe() if bad else None},
                     slot)
    except OtaError as exc:
        return _fail(exc)
    print("rolled back from %s; active now: %s" % ("%s %s" % (bad.name, bad.version) if bad else "?",
                                                  "%s %s" % (now.name, now.version) if now else "the config's model"))
    return EXIT_OK


def add_model_commands(sub):
    """The `model` command group, added to lpr-edge's parser by edge/cli.py."""
    p = sub.add_parser("model", help="model packages: keygen, pack, verify, install, list, rollback",
                       description="Signed model packages (README: 'Model updates').")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")

    q = msub.add_parser("keygen", help="write an Ed25519 signing key and KEYFILE.pub")
    q.add_argument("keyfile")
    q.set_defaults(func=cmd_keygen)

    q = msub.add_parser("pack", help="make a signed package from an ONNX model and its characters list")
    q.add_argument("--model", required=True, help="ONNX model (an export or an NGC-style LPRNet)")
    q.add_argument("--characters", help="characters list (default: found beside the model)")
    q.add_argument("--name", required=True)
    q.add_argument("--version", required=True)
    q.add_argument("--serial", required=True, type=int, help="a number that grows with every release of NAME")
    q.add_argument("--golden", help="golden set: a folder with image/ and label/")
    q.add_argument("--min-accuracy", type=float, help="accuracy devices must reach on it (default: what the model "
                                                      "reads here)")
    q.add_argument("--kind", default="recognizer", choices=("recognizer", "detector"))
    q.add_argument("--key", help="private key from `lpr-edge model keygen`")
    q.add_argument("--unsigned", action="store_true", help="no signature (only devices with ota.allow_unsigned)")
    q.add_argument("--replaces", action="append", help="another model name this one may replace (repeatable)")
    q.add_argument("--plate-format", help="plate format, as model.plate_format")
    q.add_argument("--summary", help="release summary, one line")
    q.add_argument("--slot", help="the device config's model slot it is meant for (default: none named; the "
                                  "install's slot, else default)")
    q.add_argument("--min-daemon-version", help="oldest lpr-edge that can run it (default: this one)")
    q.add_argument("--out", required=True, help="package file to write")
    q.set_defaults(func=cmd_pack)

    q = msub.add_parser("verify", help="check a package as a device would (exit 0 only if it is intact, signed "
                                       "by one of the keys, and passes its contract and golden set)")
    q.add_argument("package")
    q.add_argument("--public-key", action="append", help="trusted public key (repeatable)")
    q.add_argument("--allow-unsigned", action="store_true")
    q.set_defaults(func=cmd_verify)

    for name, func, text in (("install", cmd_install, "install a package (file or URL) on the state dir"),
                             ("list", cmd_list, "the active, previous and refused models"),
                             ("rollback", cmd_rollback, "make the previous model active again")):
        q = msub.add_parser(name, help=text + " (through the running daemon over MQTT, else offline)")
        q.add_argument("--config", required=True, help="the daemon's config YAML")
        if name in ("install", "rollback"):
            q.add_argument("--slot", help="model slot (config model: is default, models: names the others); "
                                          "install without it: the package's slot, else default")
        if name == "install":
            q.add_argument("source", help="package file or http(s) URL")
            q.add_argument("--sha256", help="expected sha256 of the package file")
            q.add_argument("--size", type=int, help="expected size in bytes")
            q.add_argument("--allow-downgrade", action="store_true", help="install a lower serial")
        if name == "list":
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=func)
    p.set_defaults(func=lambda args: (p.print_help(), EXIT_BAD)[1])
