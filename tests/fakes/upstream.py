"""A stand-in for aicallerd behind Caddy: shows which requests the proxy lets through."""

from http.server import BaseHTTPRequestHandler


class Upstream(BaseHTTPRequestHandler):
    """Stands in for aicallerd: echoes the path; upgrades /ai_caller/stream and echoes bytes."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            self.end_headers()
            self.wfile.flush()
            data = self.rfile.read(5)
            self.wfile.write(b"echo:" + data)
            self.wfile.flush()
            self.close_connection = True
            return
        self.reply()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.reply()

    def reply(self):
        body = f"upstream {self.command} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
