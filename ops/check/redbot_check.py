#!/usr/bin/env python3
"""REDbot (HTTP lint, `pip install redbot`) on one request with headers the
`redbot` command cannot set: `redbot_check.py URL [-H 'Name: value']...`.
Prints every note REDbot makes and exits 1 when one is a problem (bad)."""
import argparse
from configparser import ConfigParser

import thor
from redbot.formatter import find_formatter
from redbot.resource import HttpResource


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("url")
    p.add_argument("-H", dest="headers", action="append", default=[], help="a request header")
    a = p.parse_args()
    headers = [tuple(x.strip() for x in h.split(":", 1)) for h in a.headers]
    config = ConfigParser()
    config.read_dict({"redbot": {"enable_local_access": "True"}})
    resource = HttpResource(config["redbot"])
    resource.set_request(a.url, headers=headers)
    out = []
    formatter = find_formatter("text", "text", False)(config["redbot"], resource, out.append, {"tty_out": False})
    formatter.bind_resource(resource)

    @thor.events.on(formatter)
    def formatter_done() -> None:
        thor.stop()

    resource.check()
    thor.run()
    print("".join(out))
    notes = list(resource.response.notes) + list(resource.request.notes)
    for sub in resource.subreqs.values():
        notes += list(sub.response.notes)
    bad = [n for n in notes if n.level.value == "bad"]
    for n in bad:
        print("BAD:", n.summary)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
