"""The start-up probe trusts what the model clients trust: a certificate named by SSL_CERT_FILE."""

from __future__ import annotations

import http.server
import json
import shutil
import ssl
import subprocess
import threading

import pytest

from bots.llm import client
from bots.llm.probe import served_model

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")


class _Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"data": [{"id": "m"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_server(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


async def test_a_certificate_trusted_through_ssl_cert_file_passes_the_probe(https_server, monkeypatch) -> None:
    url, cert = https_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    client.tls_context.cache_clear()
    try:
        assert await served_model(url) == "m"
    finally:
        client.tls_context.cache_clear()


async def test_an_untrusted_certificate_is_named_in_one_line(https_server, monkeypatch) -> None:
    from core.errors import ModelError

    url, _ = https_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    client.tls_context.cache_clear()
    try:
        with pytest.raises(ModelError, match="SSL_CERT_FILE"):
            await served_model(url)
    finally:
        client.tls_context.cache_clear()
