"""A password inside a URL (``ansible_psrp_proxy: http://user:pass@proxy``) is a secret under a
name that does not say so: it must not reach a listing, a repr or a journalled error text."""

from __future__ import annotations

import json

from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.redact import Redactor

PROXY_PASSWORD = "Pr0xy-Pass-42"


def test_proxy_password_is_masked_in_listings_and_reprs(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  hosts:\n    pc-1:\n      ansible_host: 127.0.9.1\n"
        f"      ansible_psrp_proxy: http://svc:{PROXY_PASSWORD}@proxy.corp:3128\n",
        encoding="utf-8",
    )
    (host,) = Inventory.load(path).select("all")
    listed = json.dumps(host.describe())
    assert PROXY_PASSWORD not in listed
    assert "http://svc:********@proxy.corp:3128" in listed
    assert PROXY_PASSWORD not in repr(host.connection)
    # The real value still reaches pypsrp.
    assert host.connection.pypsrp_kwargs()["proxy"].endswith(f":{PROXY_PASSWORD}@proxy.corp:3128")


def test_scrub_masks_url_passwords_it_was_never_told_about():
    text = f"ProxyError('Cannot connect to proxy socks5h://svc:{PROXY_PASSWORD}@p:1080/')"
    scrubbed = Redactor().scrub(text)
    assert scrubbed == "ProxyError('Cannot connect to proxy socks5h://svc:********@p:1080/')"
    assert Redactor().scrub("see https://host/a:b@c and C:\\cpuu") == (
        "see https://host/a:b@c and C:\\cpuu"
    )
