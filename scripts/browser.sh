#!/usr/bin/env bash
# Debian's Chromium for the task-page test (Playwright drives it with executable_path; no
# browser download). Installs the `chromium` package when /usr/bin/chromium is missing.
set -u
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
echo "chromium is missing; installing Debian's chromium package" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } >&2; then
    echo "ERROR: cannot install Debian's chromium (apt-get failed); the task-page test needs it" >&2
    exit 1
fi
command -v chromium >/dev/null 2>&1 || { echo "ERROR: chromium still not found after install" >&2; exit 1; }
