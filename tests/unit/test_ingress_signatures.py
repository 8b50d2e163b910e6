"""Ingress signature verification (plugbox.api.ingress): each scheme accepts what a correct sender
signs and refuses tampering, staleness, missing headers; the replay guard is bounded and expires."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from plugbox.api.ingress import IngressRefused, ReplayGuard, secret_at, sign, verify
from plugbox.manifest import IngressSignature

NOW = 1_700_000_000.0
SECRET = "s3cret"
BODY = b'{"event":"ping"}'

HMAC_TS = IngressSignature(scheme="hmac-sha256", header="X-Signature", prefix="sha256=",
                           timestamp_header="X-Timestamp", template="{timestamp}.{body}", tolerance_sec=300)
HMAC_B64 = IngressSignature(scheme="hmac-sha256", header="X-Sig", encoding="base64", template="{body}")
SHARED = IngressSignature(scheme="shared-secret", header="X-Token", prefix="Bearer ")
STANDARD = IngressSignature(scheme="standard-webhooks", header="webhook-signature",
                            timestamp_header="webhook-timestamp", dedup_header="webhook-id", encoding="base64",
                            template="{id}.{timestamp}.{body}")
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _verify(sig: IngressSignature, headers: dict[str, str], body: bytes = BODY, secret: str | None = SECRET,
            now: float = NOW, allow_unsigned: bool = False) -> str | None:
    return verify(sig, secret, {k.lower(): v for k, v in headers.items()}, body, now=now,
                  allow_unsigned=allow_unsigned)


def test_hmac_with_timestamp_template_is_accepted() -> None:
    ts = str(int(NOW))
    expected = "sha256=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(HMAC_TS, SECRET, BODY, timestamp=ts) == expected
    assert _verify(HMAC_TS, {"X-Signature": expected, "X-Timestamp": ts}) is None


def test_hmac_hex_digest_compares_case_insensitively() -> None:
    ts = str(int(NOW))
    good = sign(HMAC_TS, SECRET, BODY, timestamp=ts)
    _verify(HMAC_TS, {"X-Signature": "sha256=" + good.removeprefix("sha256=").upper(), "X-Timestamp": ts})


def test_hmac_base64_is_accepted() -> None:
    _verify(HMAC_B64, {"X-Sig": sign(HMAC_B64, SECRET, BODY)})


@pytest.mark.parametrize("mutate", ["body", "signature", "timestamp", "prefix"])
def test_hmac_tampering_is_refused(mutate: str) -> None:
    ts = str(int(NOW))
    sig = sign(HMAC_TS, SECRET, BODY, timestamp=ts)
    headers = {"X-Signature": sig, "X-Timestamp": ts}
    body = BODY
    if mutate == "body":
        body = BODY + b" "
    elif mutate == "signature":
        headers["X-Signature"] = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    elif mutate == "timestamp":
        headers["X-Timestamp"] = str(int(NOW) - 1)
    else:
        headers["X-Signature"] = sig.removeprefix("sha256=")
    with pytest.raises(IngressRefused) as info:
        _verify(HMAC_TS, headers, body)
    assert (info.value.status, info.value.reason) == (401, "bad_signature")


@pytest.mark.parametrize("skew", [-301, 301])
def test_timestamp_outside_tolerance_is_refused_both_ways(skew: int) -> None:
    ts = str(int(NOW) + skew)
    with pytest.raises(IngressRefused, match="300 s") as info:
        _verify(HMAC_TS, {"X-Signature": sign(HMAC_TS, SECRET, BODY, timestamp=ts), "X-Timestamp": ts})
    assert info.value.reason == "expired"


def test_missing_signature_header_is_refused() -> None:
    with pytest.raises(IngressRefused, match="missing signature header") as info:
        _verify(HMAC_B64, {})
    assert info.value.status == 401


def test_missing_or_garbled_timestamp_is_refused() -> None:
    sig = sign(HMAC_TS, SECRET, BODY, timestamp="1")
    with pytest.raises(IngressRefused, match="missing timestamp"):
        _verify(HMAC_TS, {"X-Signature": sig})
    with pytest.raises(IngressRefused, match="Unix seconds"):
        _verify(HMAC_TS, {"X-Signature": sig, "X-Timestamp": "1e9"})


def test_unconfigured_secret_is_a_server_side_refusal() -> None:
    with pytest.raises(IngressRefused) as info:
        _verify(HMAC_B64, {"X-Sig": "x"}, secret=None)
    assert info.value.status == 503


def test_shared_secret_accepts_exact_value_only() -> None:
    _verify(SHARED, {"X-Token": "Bearer " + SECRET})
    for wrong in ("Bearer " + SECRET + "x", SECRET, "Bearer s3cre"):
        with pytest.raises(IngressRefused):
            _verify(SHARED, {"X-Token": wrong})


def _standard_headers(body: bytes = BODY, msg_id: str = "msg_1", ts: int = int(NOW)) -> dict[str, str]:
    sig = sign(STANDARD, WHSEC, body, id=msg_id, timestamp=str(ts))
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": "v1,bogus " + sig}


def test_standard_webhooks_matches_reference_computation_and_returns_the_id() -> None:
    key = base64.b64decode(WHSEC.removeprefix("whsec_"))
    content = f"msg_1.{int(NOW)}.".encode() + BODY
    expected = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert sign(STANDARD, WHSEC, BODY, id="msg_1", timestamp=str(int(NOW))) == expected
    assert _verify(STANDARD, _standard_headers(), secret=WHSEC) == "msg_1"


def test_standard_webhooks_refuses_other_id_or_versions() -> None:
    headers = _standard_headers()
    headers["webhook-id"] = "msg_2"
    with pytest.raises(IngressRefused, match="does not match"):
        _verify(STANDARD, headers, secret=WHSEC)
    headers = _standard_headers()
    headers["webhook-signature"] = headers["webhook-signature"].split()[-1].replace("v1,", "v2,")
    with pytest.raises(IngressRefused):
        _verify(STANDARD, headers, secret=WHSEC)


def test_standard_webhooks_requires_the_id_header() -> None:
    headers = _standard_headers()
    del headers["webhook-id"]
    with pytest.raises(IngressRefused, match="delivery id"):
        _verify(STANDARD, headers, secret=WHSEC)


HMAC_DEDUP = IngressSignature(scheme="hmac-sha256", header="X-Signature", timestamp_header="X-Timestamp",
                              dedup_header="X-Delivery", template="{id}.{timestamp}.{body}", tolerance_sec=300)
SHARED_DEDUP = IngressSignature(scheme="shared-secret", header="X-Token", dedup_header="X-Delivery")


def _dedup_headers(delivery: str = "d-1") -> dict[str, str]:
    stamp = str(int(NOW))
    return {"X-Signature": sign(HMAC_DEDUP, SECRET, BODY, id=delivery, timestamp=stamp), "X-Timestamp": stamp,
            "X-Delivery": delivery}


@pytest.mark.parametrize("sig", [HMAC_DEDUP, SHARED_DEDUP], ids=["hmac", "shared-secret"])
def test_a_dedup_route_refuses_a_delivery_without_an_id_with_400(sig: IngressSignature) -> None:
    headers = _dedup_headers() if sig is HMAC_DEDUP else {"X-Token": SECRET}
    headers.pop("X-Delivery", None)
    with pytest.raises(IngressRefused) as info:
        _verify(sig, headers)
    assert (info.value.status, info.value.reason) == (400, "missing_id")


def test_hmac_delivery_id_is_signed_so_a_replay_under_a_new_id_is_refused() -> None:
    headers = _dedup_headers("d-1")
    assert _verify(HMAC_DEDUP, headers) == "d-1"
    with pytest.raises(IngressRefused, match="signature does not match"):
        _verify(HMAC_DEDUP, {**headers, "X-Delivery": "d-2"})


def test_an_overlong_delivery_id_is_refused() -> None:
    with pytest.raises(IngressRefused) as info:
        _verify(HMAC_DEDUP, _dedup_headers("x" * 257))
    assert info.value.status == 400


def test_unsigned_scheme_needs_operator_opt_in() -> None:
    none = IngressSignature(scheme="none")
    with pytest.raises(IngressRefused, match="unsigned"):
        _verify(none, {})
    assert _verify(none, {}, allow_unsigned=True) is None


def test_replay_guard_refuses_within_window_and_forgets_after() -> None:
    guard = ReplayGuard(10)
    key = ("p", "r", "id1")
    assert guard.claim(key, 300, NOW)
    assert not guard.claim(key, 300, NOW + 299)
    assert guard.claim(key, 300, NOW + 301)


def test_replay_guard_is_bounded_and_release_allows_retry() -> None:
    guard = ReplayGuard(3)
    for i in range(5):
        assert guard.claim(("p", "r", str(i)), 300, NOW)
    assert len(guard) == 3
    assert guard.claim(("p", "r", "0"), 300, NOW)  # evicted oldest
    guard.release(("p", "r", "4"))
    assert guard.claim(("p", "r", "4"), 300, NOW)


def test_replay_guard_past_its_bound_forgets_the_oldest_of_the_plugin_remembering_most() -> None:
    guard = ReplayGuard(4)
    assert guard.claim(("victim/default", "r", "v0"), 300, NOW)
    for i in range(10):
        assert guard.claim(("flood/default", "r", str(i)), 300, NOW)
        assert len(guard) <= 4
    assert not guard.claim(("victim/default", "r", "v0"), 300, NOW)  # within its share: kept
    assert guard.claim(("flood/default", "r", "0"), 300, NOW)  # the flooder's own oldest went
    guard.release(("victim/default", "r", "v0"))
    assert len(guard) == 3 and guard.claim(("victim/default", "r", "v0"), 300, NOW)


def test_secret_at_reads_dotted_paths() -> None:
    assert secret_at({"auth": {"token": "x"}}, "auth.token") == "x"
    assert secret_at({"auth": {"token": ""}}, "auth.token") is None
    assert secret_at({}, "webhookSecret") is None
