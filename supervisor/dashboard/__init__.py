"""The live web dashboard (``supervise dashboard``): a standard-library HTTP server and a static single-page app.

Everything it serves ships in this package (``static/``, with uPlot vendored
under ``static/vendor/``): no CDN, works offline. Live mode's link to a running
supervisor is on the Ray side, ``actors.live_link.LiveLink``.
"""

from supervisor.dashboard.data import Hub, LiveSource, RunView
from supervisor.dashboard.server import DashboardServer, serve

__all__ = ["Hub", "LiveSource", "RunView", "DashboardServer", "serve"]
