from collections import Counter

from services.depersonalise.cellkey import KEY_RANGE, cell_key, key_secret, record_key_value


def test_record_keys_are_stable_secret_and_spread_evenly() -> None:
    secret = key_secret("internal")
    assert key_secret("internal") == secret
    assert key_secret("internal", "configured") != secret
    keys = [record_key_value(secret, f"record-{i}") for i in range(25_600)]
    assert keys == [record_key_value(secret, f"record-{i}") for i in range(25_600)]
    other = [record_key_value(key_secret("other"), f"record-{i}") for i in range(25_600)]
    assert sum(a == b for a, b in zip(keys, other, strict=True)) < 25_600 * 0.01
    spread = Counter(keys)
    assert set(spread) == set(range(KEY_RANGE))
    assert max(spread.values()) < 3 * 25_600 / KEY_RANGE


def test_a_cells_key_is_its_records_keys_summed_modulo_the_range() -> None:
    assert cell_key(0) == 0
    assert cell_key(255 + 3) == 2
    assert cell_key(KEY_RANGE * 7 + 5) == 5
