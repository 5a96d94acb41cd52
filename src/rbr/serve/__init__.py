"""The HTTP reward server behind ``rbr serve``.

It needs the ``serve`` extra (FastAPI, uvicorn and prometheus-client); the
rest of rbr does not import this package.
"""

from rbr.serve.app import ServeConfigError, ServeSettings, create_app

__all__ = ["ServeConfigError", "ServeSettings", "create_app"]
