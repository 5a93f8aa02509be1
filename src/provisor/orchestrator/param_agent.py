"""`provisor-param`: the command machines use to publish and read runtime parameters.

Installed on each machine at /usr/local/bin/provisor-param. It talks HTTPS to the
controller named in /etc/provisor/param.env, trusting only the certificate in
/etc/provisor/param.crt (plain HTTP when the controller listens on loopback, where
the calls never leave the computer), and keeps retrying while the controller
restarts (both files are rewritten on resume).
Values that never change once the machine is configured (the addresses and host
names provisor publishes, of this machine and of those it waits for) are in
/etc/provisor/known.json: `get` answers them without calling the controller.
Only the standard library: machines have python3 and nothing else of ours.
"""

AGENT = r'''#!/usr/bin/env python3
"""provisor-param set KEY VALUE | provisor-param get NODE.INDEX.KEY [--wait SECONDS]"""
import json, ssl, sys, time, urllib.error, urllib.parse, urllib.request

ENV = "/etc/provisor/param.env"
CERT = "/etc/provisor/param.crt"
KNOWN = "/etc/provisor/known.json"

def known(key):
    try:
        with open(KNOWN) as f:
            return json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return None

def settings():
    values = {}
    with open(ENV) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            values[key] = value
    return values

def call(method, path, body=None, timeout=30.0):
    s = settings()
    request = urllib.request.Request(
        s["PROVISOR_PARAM_URL"] + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + s["PROVISOR_PARAM_TOKEN"],
                 "Content-Type": "application/json"})
    tls = None
    if s["PROVISOR_PARAM_URL"].startswith("https:"):
        # The controller's own certificate, pinned: the only one trusted, no name to check.
        tls = ssl.create_default_context(cafile=CERT)
        tls.check_hostname = False
    with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:
        return response.status, response.read().decode()

def main(argv):
    if len(argv) == 3 and argv[0] == "set":
        deadline = time.monotonic() + 300
        while True:
            try:
                call("POST", "/set", {"key": argv[1], "value": argv[2]})
                return 0
            except urllib.error.HTTPError as e:
                sys.stderr.write("provisor-param: %s\n" % e.read().decode())
                return 2
            except OSError as e:
                if time.monotonic() > deadline:
                    sys.stderr.write("provisor-param: controller unreachable: %s\n" % e)
                    return 3
                time.sleep(1)
    if len(argv) in (2, 4) and argv[0] == "get":
        wait = 0.0
        if len(argv) == 4:
            if argv[2] != "--wait":
                return usage()
            wait = float(argv[3])
        value = known(argv[1])
        if value is not None:
            sys.stdout.write(value + "\n")
            return 0
        deadline = time.monotonic() + wait
        while True:
            left = max(0.0, deadline - time.monotonic())
            query = urllib.parse.urlencode({"key": argv[1], "wait": "%.1f" % min(left, 25)})
            try:
                status, text = call("GET", "/get?" + query, timeout=40)
                sys.stdout.write(text + "\n")
                return 0
            except urllib.error.HTTPError as e:
                message = e.read().decode()
                if e.code != 408:
                    sys.stderr.write("provisor-param: %s\n" % message)
                    return 2
                if time.monotonic() >= deadline:
                    sys.stderr.write("provisor-param: %s\n" % message)
                    return 1
            except OSError as e:
                if time.monotonic() >= deadline:
                    sys.stderr.write("provisor-param: controller unreachable: %s\n" % e)
                    return 3
                time.sleep(1)
    return usage()

def usage():
    sys.stderr.write(__doc__ + "\n")
    return 2

sys.exit(main(sys.argv[1:]))
'''
