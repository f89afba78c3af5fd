"""A real microphone path without sound hardware, for tests and CI.

``VirtualRoom`` gives a test a "room": a PulseAudio null sink named ``room``
whose monitor is the default source.  Whatever is played into the room
(``room.play(wav)``, i.e. ``paplay --device=room``) is what any recorder
hears, so the capture code under test runs unmodified through PortAudio ->
ALSA -> the ALSA "pulse" plugin -> PulseAudio, exactly as with a microphone.

    from pulse import VirtualRoom, pulse_available
    with VirtualRoom() as room:
        stream = sounddevice.InputStream(device="pulse", samplerate=16000,
                                         channels=1, dtype="int16", ...)
        room.play("speech.wav")

Needs (Debian 12): ``apt-get install pulseaudio pulseaudio-utils
libportaudio2`` -- pulseaudio Depends on libasound2-plugins, which ships the
ALSA "pulse" PCM (libasound_module_pcm_pulse.so) and
/etc/alsa/conf.d/50-pulseaudio.conf defining the ``pulse`` device.  No
~/.asoundrc, /etc/asound.conf, dbus, systemd or sound card is needed.

If no PulseAudio server answers, the room starts a private one as the current
user (root works: PulseAudio only warns) with its socket and state in a
temporary folder, and points clients at it through PULSE_SERVER, set both in
``os.environ`` (for in-process clients such as sounddevice, and children that
inherit it) and in ``room.env`` (to pass to subprocesses explicitly).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SINK = "room"
_BINARIES = ("pulseaudio", "pactl", "paplay")
# Where Debian/Ubuntu (multiarch) and other distros put ALSA plugins.
_ALSA_PULSE_PLUGIN_GLOBS = (
    "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so",
    "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so",
    "/usr/lib64/alsa-lib/libasound_module_pcm_pulse.so",
)


def pulse_available() -> str | None:
    """None when a VirtualRoom can be made here, else why not (meant for a
    pytest skip message; CI installs the packages, so there it is None)."""
    missing = [b for b in _BINARIES if shutil.which(b) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install pulseaudio pulseaudio-utils)"
    if not any(glob.glob(g) for g in _ALSA_PULSE_PLUGIN_GLOBS):
        return "missing the ALSA pulse plugin (apt-get install libasound2-plugins)"
    return None


def _pactl(env: dict, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _server_answers(env: dict) -> bool:
    try:
        return _pactl(env, "info", timeout=5.0).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def refresh_portaudio() -> None:
    """Make an already-imported sounddevice re-list devices.  PortAudio lists
    ALSA devices once, at initialisation, and drops those it cannot open --
    so a "pulse" device probed before the server ran would stay missing."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


