#!/usr/bin/python3
"""The Python peer of gaswatch's load benchmark: a plain poller, as a utility
engineer would write it with Debian's pymodbus (3.0) and the standard library.

Usage: peer_poller.py PLAN_JSON   (written by `loadbench --peer`)

    {"interval_s": 1.0, "type": "f32" | "u16",
     "url": "http://127.0.0.1:PORT/write?db=load&precision=ns",
     "endpoints": [{"port": 5020, "devices": [{"id": "d0", "unit": 1, "points": 30}]}]}

It does the same work as the daemon's hot path, and no more: one thread and
one TCP connection per endpoint, each device read with ONE FC03 request per
poll interval on a fixed grid (missed ticks skipped), registers decoded
(f32 ABCD or u16), one InfluxDB line per point with the response time as its
timestamp, and a writer thread POSTing the batch to the line-protocol
endpoint every second. No alarms, balance, quality rules or spool: the
comparison favours the peer.

Runs until SIGTERM; prints counters to stderr every 10 s and at exit.
"""

import http.client
import json
import signal
import struct
import sys
import threading
import time
import urllib.parse

from pymodbus.client import ModbusTcpClient

STOP = threading.Event()
LOCK = threading.Lock()
PENDING = []
COUNTS = {"reads": 0, "errors": 0, "lines": 0, "posted": 0, "overruns": 0}


def poll_endpoint(port, devices, interval, kind):
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1)
    client.connect()
    regs_per_point = 2 if kind == "f32" else 1
    next_tick = time.monotonic()
    while not STOP.is_set():
        for dev in devices:
            count = dev["points"] * regs_per_point
            try:
                rr = client.read_holding_registers(0, count, slave=dev["unit"])
            except Exception:  # noqa: BLE001 - a plain poller logs and goes on
                rr = None
            ts = time.time_ns()
            if rr is None or rr.isError():
                with LOCK:
                    COUNTS["errors"] += 1
                client.close()
                client.connect()
                continue
            r = rr.registers
            lines = []
            for p in range(dev["points"]):
                if kind == "f32":
                    value = struct.unpack(">f", struct.pack(">HH", r[2 * p], r[2 * p + 1]))[0]
                else:
                    value = float(r[p])
                lines.append(
                    f'telemetry,device={dev["id"]},point=P{dev["id"][1:]}_{p},station=load,unit=kPa '
                    f'value={value!r},quality="good" {ts}\n'
                )
            with LOCK:
                PENDING.extend(lines)
                COUNTS["reads"] += 1
                COUNTS["lines"] += len(lines)
        next_tick += interval
        delay = next_tick - time.monotonic()
        if delay < 0:
            with LOCK:
                COUNTS["overruns"] += 1
            next_tick = time.monotonic()
        else:
            STOP.wait(delay)
    client.close()


def writer(url):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    path = u.path + ("?" + u.query if u.query else "")
    while not STOP.wait(1.0):
        with LOCK:
            batch = PENDING[:]
            PENDING.clear()
        if not batch:
            continue
        body = "".join(batch).encode()
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
            resp = conn.getresponse()
            resp.read()
            with LOCK:
                COUNTS["posted"] += len(batch)
        except Exception:  # noqa: BLE001
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)


def main():
    plan = json.load(open(sys.argv[1], encoding="utf-8"))
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    threads = [
        threading.Thread(
            target=poll_endpoint,
            args=(ep["port"], ep["devices"], plan["interval_s"], plan["type"]),
            daemon=True,
        )
        for ep in plan["endpoints"]
    ]
    threads.append(threading.Thread(target=writer, args=(plan["url"],), daemon=True))
    for t in threads:
        t.start()
    while not STOP.wait(10.0):
        with LOCK:
            print(json.dumps(COUNTS), file=sys.stderr, flush=True)
    with LOCK:
        print(json.dumps(COUNTS), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
