"""A raw mDNS socket for tests, run inside a test's network namespace.

    python tests/mdns_probe.py IP

It joins 224.0.0.251 on the interface that has address IP and reads commands on stdin,
one JSON object a line:
    {"send": "<hex>"}           multicast a datagram to 224.0.0.251:5353
    {"send": "<hex>", "port": N}  the same from another source port (not 5353)
and prints one JSON line per datagram it hears, {"from": ip, "hex": ...}, plus
{"ready": true} once it listens and {"sent": n} after each send. It stops when stdin
closes. Standard library only, so that it runs in any namespace.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys

GROUP, PORT = "224.0.0.251", 5353


def main(ip: str) -> None:
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listen.bind(("0.0.0.0", PORT))
    listen.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                      socket.inet_aton(GROUP) + socket.inet_aton(ip))
    listen.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
    listen.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    listen.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    print(json.dumps({"ready": True}), flush=True)
    stdin = sys.stdin.fileno()
    pending = b""
    while True:
        readable, _, _ = select.select([listen, stdin], [], [])
        if listen in readable:
            data, (sender, _port) = listen.recvfrom(65536)
            print(json.dumps({"from": sender, "hex": data.hex()}), flush=True)
        if stdin not in readable:
            continue
        chunk = os.read(stdin, 1 << 20)
        if not chunk:
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            command = json.loads(line)
            _send(listen, ip, command)


def _send(listen: socket.socket, ip: str, command: dict[str, object]) -> None:
    data = bytes.fromhex(str(command["send"]))
    if "port" in command:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
            other.bind((ip, int(str(command["port"]))))
            other.sendto(data, (GROUP, PORT))
    else:
        listen.sendto(data, (GROUP, PORT))
    print(json.dumps({"sent": len(data)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