class VirtualRoom:
    """Context manager: a PulseAudio null sink ``room`` whose monitor is the
    default source.  On exit it unloads what it loaded, restores the default
    source, and stops the daemon only if it started it."""

    def __init__(self, sink: str = SINK, rate: int = 16000, channels: int = 1,
                 start_timeout: float = 15.0):
        self.sink = sink
        self.source = f"{sink}.monitor"
        # A 16 kHz mono sink: the engine records 16 kHz mono, so the monitor
        # needs no resampling; paplay resamples whatever it plays into it.
        self.rate, self.channels = rate, channels
        self.start_timeout = start_timeout
        self.env: dict[str, str] = dict(os.environ)
        self._daemon: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._module: str | None = None
        self._old_default_source: str | None = None
        self._old_environ: dict[str, str | None] = {}
        self._keepalive: subprocess.Popen | None = None

    # -- daemon -------------------------------------------------------------
    def _start_daemon(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="subtitler-pulse-")
        d = self._tmp.name
        # Private runtime/state folders: nothing depends on XDG_RUNTIME_DIR or
        # HOME being usable, no stale ~/.config/pulse state leaks in, and
        # clients find the server through PULSE_SERVER alone.
        extra = {"PULSE_RUNTIME_PATH": d, "PULSE_STATE_PATH": d,
                 "PULSE_SERVER": f"unix:{d}/native"}
        self.env.update(extra)
        self.log = Path(d) / "pulseaudio.log"
        cmd = ["pulseaudio",
               "--daemonize=no",         # our child: we own its pid and stop it
               "--exit-idle-time=-1",    # don't quit between tests
               "--disallow-exit",        # clients can't stop it under us
               "--realtime=no", "--high-priority=no",  # no RT scheduling needed for a null sink
               "-n",                     # skip default.pa: no udev/dbus/systemd/alsa probing
               "--load=module-native-protocol-unix auth-anonymous=1",
               "--log-target=stderr"]
        with open(self.log, "wb") as log:
            self._daemon = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while not _server_answers(self.env):
            if self._daemon.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                self._stop_daemon()
                raise RuntimeError(f"pulseaudio did not start:\n{tail}")
            time.sleep(0.1)
        # In-process clients (sounddevice -> PortAudio -> ALSA pulse plugin)
        # read PULSE_SERVER from this process's environment at stream open.
        for k, v in extra.items():
            self._old_environ[k] = os.environ.get(k)
            os.environ[k] = v

    def _stop_daemon(self) -> None:
        if self._daemon is not None:
            if self._daemon.poll() is None:
                self._daemon.terminate()
                try:
                    self._daemon.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._daemon.kill()
                    self._daemon.wait()
            self._daemon = None
        for k, v in self._old_environ.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._old_environ = {}
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- context manager ----------------------------------------------------
    def __enter__(self) -> "VirtualRoom":
        reason = pulse_available()
        if reason:
            raise RuntimeError(reason)
        if not _server_answers(self.env):
            self._start_daemon()
        try:
            sinks = _pactl(self.env, "list", "short", "sinks").stdout.split("\n")
            if not any(line.split("\t")[1:2] == [self.sink] for line in sinks):
                r = _pactl(self.env, "load-module", "module-null-sink", f"sink_name={self.sink}",
                           f"rate={self.rate}", f"channels={self.channels}",
                           *(["channel_map=mono"] if self.channels == 1 else []),
                           "format=s16le", "sink_properties=device.description=VirtualRoom")
                if r.returncode != 0:
                    raise RuntimeError(f"pactl load-module failed: {r.stderr.strip()}")
                self._module = r.stdout.strip()
            old = _pactl(self.env, "get-default-source")
            self._old_default_source = old.stdout.strip() if old.returncode == 0 else None
            r = _pactl(self.env, "set-default-source", self.source)
            if r.returncode != 0:
                raise RuntimeError(f"pactl set-default-source failed: {r.stderr.strip()}")
            self._start_keepalive()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        refresh_portaudio()
        return self

    def _start_keepalive(self) -> None:
        """Keep the room 'live' like a real microphone.

        An idle null sink renders in 2-second blocks, so a capture stream
        opened while nothing plays gets its first audio only up to 2 s later.
        A low-latency stream of zeros (inaudible: it mixes as silence) makes
        the sink render every ~10 ms; a suspend/resume then restarts the
        sink's clock at once instead of after the pending 2 s block.  With
        it the first capture callback comes within ~20 ms of opening."""
        sink_index = next((line.split("\t")[0] for line in
                           _pactl(self.env, "list", "short", "sinks").stdout.splitlines()
                           if line.split("\t")[1:2] == [self.sink]), None)
        self._keepalive = subprocess.Popen(
            ["pacat", "--playback", f"--device={self.sink}", "--latency-msec=20", "--raw",
             "--format=s16le", f"--rate={self.rate}", f"--channels={self.channels}",
             "--client-name=subtitler-room-keepalive", "/dev/zero"],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and self._keepalive.poll() is None:
            inputs = _pactl(self.env, "list", "short", "sink-inputs").stdout.splitlines()
            if any(line.split("\t")[1:2] == [sink_index] for line in inputs):
                break
            time.sleep(0.02)
        _pactl(self.env, "suspend-sink", self.sink, "1")
        _pactl(self.env, "suspend-sink", self.sink, "0")

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            if self._keepalive.poll() is None:
                self._keepalive.terminate()
                try:
                    self._keepalive.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._keepalive.kill()
                    self._keepalive.wait()
            self._keepalive = None

    def __exit__(self, *exc) -> None:
        self._stop_keepalive()
        if self._daemon is None and _server_answers(self.env):
            # Someone else's server: leave it as we found it.
            if self._old_default_source and self._old_default_source != self.source:
                _pactl(self.env, "set-default-source", self._old_default_source)
            if self._module:
                _pactl(self.env, "unload-module", self._module)
        self._module = None
        self._stop_daemon()  # no-op unless we started it
        refresh_portaudio()

    # -- use ----------------------------------------------------------------
    def play(self, wav_path, wait: bool = True) -> subprocess.Popen:
        """Play a sound file into the room.  Returns the paplay Popen: still
        running when wait=False, finished (and checked) when wait=True."""
        # A small client buffer so the sound reaches the sink at once and
        # paplay returns right after its last sample has been played.
        p = subprocess.Popen(["paplay", f"--device={self.sink}", "--latency-msec=50", str(wav_path)],
                             env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait:
            _, err = p.communicate()
            if p.returncode != 0:
                raise subprocess.CalledProcessError(p.returncode, p.args, stderr=err)
        return p
