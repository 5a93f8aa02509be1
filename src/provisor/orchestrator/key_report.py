"""The first-boot report of a machine's SSH host keys, so they are pinned before the
controller's first SSH connection.

A provider that cannot tell a machine's host key itself (EC2) runs these commands at
first boot (in the user data, before the node's own). They read the keys sshd serves,
`/etc/ssh/ssh_host_*_key.pub` (what cloud-init makes and prints to the console), and
send them to the controller's parameter endpoint (`POST /host-keys`), trusting its
certificate alone. The workflow waits for them and pins one before it connects: a
machine whose SSH then presents another key is refused.

User data is readable by whoever may read the instance's attributes, so the token in
it (`host_keys_token`) can do one thing only: report this machine's keys, once. A
report that differs from the first is refused.
"""

from __future__ import annotations

import hashlib
import hmac

_FENCE = "PROVISOR_HOST_KEYS"

# Only the standard library: machines have python3 (cloud-init is written in it).
_PROGRAM = r"""import glob, json, ssl, sys, time, urllib.error, urllib.request
URL, TOKEN, CERT = %(url)r, %(token)r, %(certificate)r
deadline = time.monotonic() + 300
while True:
    keys = [open(p).read().strip() for p in sorted(glob.glob("/etc/ssh/ssh_host_*_key.pub"))]
    if keys or time.monotonic() > deadline:
        break
    time.sleep(1)  # cloud-init makes them early; wait rather than report nothing
if not keys:
    sys.exit("provisor: no SSH host keys in /etc/ssh to report")
tls = None
if URL.startswith("https:"):
    # The controller's own certificate, pinned: the only one trusted, no name to check.
    tls = ssl.create_default_context(cadata=CERT)
    tls.check_hostname = False
request = urllib.request.Request(
    URL + "/host-keys", method="POST", data=json.dumps({"keys": "\n".join(keys)}).encode(),
    headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
while True:
    try:
        with urllib.request.urlopen(request, timeout=30, context=tls):
            print("provisor: SSH host keys reported to the controller")
            break
    except urllib.error.HTTPError as e:
        sys.exit("provisor: SSH host keys refused: %%s" %% e.read().decode())
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit("provisor: controller unreachable, SSH host keys not reported: %%s" %% e)
        time.sleep(2)
"""


def host_keys_token(key: bytes, instance: str, machine: str) -> str:
    """The token a machine of the deployment `instance` reports its host keys with (and
    can do nothing else with), signed with the controller's signing key."""
    message = f"host-keys/{instance}/{machine}".encode()
    digest = hmac.new(key, message, hashlib.sha256).hexdigest()
    return f"{instance}.{machine}.{digest[:32]}"


def report_commands(url: str, certificate: str, token: str) -> str:
    """Shell commands that report the machine's host keys to the controller at `url`
    (https: trusting `certificate` alone). A failure is printed (to the console log) and
    does not stop what follows: the controller then fails the machine, saying so."""
    program = _PROGRAM % {"url": url, "token": token, "certificate": certificate}
    assert _FENCE not in program
    return f"python3 - <<'{_FENCE}' || true\n{program}{_FENCE}\n"
