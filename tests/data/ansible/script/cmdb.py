#!/usr/bin/env python3
"""A dynamic inventory script of the older kind (no _meta: each host asked with --host), as a
CMDB wrapper prints it; the comparison test runs it through ansible-inventory and through us."""

import json
import sys

GROUPS = {
    "wave1": {"hosts": ["lyo-pc-01", "lyo-pc-02"], "vars": {"site": "Lyon"}},
    "wave2": ["par-pc-01"],
    "windows": {"children": ["wave1", "wave2"], "vars": {"ansible_port": 5986}},
}
HOSTS = {"lyo-pc-01": {"asset": 1701, "cpuu_user": ["CORP\\alice"]}, "par-pc-01": {"asset": 42}}

if sys.argv[1:] == ["--list"]:
    print(json.dumps(GROUPS))
elif sys.argv[1:2] == ["--host"]:
    print(json.dumps(HOSTS.get(sys.argv[2], {})))
else:
    sys.exit("usage: cmdb.py --list | --host NAME")
