"""The Paasmaker example application: answers every GET with a greeting.

Run by the `shell` runtime as `python3 -u app.py PORT` (see
paasmaker.json); the heart gives it PM_INSTANCE_ID and the port in its
environment. SIGTERM (a stop) ends it at once.
"""

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = os.environ.get("GREETING", "Hello")
INSTANCE = os.environ.get("PM_INSTANCE_ID", "(no instance id)")


class Greeter(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{GREETING} from Paasmaker! I am instance {INSTANCE}.\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["PM_PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Greeter)
    print(f"hello: instance {INSTANCE} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
