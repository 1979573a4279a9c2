"""The live web dashboard (``supervise dashboard``): a standard-library HTTP server and a static single-page app.

Everything it serves ships in this package (``static/``, with uPlot vendored
under ``static/vendor/``): no CDN, works offline.
"""

from supervisor.dashboard.data import Hub, LiveLink, RunView
from supervisor.dashboard.server import DashboardServer, serve

__all__ = ["Hub", "LiveLink", "RunView", "DashboardServer", "serve"]
