"""Modbus TCP sink (pymodbus 3.x client): the PLC is the server, the station writes each part
into its registers in the order a PLC program expects.

    modbus://PLC[:502]?device_id=1&hr_base=0&coil_base=0

Register map (0-based protocol addresses counted from the bases; in 1-based PLC notation a
holding register is 40001 + address, a coil 00001 + address):

    holding registers (from hr_base)
      +0, +1  part id, unsigned 32-bit, high word first: the record's part_id when it is a
              whole number 0…4294967295, else its frame index
      +2, +3  score × 10000, unsigned 32-bit, high word first (rounded, at most 4294967294);
              4294967295 = no score (an ERROR verdict)
      +4      verdict code: 1 OK, 2 NG, 3 ERROR, 4 NOVEL (0 until the first part)
      +5      sequence counter: the record's seq folded into 1…65535 (never 0); written LAST
      +6      heartbeat: +1 (wrapping at 65536) every heartbeat_s seconds (default 1) while
              the station runs, parts or not: a PLC that sees it stop knows the station is gone
      +7      acknowledge: written by the PLC, read by the station with handshake=true only
    coils (from coil_base)
      +0 OK, +1 NG, +2 ERROR: the part's coil set, the other two cleared (held until the next part)

Order per part: registers +0…+4 in one write (FC16), the three coils in one write (FC15), then
the sequence counter (FC6). A PLC program watches +5: when it changes, +0…+4 and the coils
already hold that part, whole. The record leaves the queue when the PLC acknowledged the write
of +5 (its Modbus response) or, with handshake=true, once the PLC has copied +5 into +7: the
station then never writes the next part before the PLC took this one, so a slow PLC scan never
misses a part (the queue holds the rest). Without the handshake the registers always hold the
latest part and a PLC slower than the line sees only some of them.

Options: device_id (unit id, default 1), hr_base and coil_base (default 0), heartbeat_s
(default 1, 0 = none), timeout (seconds per request, default 1), handshake (default false), and
the queue's (max_records, when_full, fsync).

Modbus has no authentication and no encryption: anyone who reaches the PLC's port can write
these registers. Keep the station and the PLC on the machine network, and let only the station's
address reach port 502 (the PLC's access list, or the switch or firewall between them).
"""

from __future__ import annotations

import math
import time
from typing import Any

from edge_runtime.errors import BadInput, MissingExtra
from edge_runtime.sinks.base import QueuedSink, parse_target, queue_file, quiet
from edge_runtime.sinks.queue import Entry

# NOVEL (NG, and like no known defect type) is a reject: it sets the NG coil, and its own code
VERDICT_CODES = {"OK": 1, "NG": 2, "ERROR": 3, "NOVEL": 4}
COILS = (("OK",), ("NG", "NOVEL"), ("ERROR",))  # coil +0, +1, +2: the verdicts that set it
PART_ID, SCORE, VERDICT, SEQUENCE, HEARTBEAT, ACK = 0, 2, 4, 5, 6, 7  # offsets from hr_base
NO_SCORE = 0xFFFFFFFF
BUDGET_S = 1.0  # stop starting new parts after this long in one attempt
U32 = 0xFFFFFFFF


def words(value: int) -> list[int]:
    """An unsigned 32-bit value as two registers, high word first."""
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def part_id_value(record: dict) -> int:
    """The part id register: part_id when it is a whole number that fits, else the frame."""
    pid = record.get("part_id")
    if isinstance(pid, str) and pid.isdigit():
        pid = int(pid)
    if isinstance(pid, int) and not isinstance(pid, bool) and 0 <= pid <= U32:
        return pid
    frame = record.get("frame")
    return frame & U32 if isinstance(frame, int) and frame >= 0 else 0


def score_value(score: Any) -> int:
    """score × 10000 as an unsigned 32-bit register pair; NO_SCORE when there is none."""
    if not isinstance(score, int | float) or not math.isfinite(score):
        return NO_SCORE
    return min(max(round(score * 10000), 0), NO_SCORE - 1)


def sequence_value(seq: int) -> int:
    """seq folded into 1…65535: it changes with every part and is never 0."""
    return (seq - 1) % 0xFFFF + 1


