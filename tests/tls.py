"""A test CA, a broker certificate for 127.0.0.1 and a client certificate, made with openssl at test time."""
import os
import subprocess


def _run(*args, cwd):
    subprocess.check_call(list(args), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_ca(folder, name):
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=%s" % name,
         "-keyout", name + ".key", "-out", name + ".pem", cwd=folder)
    return os.path.join(folder, name + ".pem")


def make_cert(folder, ca, name, server):
    ext = os.path.join(folder, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else "extendedKeyUsage=clientAuth\n")
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % name, "-keyout", name + ".key",
         "-out", name + ".csr", cwd=folder)
    _run("openssl", "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
         "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", name + ".pem", cwd=folder)
    return os.path.join(folder, name + ".pem"), os.path.join(folder, name + ".key")


def make_pki(folder):
    folder = str(folder)
    pki = {"ca": make_ca(folder, "ca"), "rogue_ca": make_ca(folder, "rogue")}
    pki["server_cert"], pki["server_key"] = make_cert(folder, "ca", "server", True)
    pki["client_cert"], pki["client_key"] = make_cert(folder, "ca", "client", False)
    return pki
