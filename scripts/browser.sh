#!/usr/bin/env bash
# Debian's Chromium for the task-page test (Playwright drives it with executable_path; no
# browser download), and a colour emoji font: without one, emoji in group names render as
# empty boxes. Installs the `chromium` and `fonts-noto-color-emoji` packages when missing.
set -u
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing+=(fonts-noto-color-emoji)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
echo "installing Debian's ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"; } >&2; then
    echo "ERROR: cannot install Debian's ${missing[*]} (apt-get failed); the task-page test needs them" >&2
    exit 1
fi
command -v chromium >/dev/null 2>&1 || { echo "ERROR: chromium still not found after install" >&2; exit 1; }
