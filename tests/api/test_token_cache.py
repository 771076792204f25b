"""The token cache file: private, atomic, shared, keyed per represented taxpayer."""

from __future__ import annotations

import json
import os
import stat
import time

from connector_core.api import CachedToken, TokenCache, TokenKey

KEY = TokenKey("https://preprod-api.myinvois.hasil.gov.my", "client-1", "")
KEY_FOR_TAXPAYER = TokenKey("https://preprod-api.myinvois.hasil.gov.my", "client-1", "C25845632020")


def _token(value: str, lifetime: float = 3600) -> CachedToken:
    now = time.time()
    return CachedToken(value, now + lifetime, now)


def test_file_is_private_and_survives_a_new_cache(tmp_path):
    path = tmp_path / "state" / "tokens.json"
    TokenCache(path).put(KEY, _token("secret-token-1"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert TokenCache(path).get(KEY).access_token == "secret-token-1"
    # Only the cache file and its lock: no temporary file left behind by the atomic write.
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.json", "tokens.json.lock"]


def test_one_token_per_represented_taxpayer(tmp_path):
    cache = TokenCache(tmp_path / "tokens.json")
    cache.put(KEY, _token("own"))
    cache.put(KEY_FOR_TAXPAYER, _token("for-taxpayer"))
    assert cache.get(KEY).access_token == "own"
    assert cache.get(KEY_FOR_TAXPAYER).access_token == "for-taxpayer"


def test_two_caches_on_one_file_keep_each_others_tokens(tmp_path):
    path = tmp_path / "tokens.json"
    a, b = TokenCache(path), TokenCache(path)
    a.put(KEY, _token("from-a"))
    b.put(KEY_FOR_TAXPAYER, _token("from-b"))
    fresh = TokenCache(path)
    assert fresh.get(KEY).access_token == "from-a"
    assert fresh.get(KEY_FOR_TAXPAYER).access_token == "from-b"


def test_discard_only_removes_the_token_that_failed(tmp_path):
    cache = TokenCache(tmp_path / "tokens.json")
    cache.put(KEY, _token("new"))
    cache.discard(KEY, "old")  # another thread already replaced the rejected token
    assert cache.get(KEY).access_token == "new"
    cache.discard(KEY, "new")
    assert cache.get(KEY) is None
    assert TokenCache(tmp_path / "tokens.json").get(KEY) is None


def test_expired_and_damaged_entries_are_ignored(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tokens": {
                    KEY.as_string(): {"access_token": "old", "expires_at": time.time() - 1},
                    KEY_FOR_TAXPAYER.as_string(): {"access_token": "x"},
                }
            }
        )
    )
    cache = TokenCache(path)
    assert cache.get(KEY) is None
    assert cache.get(KEY_FOR_TAXPAYER) is None
    path.write_text("{not json")
    assert TokenCache(path).get(KEY) is None


def test_repr_never_shows_the_token():
    token = _token("eyJhbGciOi-very-secret")
    assert "very-secret" not in repr(token)
    assert "very-secret" not in str(token)
