"""moto's server for Kinesis Video, control plane and archived media on one port.

moto_server picks a backend by the SigV4 credential scope of each request; the archived-media
API signs with the same scope as the control plane (`kinesisvideo`), so moto_server alone sends
GetHLSStreamingSessionURL to the control-plane backend (404). This script serves moto's own
application with one change: the archived-media paths go to moto's archived-media backend.
Everything else is moto as moto_server runs it.

It also records what it answered, for the tests: GET /recorded lists every request
(`METHOD PATH`) and every session URL moto issued.

Usage: moto_kvs.py PORT
"""

import json
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

ARCHIVED_MEDIA = ("/getHLSStreamingSessionURL", "/getDASHStreamingSessionURL", "/getClip")
RECORDED = {"requests": [], "issued": []}
LOCK = threading.Lock()


class Dispatcher(DomainDispatcherApplication):
    def get_application(self, environ):
        if environ.get("PATH_INFO", "") in ARCHIVED_MEDIA:
            with self.lock:
                backend = "kinesisvideoarchivedmedia"
                app = self.app_instances.get(backend)
                if app is None:
                    app = self.create_app(backend)
                    self.app_instances[backend] = app
                return app
        return super().get_application(environ)


def recording(app):
    def serve(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/recorded":
            with LOCK:
                body = json.dumps(RECORDED).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        with LOCK:
            RECORDED["requests"].append(f"{environ['REQUEST_METHOD']} {path}")
        chunks = list(app(environ, start_response))
        if path in ARCHIVED_MEDIA[:2]:
            answer = json.loads(b"".join(chunks) or b"{}")
            with LOCK:
                RECORDED["issued"].extend(
                    v for k, v in answer.items() if k.endswith("StreamingSessionURL")
                )
        return chunks

    return serve


run_simple("127.0.0.1", int(sys.argv[1]), recording(Dispatcher(create_backend_app)), threaded=True)
