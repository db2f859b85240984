"""edgekit's framed serial protocol, the host side: talk to the device firmware on a board (or on an emulated board
behind a pseudo-terminal) over a serial port.

Where it sits: runtimes/board.py (``edgekit profile OUT --device PORT``) opens a :class:`Link` and asks the firmware
(targets/mcu/templates/device_main.c.j2, board/ek_link.c) for its identity and for inferences.

A frame is ``E5 4B | type (1 B) | seq (u32) | length (u32) | payload | CRC-32 (u32)``, little-endian, the CRC
(zlib's) over type, seq, length and payload. The host sends:

* ``H`` hello (no payload). Answer ``I``: ``"EKDV"``, protocol version (u8), flags (u8: 1 cycle counter present,
  2 streaming step program, 4 float32), kernel calls per inference K (u16), request bytes, output bytes, model id
  (CRC-32 of the model's C sources), arena bytes, clock Hz, steps per sequence (u32 each), then the board's name.
* ``R`` run, payload one input (a step program: one whole test sequence). Answer ``O``: status, markers seen when
  they were wrong (0 = right), stack high-water bytes, events, K (u32 each), then K + 1 cycle counts (u64: per
  kernel call, then the whole inference or sequence), then the output bytes.

The firmware may send ``T`` (text, e.g. a fault report), ``E`` (it refused a request: the text says why) and ``Z``
(it stopped; status i32). Every answer echoes its request's ``seq``, so a late answer to an earlier request (a
repeated hello) is never taken for the current one. Any frame whose checksum fails is an error, never a figure.
"""
from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

from edgekit.errors import DeviceError

SYNC = b"\xe5\x4b"
_HEADER = struct.Struct("<BII")   # type, seq, length
_CRC = struct.Struct("<I")
PROTOCOL_VERSION = 1
FLAG_CYCLES, FLAG_STREAMING, FLAG_FLOAT32 = 1, 2, 4
_INFO = struct.Struct("<4sBBHIIIIII")   # magic, version, flags, calls, request, output, model id, arena, clock, steps
_RESULT = struct.Struct("<iIIII")        # status, markers, stack, events, calls


def encode(kind: str, seq: int, payload: bytes = b"") -> bytes:
    """One frame, as the firmware reads it."""
    body = _HEADER.pack(ord(kind), seq & 0xFFFFFFFF, len(payload)) + payload
    return SYNC + body + _CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class Frame:
    kind: str
    seq: int
    payload: bytes


@dataclass(frozen=True)
class DeviceInfo:
    """What the firmware says about itself (the ``I`` answer)."""

    version: int
    has_cycles: bool
    streaming: bool
    float32: bool
    calls: int
    request_bytes: int
    output_bytes: int
    model_id: int
    arena_bytes: int
    clock_hz: int
    steps: int
    board: str

    @classmethod
    def parse(cls, payload: bytes) -> "DeviceInfo":
        if len(payload) < _INFO.size or payload[:4] != b"EKDV":
            raise DeviceError(f"the board's hello answer is not edgekit's ({payload[:16].hex()}...): it runs other "
                              "firmware; flash the device firmware (--flash auto)")
        magic, version, flags, calls, request, output, model_id, arena, clock, steps = _INFO.unpack_from(payload)
        return cls(version, bool(flags & FLAG_CYCLES), bool(flags & FLAG_STREAMING), bool(flags & FLAG_FLOAT32),
                   calls, request, output, model_id, arena, clock, steps,
                   payload[_INFO.size:].decode("ascii", errors="replace"))


@dataclass(frozen=True)
class RunResult:
    """One inference (or test sequence) on the device (the ``O`` answer)."""

    status: int
    wrong_markers: int
    stack_bytes: int
    events: int
    call_cycles: tuple[int, ...]     # per kernel call (a step program: summed over the sequence's steps)
    total_cycles: int
    output: bytes

    @classmethod
    def parse(cls, payload: bytes, output_bytes: int) -> "RunResult":
        if len(payload) < _RESULT.size:
            raise DeviceError(f"the board's run answer has {len(payload)} bytes, fewer than its header")
        status, markers, stack, events, calls = _RESULT.unpack_from(payload)
        need = _RESULT.size + 8 * (calls + 1) + output_bytes
        if len(payload) != need:
            raise DeviceError(f"the board's run answer has {len(payload)} bytes, {need} expected for {calls} kernel "
                              f"calls and a {output_bytes}-byte output")
        cycles = struct.unpack_from(f"<{calls + 1}Q", payload, _RESULT.size)
        return cls(status, markers, stack, events, tuple(cycles[:-1]), cycles[-1], payload[need - output_bytes:])


