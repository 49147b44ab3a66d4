"""A minimal OTLP/HTTP receiver for the privileged tests: decodes POST /v1/logs and
/v1/metrics with the official protobuf definitions (the opentelemetry-proto package) and
appends what it decoded to a JSON-lines file, one line per request:
{"path": "/v1/logs", "request": <the ExportLogsServiceRequest as protobuf JSON>}.

Usage: receiver.py PORT OUT.jsonl
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

ROUTES = {
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        route = ROUTES.get(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if route is None:
            self.send_error(404)
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_error(415)
            return
        req = route[0]()
        try:
            req.ParseFromString(body)
        except Exception as e:  # a decoding failure is what the test is looking for
            self.send_error(400, str(e))
            return
        line = {
            "path": self.path,
            "user_agent": self.headers.get("User-Agent"),
            "request": MessageToDict(req, preserving_proto_field_name=True),
        }
        with open(OUT, "a") as f:
            f.write(json.dumps(line) + "\n")
        reply = route[1]().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port, OUT = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()
