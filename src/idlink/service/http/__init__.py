"""The HTTP/JSON API and the operator console (docs/http.md, docs/console.md).

A gateway on the server's event loop serves every RPC of the three services
over HTTP, as declared by the ``google.api.http`` annotations in the protos,
by calling the same RPC of the same process; ``/openapi.json`` describes
them and ``/console/`` is the operator's page.
"""

from idlink.service.http.gateway import Gateway, HttpServer, start_http

__all__ = ["Gateway", "HttpServer", "start_http"]
