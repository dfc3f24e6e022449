"""The gateway's TLS settings: which combinations start, which stop it naming the setting, and
when a gateway warns that API keys cross the network in clear text; failed handshakes logged
once per interval."""
from __future__ import annotations

import ssl

import pytest

from gateway.tls import HandshakeFailures, TlsError, exposure_warning, load_tls
from zeroserve.config import GatewaySettings


def test_no_tls_settings_is_plain():
    assert load_tls(GatewaySettings()) is None


@pytest.mark.parametrize(("settings", "named"), [
    ({"tls_cert_file": "/nonexistent/cert.pem", "tls_key_file": "/nonexistent/key.pem"},
     "gateway.tls_cert_file /nonexistent/cert.pem"),
    ({"tls_cert_file": "/nonexistent/cert.pem"}, "gateway.tls_key_file"),
    ({"tls_key_file": "/nonexistent/key.pem"}, "gateway.tls_cert_file"),
    ({"tls_client_ca_file": "/nonexistent/ca.pem"}, "gateway.tls_cert_file"),
])
def test_tls_settings_that_cannot_be_used_name_the_setting(settings, named):
    with pytest.raises(TlsError, match=named):
        load_tls(GatewaySettings(**settings))


def test_a_file_that_is_not_pem_is_an_error_naming_it(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(TlsError, match=str(junk)):
        load_tls(GatewaySettings(tls_cert_file=str(junk), tls_key_file=str(junk)))


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "10.1.2.3", "gateway.example"])
def test_keys_on_beyond_loopback_without_tls_warns(host):
    line = exposure_warning(host, keys_enforced=True, tls=None)
    assert line is not None and "clear text" in line and "gateway.tls_cert_file" in line


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_never_warns(host):
    assert exposure_warning(host, keys_enforced=True, tls=None) is None


def test_without_keys_there_is_no_key_to_expose():
    assert exposure_warning("0.0.0.0", keys_enforced=False, tls=None) is None


def test_failed_handshakes_are_logged_once_per_interval_with_a_count():
    now = [100.0]
    failures = HandshakeFailures(interval_s=5.0, clock=lambda: now[0])
    first = failures.line(("10.0.0.1", 1), ssl.SSLError("http request"))
    assert first is not None and first.startswith("gateway: 1 TLS handshakes failed")
    quiet = [failures.line(("10.0.0.1", i), ConnectionResetError()) for i in range(1000)]
    assert not any(quiet)
    now[0] += 5.0
    later = failures.line(("10.0.0.2", 9), ConnectionResetError("reset by peer"))
    assert later == ("gateway: 1001 TLS handshakes failed since the last report "
                     "(the last, from ('10.0.0.2', 9): reset by peer)")
