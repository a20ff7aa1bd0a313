"""Audio devices as ``vocex-live`` names them: a numeric id or a name substring, the device's
own rate, PortAudio's latency setting.  Every problem is a :class:`DeviceError` (exit 5)."""

from __future__ import annotations

from vocex.model.errors import DeviceError


def list_devices() -> str:
    """PortAudio's device list, as ``vocex-live -l`` prints it."""
    try:
        import sounddevice as sd

        return str(sd.query_devices())
    except Exception as exc:  # PortAudio missing or broken
        raise DeviceError(f"cannot list audio devices: {exc}") from exc


def resolve_device(spec: str | None, kind: str) -> int | None:
    """sounddevice device id from a number or a name substring (``None``: the default).

    Substrings match ``"<device name>, <host API name>"`` as in sounddevice, so ``JACK`` finds
    the JACK device; an ambiguous substring is an error that lists the candidates."""
    import sounddevice as sd

    if spec is None:
        return None
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices: {exc}") from None
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    if spec.strip().isdigit():
        index = int(spec)
        if not 0 <= index < len(devices):
            raise DeviceError(f"no audio device {index} (vocex-live -l lists them)")
        if devices[index][key] < 1:
            raise DeviceError(f"device {index} ({devices[index]['name']}) has no {kind} channels")
        return index
    try:
        return int(sd.query_devices(spec, kind)["index"])
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        if "multiple" in first.lower():
            raise DeviceError(f"{spec!r} matches several {kind} devices; give the number (vocex-live -l)") from None
        raise DeviceError(f"no {kind} device matches {spec!r} (vocex-live -l lists them)") from None


def device_rate(device: int | None, fallback: int) -> int:
    """The output device's own default rate (a JACK server's rate), else ``fallback``."""
    import sounddevice as sd

    try:
        return int(sd.query_devices(device, "output")["default_samplerate"])
    except (ValueError, sd.PortAudioError):
        return fallback


def latency_setting(value: str) -> str | float:
    """PortAudio's latency from ``--latency``: ``low``, ``high`` or seconds."""
    if value in ("low", "high"):
        return value
    try:
        return float(value)
    except ValueError:
        raise DeviceError(f"--latency must be 'low', 'high' or seconds, got {value!r}") from None
