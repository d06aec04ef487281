"""pki -- a throwaway test PKI made with the openssl command line tool.

    p = pki.get()        # made once per process, removed at exit
    p.ca                 CA certificate that signed the server certificates
    p.server_cert, p.server_key      for localhost, 127.0.0.1 and ::1
    p.wrong_cert, p.wrong_key        signed by p.ca, names only wrong.invalid
    p.other_ca           an unrelated CA (for "unknown CA" tests)
    p.other_cert, p.other_key        localhost/127.0.0.1/::1, signed by other_ca
    p.client_cert, p.client_key      a TLS client certificate (clientAuth), signed by p.ca
    p.dh                 ffdhe2048 parameters (Dovecot 2.3 wants ssl_dh)
    p.fingerprint(cert)  "sha256:<lowercase hex>" of the DER certificate

Keys are EC P-256 (fast to make).  Files are world-readable except the keys.
"""

import atexit
import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile


_pki = None


def _openssl(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), p.stderr.decode(errors="replace")))
    return p.stdout


class PKI:
    def __init__(self, d):
        self.dir = d
        self.ca = os.path.join(d, "ca.crt")
        self.ca_key = os.path.join(d, "ca.key")
        self.other_ca = os.path.join(d, "other-ca.crt")
        self.other_ca_key = os.path.join(d, "other-ca.key")
        self.server_cert = os.path.join(d, "server.crt")
        self.server_key = os.path.join(d, "server.key")
        self.wrong_cert = os.path.join(d, "wrong.crt")
        self.wrong_key = os.path.join(d, "wrong.key")
        self.other_cert = os.path.join(d, "other.crt")
        self.other_key = os.path.join(d, "other.key")
        self.client_cert = os.path.join(d, "client.crt")
        self.client_key = os.path.join(d, "client.key")
        self.dh = os.path.join(d, "dh.pem")

    def _make_ca(self, cert, key, name):
        _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", key, "-out", cert, "-days", "3650", "-sha256",
                  "-subj", "/O=pop3bridge tests/CN=%s" % name,
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                  "-addext", "subjectKeyIdentifier=hash"], self.dir)

    def _make_leaf(self, cert, key, cn, san, ca, ca_key, eku="serverAuth"):
        csr = cert + ".csr"
        ext = cert + ".ext"
        _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", key, "-out", csr, "-sha256", "-subj", "/O=pop3bridge tests/CN=%s" % cn],
                 self.dir)
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n"
                    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" % (san, eku))
        _openssl(["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                  "-out", cert, "-days", "3650", "-sha256", "-extfile", ext], self.dir)
        os.unlink(csr)
        os.unlink(ext)

    def make(self):
        self._make_ca(self.ca, self.ca_key, "pop3bridge test CA")
        self._make_ca(self.other_ca, self.other_ca_key, "unrelated test CA")
        local = "DNS:localhost,IP:127.0.0.1,IP:::1"
        self._make_leaf(self.server_cert, self.server_key, "localhost", local, self.ca, self.ca_key)
        self._make_leaf(self.wrong_cert, self.wrong_key, "wrong.invalid", "DNS:wrong.invalid",
                        self.ca, self.ca_key)
        self._make_leaf(self.other_cert, self.other_key, "localhost", local, self.other_ca,
                        self.other_ca_key)
        self._make_leaf(self.client_cert, self.client_key, "pop3bridge test client",
                        "DNS:client.invalid", self.ca, self.ca_key, eku="clientAuth")
        _openssl(["genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
                  "-out", self.dh], self.dir)
        for f in os.listdir(self.dir):
            os.chmod(os.path.join(self.dir, f), 0o600 if f.endswith(".key") else 0o644)
        # the chain must verify, or every TLS test would fail for the wrong reason
        for cert, ca in ((self.server_cert, self.ca), (self.wrong_cert, self.ca),
                         (self.other_cert, self.other_ca), (self.client_cert, self.ca)):
            _openssl(["verify", "-CAfile", ca, cert], self.dir)
        return self

    @staticmethod
    def der(cert):
        with open(cert) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    def fingerprint(self, cert=None):
        return "sha256:" + hashlib.sha256(self.der(cert or self.server_cert)).hexdigest()


def get():
    """The process's PKI, made on first use."""
    global _pki
    if _pki is None:
        d = tempfile.mkdtemp(prefix="p3b-pki-")
        os.chmod(d, 0o755)
        # at exit, not with the per-module cleanups: shared by the whole run
        atexit.register(shutil.rmtree, d, True)
        _pki = PKI(d).make()
    return _pki
