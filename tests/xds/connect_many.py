#!/usr/bin/env python3
"""connect_many.py HOST PORT N: N connections one after another, one HTTP/1.0 GET each; prints
{"per": {BODY: COUNT}, "failed": COUNT} as JSON (curl would take minutes for 10 000)."""

import json
import socket
import sys


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    per, failed = {}, 0
    for _ in range(n):
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while True:
                    d = s.recv(4096)
                    if not d:
                        break
                    data += d
            body = data.split(b"\r\n\r\n", 1)[1].decode().strip()
            per[body] = per.get(body, 0) + 1
        except (OSError, IndexError, UnicodeDecodeError):
            failed += 1
    print(json.dumps({"per": per, "failed": failed}))


if __name__ == "__main__":
    main()
