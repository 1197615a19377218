"""``geoloc env`` and ``geoloc models`` through the CLI."""

import json

import pytest

from geocli import envinfo, registry


@pytest.fixture(scope="module")
def env_json():
    """One real ``geoloc env --json`` run (it probes MindSpore in a child process, ~1.5 s)."""
    from typer.testing import CliRunner

    from geocli.cli.main import app

    result = CliRunner().invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_env_json_reports_versions_and_targets(env_json):
    from geocli import __version__

    assert env_json["geoloc"]["version"] == __version__
    assert env_json["mindspore"]["version"] and env_json["mindspore"]["import_seconds"] > 0
    assert env_json["packages"]["mindspore"] == env_json["mindspore"]["version"]
    for name in ("numpy", "opencv", "typer", "rich", "h5py"):
        assert env_json["packages"][name], name
    assert set(env_json["devices"]) == {"cpu", "gpu", "ascend"}
    cpu = env_json["devices"]["cpu"]
    assert cpu["available"] and cpu["count"] >= 1 and cpu["reason"] is None
    assert env_json["mindspore"]["op_check"]["ok"]
    for target, dev in env_json["devices"].items():
        assert dev["available"] or dev["reason"], target  # a missing target always says why
    assert env_json["cpu"]["count"] >= 1 and env_json["memory"]["total_gib"] > 0
    assert env_json["msrun"]


def test_env_table_mentions_each_target(cli):
    result = cli("env")
    assert result.exit_code == 0, result.output
    for word in ("mindspore", "target CPU", "target GPU", "target Ascend", "numpy", "msrun", "CANN"):
        assert word in result.output, word
    assert "available (" in result.output and "not available:" in result.output


def test_missing_targets_say_why_without_hardware():
    ms_info = {"targets": {"cpu": {"available": True, "count": 1, "error": None},
                           "gpu": {"available": False, "count": None, "error": None},
                           "ascend": {"available": False, "count": None, "error": None}},
               "plugins": ["cpu", "gpu11.6"],
               "plugin_error": "Load dynamic library: libmindspore_ascend.so.2 failed. libge_runner.so: cannot open "
                               "shared object file: No such file or directory\n"}
    ascend = {"device_nodes": [], "npu_smi": None, "cann_version": None}
    cuda = {"nvidia_smi": None, "driver_version": None}
    devices = envinfo.explain_targets(ms_info, ascend, cuda)
    assert devices["cpu"]["reason"] is None
    assert "no NVIDIA GPU or driver" in devices["gpu"]["reason"] and "CUDA 11.6" in devices["gpu"]["reason"]
    reason = devices["ascend"]["reason"]
    assert "no Ascend device" in reason and "CANN toolkit not found" in reason and "libge_runner.so" in reason
    broken = envinfo.explain_targets({"error": "ImportError: no module named mindspore"}, ascend, cuda)
    assert all("MindSpore unusable: ImportError" in d["reason"] for d in broken.values())


def test_cann_and_driver_versions_are_read_from_install_files(tmp_path, monkeypatch):
    toolkit = tmp_path / "ascend-toolkit" / "latest"
    (toolkit / "x86_64-linux").mkdir(parents=True)
    (toolkit / "x86_64-linux" / "ascend_toolkit_install.info").write_text("package_name=Ascend-cann-toolkit\n"
                                                                         "version=8.0.RC2\narch=x86_64\n")
    monkeypatch.setenv("ASCEND_HOME_PATH", str(toolkit))
    info = envinfo.ascend_info()
    assert info["cann_version"] == "8.0.RC2" and info["cann_info_file"].endswith("ascend_toolkit_install.info")


def test_models_lists_registered_models(cli):
    result = cli("models", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == registry.names()
    hidden = json.loads(cli("models", "--all", "--json").stdout)
    toy = next(r for r in hidden if r["name"] == "toy")
    assert toy["hidden"] and toy["tasks"] == ["train", "eval", "export"] and "default" in toy["presets"]
    table = cli("models", "--all")
    assert table.exit_code == 0 and "toy (hidden)" in table.output and "default*" in table.output


def test_models_task_filter(cli):
    rows = json.loads(cli("models", "--all", "--task", "export", "--json").stdout)
    assert [r["name"] for r in rows] == registry.names("export", include_hidden=True)
    bad = cli("models", "--task", "fly")
    assert bad.exit_code == 2 and "--task 'fly'" in bad.stderr
