"""HCCL rank-table validation: a good file parses; every broken field is one LaunchError naming the field."""

import copy
import json

import pytest

from geocli.errors import LaunchError
from geocli.runtime.ranktable import load_rank_table, local_server, rank_env

GOOD = {
    "version": "1.0",
    "server_count": "2",
    "server_list": [
        {"server_id": "10.0.0.1", "host_nic_ip": "reserve", "device": [
            {"device_id": "0", "device_ip": "192.1.27.6", "rank_id": "0"},
            {"device_id": "1", "device_ip": "192.2.27.6", "rank_id": "1"}]},
        {"server_id": "10.0.0.2", "host_nic_ip": "reserve", "device": [
            {"device_id": "0", "device_ip": "192.1.27.7", "rank_id": "2"},
            {"device_id": "1", "device_ip": "192.2.27.7", "rank_id": "3"}]},
    ],
    "status": "completed",
}

#: The SuperPoD (version 1.2) template of the CANN HCCL guide, trimmed to two servers of two devices.
GOOD_12 = {
    "status": "completed", "version": "1.2", "server_count": "2",
    "server_list": [
        {"server_id": "node_0", "host_ip": "172.16.0.100", "device": [
            {"device_id": "0", "super_device_id": "0", "device_ip": "192.168.1.6", "device_port": "16666",
             "rank_id": "0"},
            {"device_id": "9", "super_device_id": "9", "device_ip": "192.168.1.7", "rank_id": "1"}]},
        {"server_id": "node_1", "host_ip": "172.16.0.101", "device": [
            {"device_id": "0", "super_device_id": "2", "device_ip": "192.168.2.6", "rank_id": "2"},
            {"device_id": "1", "super_device_id": "3", "device_ip": "192.168.2.7", "rank_id": "3"}]},
    ],
    "super_pod_list": [{"super_pod_id": "0", "server_list": [{"server_id": "node_0"}, {"server_id": "node_1"}]}],
}


