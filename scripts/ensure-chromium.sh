#!/usr/bin/env bash
# Install Debian's chromium for the browser test of report.html when it is missing and we can (root + apt).
# Never fails the build: when it cannot install, the browser test is skipped and says why.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the report.html browser test ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/tmp/ensure-chromium.log 2>&1 \
    || echo "could not install chromium (see /tmp/ensure-chromium.log): the browser test will be skipped" >&2
else
  echo "chromium missing and not root: the browser test will be skipped" >&2
fi
exit 0
