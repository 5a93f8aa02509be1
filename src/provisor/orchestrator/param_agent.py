"""`provisor-param`: the command machines use to publish and read runtime parameters.

Installed on each machine at /usr/local/bin/provisor-param. It talks HTTPS to the
controller named in /etc/provisor/param.env, trusting only the certificate in
/etc/provisor/param.crt (plain HTTP when the controller listens on loopback, where
the calls never leave the computer), and keeps trying for up to five minutes while
the controller cannot be reached (it restarts, or is too busy to answer in time; both
files are rewritten on resume).
Values that never change once the machine is configured (the addresses and host
names provisor publishes, of this machine and of those it waits for) are in
/etc/provisor/known.json: `get` answers them without calling the controller.
`get` takes several keys, with one deadline for all: a script that waits for a
hundred machines' values starts one process, not a hundred.
Only the standard library: machines have python3 and nothing else of ours. It runs
many times on every machine, so it starts lean: `ssl` and `urllib` (most of a start's
~70 ms of CPU) are imported only for HTTPS, plain HTTP is a few lines on a socket, and
`json` (~12 ms) only to send a value or to read a known value that needs parsing.
"""

AGENT = r'''#!/usr/bin/env python3
"""provisor-param set KEY VALUE | provisor-param get NODE.INDEX.KEY... [--wait SECONDS]"""
import sys, time

ENV = "/etc/provisor/param.env"
CERT = "/etc/provisor/param.crt"
KNOWN = "/etc/provisor/known.json"
UNREACHABLE = 300.0  # seconds a call keeps trying while the controller cannot be reached

def known(key):
    """The value in known.json, if any. `json` costs a start more than all the rest: the
    file (json.dumps of names and addresses) is searched as text first; a value with an
    escape in it, or a file of another shape, is parsed as JSON."""
    try:
        with open(KNOWN) as f:
            text = f.read()
    except OSError:
        return None
    plain = all(c.isascii() and (c.isalnum() or c in "._-") for c in key)
    start = text.find('"%s": "' % key) if plain else -1
    if start >= 0:
        start += len(key) + 5
        end = text.find('"', start)
        if end >= 0 and "\\" not in text[start:end]:
            return text[start:end]
    if '"%s"' % key not in text:
        return None
    import json
    try:
        found = json.loads(text)
    except ValueError:
        return None
    value = found.get(key) if isinstance(found, dict) else None
    return value if isinstance(value, str) else None

def settings():
    values = {}
    with open(ENV) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            values[key] = value
    return values

def plain(url, method, path, data, headers, timeout):
    """HTTP/1.1 on a socket, one request and the server closes: (status, text)."""
    import socket
    host, _, port = url[len("http://"):].rstrip("/").rpartition(":")
    head = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host, "Connection: close",
            "Content-Length: %d" % len(data)]
    head += ["%s: %s" % item for item in headers.items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + data
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    top, found, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not found:
        raise OSError("the controller closed the connection before it answered")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split(None, 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            body = body[:int(value)]
    return status, body.decode("utf-8", "replace")

def call(method, path, body=None, timeout=30.0):
    """(status, text) of the controller's answer; OSError if it cannot be reached."""
    s = settings()
    url = s["PROVISOR_PARAM_URL"]
    if body is None:
        data = b""
    else:
        import json
        data = json.dumps(body).encode()
    headers = {"Authorization": "Bearer " + s["PROVISOR_PARAM_TOKEN"],
               "Content-Type": "application/json"}
    if url.startswith("http://"):
        return plain(url, method, path, data, headers, timeout)
    import ssl, urllib.error, urllib.request
    request = urllib.request.Request(url + path, method=method,
                                     data=None if body is None else data, headers=headers)
    # The controller's own certificate, pinned: the only one trusted, no name to check.
    tls = ssl.create_default_context(cafile=CERT)
    tls.check_hostname = False
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            raise Untrusted(e.reason) from None
        raise
    except ssl.SSLError as e:  # during the read
        raise Untrusted(e) from None

class Untrusted(Exception):
    """TLS refused (not the pinned certificate): no retry will change that."""

def unreachable(e):
    sys.stderr.write("provisor-param: controller unreachable: %s\n" % e)
    return 3

def set_value(key, value):
    deadline = time.monotonic() + UNREACHABLE
    while True:
        try:
            status, text = call("POST", "/set", {"key": key, "value": value})
        except Untrusted as e:
            return unreachable(e)
        except (OSError, ValueError) as e:
            if time.monotonic() > deadline:
                return unreachable(e)
            time.sleep(1)
            continue
        if status == 200:
            return 0
        sys.stderr.write("provisor-param: %s\n" % text)
        return 2

def get(key, deadline):
    value = known(key)
    if value is not None:
        sys.stdout.write(value + "\n")
        return 0
    # A value that is set is still read when the controller was briefly unreachable.
    reachable_by = max(deadline, time.monotonic() + UNREACHABLE)
    while True:
        left = max(0.0, deadline - time.monotonic())
        query = "key=%s&wait=%.1f" % (quote(key), min(left, 25))
        try:
            status, text = call("GET", "/get?" + query, timeout=40)
        except Untrusted as e:
            return unreachable(e)
        except (OSError, ValueError) as e:
            if time.monotonic() >= reachable_by:
                return unreachable(e)
            time.sleep(1)
            continue
        if status == 200:
            sys.stdout.write(text + "\n")
            return 0
        if status != 408 or time.monotonic() >= deadline:
            sys.stderr.write("provisor-param: %s\n" % text)
            return 1 if status == 408 else 2

def quote(text):
    """`text` for a URL query (what urllib.parse.quote does, without importing it)."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
    return "".join(chr(b) if b in safe else "%%%02X" % b for b in text.encode())

def main(argv):
    if len(argv) == 3 and argv[0] == "set":
        return set_value(argv[1], argv[2])
    if argv[:1] == ["get"]:
        keys, wait = argv[1:], 0.0
        if len(keys) >= 2 and keys[-2] == "--wait":
            try:
                wait = float(keys[-1])
            except ValueError:
                return usage()
            keys = keys[:-2]
        if not keys or any(k.startswith("-") for k in keys):
            return usage()
        deadline = time.monotonic() + wait  # one deadline for all the keys
        for key in keys:
            code = get(key, deadline)
            if code:
                return code
        return 0
    return usage()

def usage():
    sys.stderr.write(__doc__ + "\n")
    return 2

sys.exit(main(sys.argv[1:]))
'''
