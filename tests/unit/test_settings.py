"""Settings come in groups; overrides stay flat, keyed by the variable's name in lower case."""

from __future__ import annotations

import pytest

from shared.config import GROUPS, OVERRIDES, DatabaseSettings, Settings


def test_every_variable_is_declared_once_and_overridden_by_its_name_in_lower_case() -> None:
    names = [f.metadata["env"] for _, f in Settings.variables()]
    assert len(names) == len(set(names)) == len(OVERRIDES)
    for group, f in Settings.variables():
        assert OVERRIDES[f.metadata["env"].lower()] == (group, f.name)
    assert set(GROUPS) == set(Settings().groups())


def test_from_env_fills_each_group_and_overrides_win() -> None:
    s = Settings.from_env(
        {"RELAY_BATCH_SIZE": "7", "OCR_GPU": "yes", "SAGA_STEP_TIMEOUT_S": "2.5",
         "OCR_ENGINE": "easyocr"},
        ocr_engine="tesseract",
    )
    assert (s.relay.batch_size, s.ocr.gpu, s.saga.step_timeout_s) == (7, True, 2.5)
    assert s.ocr.engine == "tesseract"
    assert s.relay.poll_max_s == Settings().relay.poll_max_s


def test_replace_is_a_validated_copy() -> None:
    s = Settings.build(worker_partitions=2)
    assert s.replace(worker_partitions=3).worker.partitions == 3
    assert s.worker.partitions == 2
    with pytest.raises(ValueError, match="WORKER_PARTITIONS"):
        s.replace(worker_partitions=0)
    with pytest.raises(TypeError, match="'relay_batch'"):
        s.replace(relay_batch=1)


def test_no_flat_names_remain() -> None:
    assert not hasattr(Settings(), "relay_batch_size")  # settings.relay.batch_size


def test_environment_builds_the_same_settings_again() -> None:
    s = Settings.build(relay_poll_min_s=0.5, session_cookie_secure=True, login_window_s=7,
                       signing_key_kek="k" * 40, audit_database_url="postgresql://a/x")
    assert Settings.from_env(s.environment()) == s


def test_database_urls_by_logical_name_and_the_audit_fallback() -> None:
    db = DatabaseSettings(auth_url="postgresql://a/authdb")
    assert db.url("authdb") == db.audit_url == "postgresql://a/authdb"
    assert DatabaseSettings(operator_audit_url="postgresql://b/x").audit_url == "postgresql://b/x"
    with pytest.raises(ValueError, match="unknown database 'x'"):
        db.url("x")