def write(tmp_path, data, name="hccl.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def broken(change):
    data = copy.deepcopy(GOOD)
    change(data)
    return data


def test_good_table_lists_every_rank(tmp_path):
    table = load_rank_table(write(tmp_path, GOOD))
    assert table.version == "1.0" and table.size == 4
    assert table.servers == ("10.0.0.1", "10.0.0.2")
    assert [(r.server_id, r.device_id, r.rank_id) for r in table.ranks] == [
        ("10.0.0.1", 0, 0), ("10.0.0.1", 1, 1), ("10.0.0.2", 0, 2), ("10.0.0.2", 1, 3)]


def test_hccl_tools_output_with_plain_integers_is_accepted(tmp_path):
    data = broken(lambda d: d["server_list"][0]["device"][0].update(device_id=0, rank_id=0))
    assert load_rank_table(write(tmp_path, data)).size == 4


def test_superpod_version_1_2_is_accepted(tmp_path):
    table = load_rank_table(write(tmp_path, GOOD_12))
    assert table.version == "1.2" and table.size == 4 and table.host_ips == ("172.16.0.100", "172.16.0.101")
    # A3 servers number their dies up to 15; the 1.0 template stops at 7
    data = copy.deepcopy(GOOD_12)
    data["version"] = "1.0"
    with pytest.raises(LaunchError, match=r"server_list\[0\]\.device\[1\]\.device_id: 9 is out of range 0\.\.7"):
        load_rank_table(write(tmp_path, data))


def test_superpod_membership_is_checked(tmp_path):
    data = copy.deepcopy(GOOD_12)
    data["super_pod_list"][0]["server_list"] = [{"server_id": "node_0"}]
    with pytest.raises(LaunchError, match=r"super_pod_list: servers \['node_1'\] are in no SuperPoD"):
        load_rank_table(write(tmp_path, data))


@pytest.mark.parametrize("data,fragment", [
    ('{"version": "1.0", ', r"hccl\.json: invalid JSON at line 1"),
    (broken(lambda d: d.pop("version")), r"hccl\.json: version: missing"),
    (broken(lambda d: d.update(version="2.0")), r"version: unsupported version '2\.0'"),
    (broken(lambda d: d.update(status="initializing")), r"status: is 'initializing', not 'completed'"),
    (broken(lambda d: d.update(server_count="3")), r"server_count: says 3 but server_list has 2 entries"),
    (broken(lambda d: d["server_list"][0]["device"][1].update(device_id="0")),
     r"server_list\[0\]\.device\[1\]\.device_id: duplicate device id 0 on server '10\.0\.0\.1' "
     r"\(also server_list\[0\]\.device\[0\]\)"),
    (broken(lambda d: d["server_list"][0]["device"][1].update(device_id="8")),
     r"server_list\[0\]\.device\[1\]\.device_id: 8 is out of range 0\.\.7"),
    (broken(lambda d: d["server_list"][0]["device"][1].update(device_id="x")),
     r"server_list\[0\]\.device\[1\]\.device_id: expected a non-negative integer"),
    (broken(lambda d: d["server_list"][1]["device"][1].update(rank_id="5")),
     r"server_list\[1\]\.device\[1\]\.rank_id: rank ids must be 0\.\.3 for 4 devices; got 5, missing \[3\]"),
    (broken(lambda d: d["server_list"][1]["device"][0].update(rank_id="1")),
     r"server_list\[1\]\.device\[0\]\.rank_id: duplicate rank id 1 \(also server_list\[0\]\.device\[1\]\)"),
    (broken(lambda d: d["server_list"][0]["device"][1].update(device_ip="192.1.27.300")),
     r"server_list\[0\]\.device\[1\]\.device_ip: '192\.1\.27\.300' is not a valid IPv4/IPv6 address"),
    (broken(lambda d: d["server_list"][1]["device"][0].update(device_ip="192.1.27.6")),
     r"server_list\[1\]\.device\[0\]\.device_ip: duplicate device ip 192\.1\.27\.6"),
    (broken(lambda d: d["server_list"][1]["device"][0].pop("device_ip")),
     r"server_list\[1\]\.device\[0\]\.device_ip: missing"),
    (broken(lambda d: d["server_list"][1]["device"][0].pop("rank_id")),
     r"server_list\[1\]\.device\[0\]\.rank_id: missing"),
    (broken(lambda d: d["server_list"][1].update(server_id="10.0.0.1")),
     r"server_list\[1\]\.server_id: duplicate server id '10\.0\.0\.1'"),
    (broken(lambda d: d["server_list"][1].update(device=[])), r"server_list\[1\]\.device: expected a non-empty"),
    ([1, 2], r"expected a rank table \(a JSON object\)"),
])
def test_each_broken_field_is_one_error_naming_file_and_field(tmp_path, data, fragment):
    path = write(tmp_path, data)
    with pytest.raises(LaunchError, match=fragment) as info:
        load_rank_table(path)
    message = str(info.value)
    assert message.startswith(f"rank table {path}: ") and "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(LaunchError, match="nope.json: file not found"):
        load_rank_table(tmp_path / "nope.json")


def test_device_ip_is_optional_on_a_single_server(tmp_path):
    data = broken(lambda d: (d["server_list"].pop(), d.update(server_count="1"),
                             d["server_list"][0]["device"][0].pop("device_ip")))
    data["server_list"][0]["device"][1]["rank_id"] = "1"
    assert load_rank_table(write(tmp_path, data)).size == 2


def test_rank_env_for_a_chosen_server(tmp_path):
    path = write(tmp_path, GOOD)
    table = load_rank_table(path)
    envs = rank_env(table, path, 1)
    assert envs == [
        {"RANK_TABLE_FILE": str(path.resolve()), "RANK_ID": "2", "DEVICE_ID": "0", "RANK_SIZE": "4"},
        {"RANK_TABLE_FILE": str(path.resolve()), "RANK_ID": "3", "DEVICE_ID": "1", "RANK_SIZE": "4"},
    ]
    assert rank_env(table, path, "10.0.0.1")[1]["RANK_ID"] == "1"
    with pytest.raises(LaunchError, match="server index 2 is out of range 0..1"):
        rank_env(table, path, 2)
    with pytest.raises(LaunchError, match="no server 'x'"):
        rank_env(table, path, "x")


def test_local_server_is_found_by_address_or_asked_for(tmp_path):
    table = load_rank_table(write(tmp_path, broken(lambda d: d["server_list"][1].update(server_id="127.0.0.1"))))
    assert local_server(table) == "127.0.0.1"
    other = load_rank_table(write(tmp_path, GOOD, "other.json"))
    with pytest.raises(LaunchError, match="is this machine .* choose one with --node-rank INDEX"):
        local_server(other)
