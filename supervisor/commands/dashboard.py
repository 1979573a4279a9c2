"""``supervise dashboard``: the live web dashboard, from a run folder or a live supervisor."""

import os

NAME = "dashboard"
HELP = "the live web dashboard"
TOKEN_ENV = "SUPERVISOR_DASHBOARD_TOKEN"


GENERATE = "generate"  # --token generate: a fresh token, printed in the URL to open


def uses_ray(args) -> bool:
    return not args.run


def add_arguments(p) -> None:
    from supervisor.commands import number

    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=number(int, ge=0, le=65535), default=8266,
                   help="port (default 8266; 0 picks a free one)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", metavar="RUN_DIR", help="read this run folder's supervisor.db (read-only, live-polled), "
                                                      "or a run storage URI's store snapshot (s3://bucket/prefix/RUN)")
    src.add_argument("--address", metavar="ADDR",
                     help="attach to the Ray cluster's live supervisor (default: RAY_ADDRESS)")
    p.add_argument("--token", help=f"enable manual controls, guarded by this token (default: ${TOKEN_ENV}); "
                                   f"'{GENERATE}' makes one and prints the URL to open, token included; "
                                   "without one the dashboard is read-only")
    p.add_argument("--poll", type=number(float, ge=0.05, le=60), default=0.5,
                   help="seconds between store polls (default 0.5)")


def run(args) -> int:
    import signal
    import sys
    from pathlib import Path

    from supervisor.errors import InputError

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise InputError("--token", None, "must not be empty")
    generated = token == GENERATE
    if generated:  # a token nobody sees is no use: it is printed once, in the URL to open
        import secrets

        token = secrets.token_urlsafe(24)

    from supervisor.dashboard.data import Hub, RunView
    from supervisor.dashboard.server import is_loopback, serve
    from supervisor.storage import Storage, is_uri

    actor_call = None
    cache = None
    if args.run and is_uri(args.run) and not Storage(args.run).is_local:
        import tempfile

        from supervisor.dashboard.data import StorageRunView

        cache = tempfile.TemporaryDirectory(prefix="supervisor-dashboard-")
        view = StorageRunView(args.run, cache.name, refresh_s=max(args.poll, 5.0))
        view.refresh()
        if view.store is None and view._seen is None and view.error and view.error.startswith("cannot read"):
            cache.cleanup()
            raise InputError(view.label, None, view.error.split(": ", 1)[-1])
        hub = Hub("run", view.label, [view], poll_s=args.poll)
        where = f"run storage {view.label} (its store snapshot, read-only)"
    elif args.run:
        p = Path(Storage(args.run).root if is_uri(args.run) else args.run)
        if not p.exists():
            raise InputError(args.run, None, "no such run folder")
        if p.is_file() and p.suffix != ".db":
            raise InputError(args.run, None, "not a run folder (give the folder holding supervisor.db)")
        db = p / "supervisor.db" if p.is_dir() else p
        if db.is_file():  # there but not a store we can read: say so now (a missing one is waited for)
            import sqlite3

            from supervisor.report.build import store_problem
            from supervisor.store import Store

            try:
                st = Store.open_readonly(db)
                try:  # the reads the dashboard starts with: damage past the first page shows here
                    st.last_report_rowid()
                    st.newest_findings(1)
                    st.trials()
                finally:
                    st.close()
            except sqlite3.Error as e:
                raise InputError(str(db), None, store_problem(e)) from None
        hub = Hub("run", str(p.resolve()), [RunView(p.resolve())], poll_s=args.poll)
        where = f"run folder {p.resolve()} (read-only)"
    else:
        address = args.address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise InputError("supervise dashboard", None,
                             "give --run RUN_DIR, or --address ADDR (or set RAY_ADDRESS) for a live supervisor")
        try:
            from actors.live_link import LiveLink  # the Ray side, only for a live supervisor

            live = LiveLink(address)
        except Exception as e:
            print(f"supervise dashboard: cannot attach to Ray at {address}: {e.__class__.__name__}: {e}",
                  file=sys.stderr)
            return 1
        hub = Hub("live", address, live=live, poll_s=args.poll)
        actor_call = live.request_action
        where = f"live supervisor at {address}"
    try:
        srv = serve(hub, args.host, args.port, token, actor_call)
    except OSError as e:
        hub.stop()
        if cache is not None:
            cache.cleanup()
        raise InputError("--port", None, f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    controls = "controls on (token required)" if token else "read-only"
    print(f"dashboard: {srv.url()}  [{where}; {controls}]", flush=True)
    if generated:  # the app reads the token from the URL's fragment (never sent to a server), then drops it
        print(f"open: {srv.url().rstrip('/')}/#token={token}", flush=True)
    if token and not is_loopback(args.host):
        print("warning: the token crosses the network in clear text over plain HTTP; "
              "put a TLS proxy in front or bind to 127.0.0.1", file=sys.stderr, flush=True)

    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stopping.set()
        hub.stop()
        srv.server_close()
        if cache is not None:
            cache.cleanup()
    return 0
