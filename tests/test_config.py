"""Settings: one DEFAULTS, typed views built from it, unknown keys refused with a suggestion,
and `trapline config show` naming where every value came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trapline.analyze.botnet_evidence import EvidenceParams
from trapline.analyze.botnets import BotnetParams
from trapline.analyze.lsh import ClusterParams
from trapline.config import DEFAULTS, SettingsView, SmtpLimits, load_config, load_settings
from trapline.errors import ConfigError
from trapline.export.evidence import ExportSettings
from trapline.objectstores import ObjectStores
from trapline.serve.api.settings import WebSettings
from trapline.serve.dnsbl.settings import DnsblSettings


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPLINE_")}
    env.update(extra)
    return env


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trapline", *args],
        cwd=tmp_path,
        env=_env(**env),
        capture_output=True,
        text=True,
    )


def test_a_misspelt_key_in_the_file_is_an_error_naming_the_nearest_key(tmp_path: Path) -> None:
    (tmp_path / "trapline.toml").write_text("smtp_max_recipent = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'smtp_max_recipients'"):
        load_config(cwd=tmp_path)


def test_a_misspelt_environment_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAPLINE_CAMPAIGN_JACARD", "0.5")
    with pytest.raises(ConfigError, match=r"TRAPLINE_CAMPAIGN_JACARD.*'campaign_jaccard'"):
        load_settings(cwd=tmp_path)


def test_a_key_nothing_resembles_gets_no_guess(tmp_path: Path) -> None:
    (tmp_path / "trapline.toml").write_text("[trapline]\nzzz = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(cwd=tmp_path)
    assert "unknown setting 'zzz'" in str(err.value) and "did you mean" not in str(err.value)


def test_views_read_their_keys_with_defaults_from_the_one_table(tmp_path: Path) -> None:
    (tmp_path / "trapline.toml").write_text("smtp_max_recipients = 7\ncampaign_jaccard = 0.6\n")
    settings = load_settings(cwd=tmp_path)
    limits = SmtpLimits.from_settings(settings)
    assert limits.max_recipients == 7
    assert limits.max_message_bytes == DEFAULTS["smtp_max_message_bytes"]
    assert ClusterParams.from_settings(settings).threshold == 0.6
    # A partial mapping (library callers, tests) falls back to DEFAULTS, never to a second copy.
    assert ClusterParams.from_settings({}).threshold == DEFAULTS["campaign_jaccard"]
    assert BotnetParams.from_settings({}).min_shared_hosts == DEFAULTS["botnet_min_shared_hosts"]


def test_every_view_field_is_a_known_setting() -> None:
    views = [SmtpLimits, ClusterParams, BotnetParams, EvidenceParams, DnsblSettings,
             ExportSettings, WebSettings, ObjectStores]  # fmt: skip
    assert {cls.__name__ for cls in SettingsView.__subclasses__()} <= {v.__name__ for v in views}
    for view in views:
        assert set(view.keys()) <= set(DEFAULTS), view


def test_a_value_of_the_wrong_type_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="smtp_max_recipients='many'"):
        SmtpLimits.from_settings({"smtp_max_recipients": "many"})
    with pytest.raises(ConfigError, match="campaign_lsh_bands x campaign_lsh_rows"):
        ClusterParams.from_settings({"campaign_lsh_bands": 64})
    with pytest.raises(ConfigError, match="botnet_trait_weights"):
        EvidenceParams.from_settings({"botnet_trait_weights": {"mailer": "heavy"}})
    weights = EvidenceParams.from_settings({"botnet_trait_weights": {"mailer": "0.5"}})
    assert weights.trait_weights == {"mailer": 0.5}


def test_config_show_names_every_source(tmp_path: Path) -> None:
    (tmp_path / "trapline.toml").write_text('http_site_name = "Allotment Society"\n')
    done = _cli(tmp_path, "--data-dir", "d", "config", "show", "--json", TRAPLINE_BATCH_SIZE="500")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert set(shown) == set(DEFAULTS)
    assert shown["batch_size"] == {"value": 500, "source": "environment TRAPLINE_BATCH_SIZE"}
    assert shown["http_site_name"]["source"] == f"file {tmp_path / 'trapline.toml'}"
    assert shown["data_dir"] == {"value": "d", "source": "flag"}
    assert shown["workers"] == {"value": DEFAULTS["workers"], "source": "default"}
    text = _cli(tmp_path, "config", "show", TRAPLINE_DATA_DIR="elsewhere")
    assert "environment TRAPLINE_DATA_DIR" in text.stdout


def test_the_cli_refuses_an_unknown_key_in_one_line(tmp_path: Path) -> None:
    done = _cli(tmp_path, "stats", TRAPLINE_SMTP_MAX_RECIPENTS="3")
    assert done.returncode == 1
    assert done.stderr.startswith("error: environment variable TRAPLINE_SMTP_MAX_RECIPENTS")
    assert "did you mean 'smtp_max_recipients'" in done.stderr


def test_a_serve_module_brings_its_own_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plugin_with_key.py").write_text(
        "from trapline.config import register_defaults\n"
        "register_defaults({'plugin_colour': 'green'})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TRAPLINE_SERVE_MODULES", "plugin_with_key")
    monkeypatch.setenv("TRAPLINE_PLUGIN_COLOUR", "blue")
    try:
        config = load_config(cwd=tmp_path)
    finally:
        DEFAULTS.pop("plugin_colour", None)  # the module registered it for this process
    assert config.values["plugin_colour"] == "blue"
    assert config.origins["plugin_colour"] == "environment TRAPLINE_PLUGIN_COLOUR"
