"""--network with --ca-bundle behind a TLS-intercepting proxy, against the real package index.

The index URL comes from pip's own default, so no registry host is written here. The test needs a
network path from the host; where the host itself cannot reach the index it skips with the reason.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PROBE = """
import ssl, sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=20)
    print("TLS-OK")
except urllib.error.HTTPError:
    print("TLS-OK")  # an HTTP answer means the TLS handshake succeeded
except Exception as exc:
    print("TLS-FAIL", exc)
"""


def _index_url() -> str:
    from pip._internal.models.index import PyPI

    return PyPI.simple_url


@pytest.mark.docker
def test_ca_bundle_lets_the_sandbox_trust_an_intercepting_proxy(docker_sandbox_factory) -> None:
    url = _index_url()
    if not HOST_BUNDLE.is_file():
        pytest.skip(f"no host CA bundle at {HOST_BUNDLE}")
    try:
        urllib.request.urlopen(url, timeout=20, context=ssl.create_default_context(cafile=str(HOST_BUNDLE)))
    except urllib.error.HTTPError:
        pass
    except OSError as exc:
        pytest.skip(f"the host itself cannot reach the package index ({exc})")
    trusting = docker_sandbox_factory(network=True, ca_bundle=HOST_BUNDLE)
    (trusting.workspace / "probe.py").write_text(PROBE)
    out = trusting.exec(f"python3 probe.py {url}", timeout=60).output
    assert "TLS-OK" in out, out
    # The same container setup without the bundle: trusted or not is decided by the option alone.
    plain = docker_sandbox_factory(network=True)
    (plain.workspace / "probe.py").write_text(PROBE)
    out_plain = plain.exec(f"python3 probe.py {url}", timeout=60).output
    if "TLS-OK" in out_plain:
        pytest.skip("this network does not intercept TLS: the bundle makes no difference here")
    assert "TLS-FAIL" in out_plain
