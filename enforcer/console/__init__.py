"""The approver console: server-rendered HTML over HTTP(S), served next to
the gRPC service when `console.listen` is set (enforcer.console.server).

One module per job:
- links.py      the URLs a notification carries (console page, confirm link)
- sessions.py   server-side sessions and CSRF tokens
- security.py   response headers (CSP, ...), request bounds, safe redirects
- attention.py  which logged calls need a human's attention (pure)
- timeline.py   a task's verified timeline, read off the event loop
- render.py     the jinja2 environment (autoescaped, strict) and filters
- app.py        the Starlette routes
- server.py     ConsoleServer: uvicorn on the service's asyncio loop
"""