def registers(entry: Entry) -> list[int]:
    """Holding registers +0…+4 for one part (the sequence is written on its own, last)."""
    rec = entry.record
    code = VERDICT_CODES[rec["verdict"]]
    return [*words(part_id_value(rec)), *words(score_value(rec.get("score"))), code]


class ModbusSink(QueuedSink):
    kind = "modbus"

    def __init__(
        self, target: str | dict, queue_dir: str | None = None, camera: str | None = None
    ) -> None:
        try:
            from pymodbus.client import ModbusTcpClient
            from pymodbus.exceptions import ModbusException
        except ImportError:
            raise MissingExtra("the Modbus sink (pymodbus)", "line") from None
        quiet("pymodbus")
        parts, opts = parse_target(target)
        if not parts.hostname:
            raise BadInput(f"{opts.where}: no PLC host (modbus://HOST:PORT?device_id=1)")
        try:
            port = parts.port or 502
        except ValueError:
            raise BadInput(f"{opts.where}: the port is not a number") from None
        self.device_id = opts.integer("device_id", 1, 0, 255)
        self.hr_base = opts.integer("hr_base", 0, 0, 65535 - ACK)
        self.coil_base = opts.integer("coil_base", 0, 0, 65535 - 2)
        heartbeat_s = opts.number("heartbeat_s", 1.0, 0.0, 3600.0)
        timeout = opts.number("timeout", 1.0, 0.05, 60.0)
        self.handshake = opts.flag("handshake")
        self.camera = camera  # for metrics only: a register block holds one camera's parts
        name = f"modbus://{parts.hostname}:{port}?device_id={self.device_id}"
        path = queue_file(
            queue_dir, name, "modbus", parts.hostname, port, self.device_id, self.hr_base
        )
        super().__init__(name, path, opts, idle_s=heartbeat_s or None)
        self._errors = (ModbusException, OSError)
        self._client = ModbusTcpClient(parts.hostname, port=port, timeout=timeout, retries=0)
        self._timeout = timeout
        self.heartbeat = 0
        self._start()

    # -- the sender thread only ------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """One request; any failure closes the socket (the next call reconnects) and raises."""
        try:
            if not self._client.connected and not self._client.connect():
                raise ConnectionError(f"cannot connect to the PLC at {self.target}")
            resp = fn(*args, device_id=self.device_id, **kw)
        except self._errors as e:
            self._client.close()
            raise ConnectionError(f"{what}: {e}") from None
        if resp.isError():
            self._client.close()
            raise ConnectionError(f"{what}: the PLC answered {resp}")
        return resp

    def _write_part(self, entry: Entry) -> int:
        c, hr = self._client, self.hr_base
        self._call("write registers", c.write_registers, hr + PART_ID, registers(entry))
        verdict = entry.record["verdict"]
        coils = [verdict in vs for vs in COILS]
        self._call("write coils", c.write_coils, self.coil_base, coils)
        seq = sequence_value(entry.seq)
        self._call("write sequence", c.write_register, hr + SEQUENCE, seq)
        return seq

    def _acknowledged(self, seq: int) -> bool:
        """Handshake: wait (bounded) for the PLC to copy the sequence into the ack register."""
        deadline = time.monotonic() + self._timeout
        while True:
            resp = self._call(
                "read ack", self._client.read_holding_registers, self.hr_base + ACK, count=1
            )
            if resp.registers[0] == seq:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _deliver(self, entries: list[Entry]) -> int:
        start, n = time.monotonic(), 0
        for e in entries:
            if n and time.monotonic() - start > BUDGET_S:
                break  # bounds one attempt, and so close()
            try:
                seq = self._write_part(e)  # rewriting after a failure is harmless: same values
                if self.handshake and not self._acknowledged(seq):
                    break
            except ConnectionError:
                if n:
                    break  # keep what the PLC took; the next attempt reports the failure
                raise
            n += 1
        return n

    def _idle(self) -> None:
        beat = (self.heartbeat + 1) & 0xFFFF
        self._call("write heartbeat", self._client.write_register, self.hr_base + HEARTBEAT, beat)
        self.heartbeat = beat

    def _disconnect(self) -> None:
        self._client.close()

    def stats(self) -> dict:
        return {**super().stats(), "heartbeat": self.heartbeat, "camera": self.camera}
