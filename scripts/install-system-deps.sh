#!/bin/sh
# Installs the Debian packages provisor's testbed needs, when running as root.
# Without root the testbed falls back to process isolation and needs none. dpkg-dev:
# dpkg-scanpackages, with which the patching tests build their local apt repositories.
set -eu
PACKAGES="openssh-server openssh-client util-linux procps iproute2 sudo dpkg-dev"
if [ "$(id -u)" != 0 ]; then
    echo "not root: skipping Debian packages ($PACKAGES); the testbed will use process isolation"
    exit 0
fi
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
# Keep the package from starting a system sshd on 0.0.0.0:22: test hosts bind 127.x.y.z:22.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
