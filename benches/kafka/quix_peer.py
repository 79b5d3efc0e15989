#!/usr/bin/env python3
"""Runs the Quix Streams peer (`windows_quix.py` of the peers directory) unchanged except for one
consumer setting: `max.poll.interval.ms` (the peer sets 6000 so that groups form quickly).

usage: quix_peer.py PEERS_DIR [--max-poll-interval-ms MS] -- WINDOWS_QUIX_ARGS...

On a loaded 2-core machine one Quix processing step can exceed 6 s; librdkafka then makes the
consumer leave its group and the next commit fails (`Unknown member`), which ends the run. A
longer poll interval does not change what is read or computed, only that tolerance. Default
300000 (the Kafka default). Prints what windows_quix.py prints (one JSON line at the end).
"""
import os
import sys


def main():
    argv = sys.argv[1:]
    if not argv:
        sys.exit(__doc__)
    peers = argv.pop(0)
    max_poll = "300000"
    if argv[:1] == ["--max-poll-interval-ms"]:
        max_poll = argv[1]
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    sys.path.insert(0, os.path.abspath(peers))
    import windows_quix

    application = windows_quix.Application

    def patched(*args, **kwargs):
        extra = dict(kwargs.get("consumer_extra_config") or {})
        extra["max.poll.interval.ms"] = int(max_poll)
        kwargs["consumer_extra_config"] = extra
        return application(*args, **kwargs)

    windows_quix.Application = patched
    sys.argv = [os.path.join(peers, "windows_quix.py"), *argv]
    windows_quix.main()


if __name__ == "__main__":
    main()
