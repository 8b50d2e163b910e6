"""The zygote's share-out of subordinate ids (confine/userns.py): no two live workers get the same
uid, a freed uid is given out again, and the range's first id (a namespace root to some tools) never."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugbox.confine import userns


def test_the_users_range_is_read_by_name_or_uid(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("someone:100000:65536\n# junk line\nplugbox:300000:3\n1234:400000:10\n")
    assert userns._subid_range(str(subuid), "plugbox", 999) == userns._Range(300000, 3)
    assert userns._subid_range(str(subuid), "other", 1234) == userns._Range(400000, 10)
    assert userns._subid_range(str(subuid), "nobody-here", 5) is None
    assert userns._subid_range(str(tmp_path / "missing"), "plugbox", 999) is None


@pytest.fixture
def ids(monkeypatch: pytest.MonkeyPatch) -> userns.Subids:
    monkeypatch.setattr(userns.os, "geteuid", lambda: 999)
    monkeypatch.setattr(userns, "_refusal", lambda: (userns._Range(300000, 3), userns._Range(500000, 3)))
    return userns.Subids()


def test_live_workers_never_share_an_id_and_a_freed_one_comes_back(ids: userns.Subids) -> None:
    first = ids.allot("required")
    assert first.uid == 300001  # offset 0 is skipped
    ids._by_pid[11] = first.uid  # what map() records once worker 11 is mapped
    second = ids.allot("required")
    assert (second.uid, second.gid) == (300002, 500002)
    ids._by_pid[12] = second.uid
    exhausted = ids.allot("required")
    assert exhausted.uid == 0 and exhausted.required and "in use" in exhausted.note
    ids.release(11)
    assert ids.allot("required").uid == 300001


def test_a_host_without_a_range_gives_none_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns.os, "geteuid", lambda: 999)
    monkeypatch.setattr(userns, "_refusal", lambda: "no subordinate id range for plugbox")
    placement = userns.Subids().allot("auto")
    assert (placement.uid, placement.required) == (0, False)
    assert "no subordinate id range" in placement.note
    assert userns.apply(placement).skipped
    required = userns.Subids().allot("required")
    result = userns.apply(required)
    assert not result.applied and not result.skipped and "required but unavailable" in result.detail