class Link:
    """A serial port with edgekit's firmware on the other end. ``port`` is a device path (``/dev/ttyACM0``, a
    pseudo-terminal ``/dev/pts/3``, ``COM4``) or an object with ``read(n)``/``write(b)``/``close()`` (tests)."""

    def __init__(self, port, baud: int = 115200, max_frame: int = 1 << 20):
        self.name = port if isinstance(port, str) else getattr(port, "name", "the link")
        self.baud = baud
        self.max_frame = max_frame
        self.text = ""               # what the firmware wrote ('T' frames)
        self.received = 0            # bytes read, frames and garbage alike
        self._buf = bytearray()
        self._head = b""             # the first bytes read while waiting for the current answer
        self._seq = int(time.time_ns() & 0xFFFF) << 8   # differs from any earlier session's numbers
        if isinstance(port, str):
            import serial  # pyserial

            try:
                self._port = serial.Serial(port, baudrate=baud, timeout=0.05, write_timeout=10)
            except (serial.SerialException, OSError, ValueError) as e:
                raise DeviceError(f"cannot open {port}: {getattr(e, 'strerror', None) or e}; list the serial ports "
                                  "with: python -m serial.tools.list_ports") from None
            self._port.reset_input_buffer()
        else:
            self._port = port

    def close(self) -> None:
        self._port.close()

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- frames ------------------------------------------------------------------------------------------------
    def send(self, kind: str, payload: bytes = b"") -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        try:
            self._port.write(encode(kind, self._seq, payload))
        except Exception as e:  # pyserial's SerialTimeoutException / OSError: the port went away
            raise DeviceError(f"cannot write to {self.name}: {e}; is the board still connected?") from None
        return self._seq

    def _read_some(self) -> None:
        try:
            chunk = self._port.read(4096)
        except Exception as e:
            raise DeviceError(f"cannot read from {self.name}: {e}; is the board still connected?") from None
        if chunk:
            self._buf += chunk
            self.received += len(chunk)
            if len(self._head) < 12:
                self._head += chunk[:12 - len(self._head)]

    def _next_frame(self) -> Frame | None:
        """The next whole frame in the buffer, or None when more bytes are needed. Bytes that cannot start a frame
        are dropped; a frame whose checksum fails raises DeviceError."""
        buf = self._buf
        while True:
            start = buf.find(SYNC)
            if start < 0:
                del buf[:max(0, len(buf) - 1)]  # keep a last 0xE5: it may be half a sync
                return None
            del buf[:start]
            if len(buf) < 2 + _HEADER.size:
                return None
            kind, seq, length = _HEADER.unpack_from(buf, 2)
            if length > self.max_frame or not 0x41 <= kind <= 0x5A:  # not a frame: a sync pair inside garbage
                del buf[:1]
                continue
            end = 2 + _HEADER.size + length + _CRC.size
            if len(buf) < end:
                return None
            body = bytes(buf[2:end - _CRC.size])
            (crc,) = _CRC.unpack_from(buf, end - _CRC.size)
            del buf[:end]
            if zlib.crc32(body) != crc:
                raise DeviceError(f"corrupted frame from {self.name} (checksum mismatch in a {length}-byte "
                                  f"'{chr(kind)}' frame): a noisy link or a wrong baud rate (--baud {self.baud}?); "
                                  "no figure was taken from it")
            return Frame(chr(kind), seq, body[_HEADER.size:])

    def answer(self, seq: int, timeout_s: float, resend: tuple[str, bytes] | None = None,
               resend_every_s: float = 1.0) -> Frame:
        """Wait for the answer to request ``seq``; with ``resend``, repeat the request every ``resend_every_s``
        (a pseudo-terminal is read by QEMU only once the host has opened it; a board may still be booting)."""
        deadline = time.monotonic() + timeout_s
        next_send = time.monotonic() + resend_every_s
        received_before = self.received
        self._head = b""
        wanted = {seq}  # a repeated request's answers all count
        while True:
            frame = self._next_frame()
            if frame is not None:
                if frame.kind == "T":
                    self.text += frame.payload.decode("ascii", errors="replace")
                    if "EK_FAULT" in self.text and self.text.endswith("\n"):
                        raise DeviceError(f"the firmware on {self.name} faulted: {self._fault_line()}")
                    continue
                if frame.kind == "Z":
                    (status,) = struct.unpack_from("<i", frame.payload.ljust(4, b"\0"))
                    raise DeviceError(f"the firmware on {self.name} stopped (status {status})"
                                      + (f": {self._fault_line()}" if self.text.strip() else ""))
                if frame.kind == "E":  # its seq may be what a corrupted request carried: any refusal counts
                    raise DeviceError(f"the firmware on {self.name} refused the request: "
                                      f"{frame.payload.decode('ascii', errors='replace')}")
                if frame.seq in wanted:
                    return frame
                continue  # a late answer to an earlier request
            now = time.monotonic()
            if now >= deadline:
                got = self.received - received_before
                if got:
                    raise DeviceError(f"{self.name} sent {got} bytes in {timeout_s:g} s that are not edgekit frames "
                                      f"(first bytes: {self._head.hex(' ')}): a wrong baud rate "
                                      f"(--baud {self.baud}?) or other firmware on the board (flash it: --flash auto)")
                raise DeviceError(f"no answer from {self.name} within {timeout_s:g} s: is the board connected and "
                                  f"running edgekit's device firmware for this build (--flash auto), at "
                                  f"{self.baud} baud?")
            if resend is not None and now >= next_send:
                wanted.add(self.send(*resend))
                next_send = now + resend_every_s
            self._read_some()

    def _fault_line(self) -> str:
        lines = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        return next((ln for ln in lines if ln.startswith("EK_FAULT")), lines[-1] if lines else "")

    # ---- requests ----------------------------------------------------------------------------------------------
    def hello(self, timeout_s: float = 10.0) -> DeviceInfo:
        seq = self.send("H")
        frame = self.answer(seq, timeout_s, resend=("H", b""))
        if frame.kind != "I":
            raise DeviceError(f"{self.name} answered the hello with a '{frame.kind}' frame: it runs other firmware")
        info = DeviceInfo.parse(frame.payload)
        if info.version != PROTOCOL_VERSION:
            raise DeviceError(f"{self.name} speaks protocol version {info.version}, this edgekit {PROTOCOL_VERSION}: "
                              "flash the device firmware built by this edgekit (--flash auto)")
        return info

    def run(self, request: bytes, info: DeviceInfo, timeout_s: float) -> RunResult:
        seq = self.send("R", request)
        frame = self.answer(seq, timeout_s)
        if frame.kind != "O":
            raise DeviceError(f"{self.name} answered a run with a '{frame.kind}' frame")
        return RunResult.parse(frame.payload, info.output_bytes)
