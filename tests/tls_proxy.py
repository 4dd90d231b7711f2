"""An HTTPS reverse proxy for tests/tests/mlflow_https.rs: generates a private CA and a certificate
for 127.0.0.1 signed by it (python `cryptography`, installed with mlflow), serves TLS on a free loopback port and
forwards every request to the plain-HTTP MLflow server given as argv[1]. Prints
`<port> <CA certificate path>` on its first line, then serves until killed.
"""

import datetime
import http.client
import http.server
import ipaddress
import os
import socketserver
import ssl
import sys
import tempfile
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

target = urllib.parse.urlparse(sys.argv[1])
now = datetime.datetime.now(datetime.timezone.utc)


def certificate(subject, issuer, public_key, signing_key, ca):
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    )
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
    return b.sign(signing_key, hashes.SHA256())


# A private CA (what MLFLOW_TRACKING_SERVER_CERT_PATH points at) and the server's certificate.
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ibau test CA")])
ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, True)
key = ec.generate_private_key(ec.SECP256R1())
leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
leaf = certificate(leaf_name, ca_name, key.public_key(), ca_key, False)
tmp = tempfile.mkdtemp()
cert_path, leaf_path, key_path = (os.path.join(tmp, n) for n in ("ca.pem", "leaf.pem", "key.pem"))
with open(cert_path, "wb") as f:
    f.write(ca.public_bytes(serialization.Encoding.PEM))
with open(leaf_path, "wb") as f:
    f.write(leaf.public_bytes(serialization.Encoding.PEM))
with open(key_path, "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = forward

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Proxy)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(leaf_path, key_path)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], cert_path, flush=True)
server.serve_forever()
