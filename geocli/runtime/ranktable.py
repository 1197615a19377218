"""HCCL rank tables: validate the JSON file and derive each local process's environment.

The rank table is Ascend's way to describe a collective-communication job: every server taking part
and, per server, every device with its NIC address and its global rank. Two template versions are
documented by Huawei (CANN HCCL user guide, "Rank Table Configuration"; MindSpore "rank table Startup"):

* ``"1.0"`` (Atlas training / Atlas A2 products; what ``hccl_tools.py`` of mindspore-ai/models writes)::

    {"version": "1.0", "server_count": "1", "status": "completed",
     "server_list": [{"server_id": "10.0.0.1", "host_nic_ip": "reserve",
                      "device": [{"device_id": "0", "device_ip": "192.1.27.6", "rank_id": "0"}, ...]}]}

* ``"1.2"`` (Atlas A3 SuperPoD networking): the same, plus ``host_ip`` per server, ``super_device_id``
  (and optional ports) per device, and an optional ``super_pod_list`` grouping servers into SuperPoDs.
  An A3 server exposes two dies per NPU, so device ids go up to 15 there instead of 7.

Numbers are strings in both templates; plain JSON integers are accepted too. ``device_ip`` may be IPv4
or IPv6 (the guide says "regular IPv4 or IPv6 format"), must be unique, and is required when there is
more than one server (the guide: "device_ip must be configured in multi-machine scenarios"). Every
problem is reported as one :class:`~geocli.errors.LaunchError` line naming the file and the field path:
``rank table hccl.json: server_list[0].device[1].rank_id: duplicate rank id 1 (also server_list[0].device[0])``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from geocli.errors import LaunchError

#: Template version -> number of device ids per server (ids are 0 .. n-1).
DEVICES_PER_SERVER = {"1.0": 8, "1.2": 16}


@dataclass(frozen=True)
class Rank:
    """One process of the job: which server, which device on it, which global rank."""

    server_id: str
    device_id: int
    rank_id: int
    device_ip: Optional[str] = None


@dataclass(frozen=True)
class RankTable:
    """A validated rank table: servers in file order and ranks sorted by rank id."""

    path: Path
    version: str
    servers: Tuple[str, ...]
    ranks: Tuple[Rank, ...]
    host_ips: Tuple[Optional[str], ...] = ()

    @property
    def size(self) -> int:
        return len(self.ranks)

    def server_ranks(self, server_id: str) -> List[Rank]:
        return [r for r in self.ranks if r.server_id == server_id]


class _Checker:
    """Collects the file name so every error names it and the offending field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field: str, message: str) -> LaunchError:
        where = f"{field}: " if field else ""
        return LaunchError(f"rank table {self.path}: {where}{message}")

    def integer(self, value: Any, field: str, low: int = 0, high: Optional[int] = None) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.fail(field, f"expected an integer (as a string, e.g. \"0\"), got {value!r}")
        text = str(value).strip()
        if not text.isdigit():
            raise self.fail(field, f"expected a non-negative integer, got {value!r}")
        number = int(text)
        if number < low or (high is not None and number > high):
            raise self.fail(field, f"{number} is out of range {low}..{high}")
        return number

    def require(self, obj: Dict[str, Any], key: str, prefix: str) -> Any:
        if key not in obj:
            raise self.fail(prefix + key, "missing")
        return obj[key]

    def ip(self, value: Any, field: str) -> str:
        try:
            return str(ipaddress.ip_address(str(value).strip()))
        except ValueError:
            raise self.fail(field, f"{value!r} is not a valid IPv4/IPv6 address") from None

    def mapping(self, value: Any, field: str, what: str) -> Dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected {what} (a JSON object), got {type(value).__name__}")
        return value

    def listing(self, value: Any, field: str) -> List[Any]:
        if not isinstance(value, list) or not value:
            raise self.fail(field, "expected a non-empty JSON list")
        return value


def load_rank_table(path: Union[str, Path]) -> RankTable:
    """Read and validate a rank-table file; raise :class:`LaunchError` on the first problem."""
    path = Path(path)
    check = _Checker(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise check.fail("", "file not found") from None
    except OSError as exc:
        raise check.fail("", f"cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise check.fail("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return parse_rank_table(data, path)


def parse_rank_table(data: Any, path: Union[str, Path] = "<rank table>") -> RankTable:
    """Validate already-parsed rank-table JSON (see the module docstring for the checks)."""
    check = _Checker(Path(path))
    data = check.mapping(data, "", "a rank table")
    version = str(check.require(data, "version", "")).strip()
    if version not in DEVICES_PER_SERVER:
        raise check.fail("version", f"unsupported version {version!r}; documented templates are "
                                    f"{', '.join(repr(v) for v in DEVICES_PER_SERVER)}")
    status = check.require(data, "status", "")
    if status != "completed":
        raise check.fail("status", f"is {status!r}, not 'completed': the table is not ready (still being "
                                   "written by the cluster scheduler?)")
    servers = check.listing(check.require(data, "server_list", ""), "server_list")
    count = check.integer(check.require(data, "server_count", ""), "server_count")
    if count != len(servers):
        raise check.fail("server_count", f"says {count} but server_list has {len(servers)} entries")

    ranks: List[Tuple[Rank, str]] = []
    server_ids: List[str] = []
    host_ips: List[Optional[str]] = []
    seen_ips: Dict[str, str] = {}
    seen_servers: Dict[str, str] = {}
    for s, server in enumerate(servers):
        at = f"server_list[{s}]"
        server = check.mapping(server, at, "a server")
        server_id = str(check.require(server, "server_id", at + ".")).strip()
        if not server_id:
            raise check.fail(f"{at}.server_id", "is empty")
        if server_id in seen_servers:
            raise check.fail(f"{at}.server_id", f"duplicate server id {server_id!r} "
                                                 f"(also {seen_servers[server_id]})")
        seen_servers[server_id] = at
        server_ids.append(server_id)
        host_ip = server.get("host_ip")
        host_ips.append(check.ip(host_ip, f"{at}.host_ip") if host_ip is not None else None)
        seen_devices: Dict[int, str] = {}
        for d, device in enumerate(check.listing(check.require(server, "device", at + "."), f"{at}.device")):
            dat = f"{at}.device[{d}]"
            device = check.mapping(device, dat, "a device")
            device_id = check.integer(check.require(device, "device_id", dat + "."), f"{dat}.device_id",
                                      0, DEVICES_PER_SERVER[version] - 1)
            if device_id in seen_devices:
                raise check.fail(f"{dat}.device_id", f"duplicate device id {device_id} on server "
                                                     f"{server_id!r} (also {seen_devices[device_id]})")
            seen_devices[device_id] = dat
            device_ip = None
            if "device_ip" in device or len(servers) > 1:  # optional on one server, required across servers
                device_ip = check.ip(check.require(device, "device_ip", dat + "."), f"{dat}.device_ip")
                if device_ip in seen_ips:
                    raise check.fail(f"{dat}.device_ip", f"duplicate device ip {device_ip} "
                                                         f"(also {seen_ips[device_ip]})")
                seen_ips[device_ip] = dat
            if version == "1.2" and "super_device_id" in device:
                check.integer(device["super_device_id"], f"{dat}.super_device_id")
            rank_id = check.integer(check.require(device, "rank_id", dat + "."), f"{dat}.rank_id")
            ranks.append((Rank(server_id, device_id, rank_id, device_ip), dat))
    _check_rank_ids(check, ranks)
    if version == "1.2" and "super_pod_list" in data:
        _check_super_pods(check, data["super_pod_list"], server_ids)
    ordered = tuple(sorted((r for r, _ in ranks), key=lambda r: r.rank_id))
    return RankTable(Path(path), version, tuple(server_ids), ordered, tuple(host_ips))


def _check_rank_ids(check: _Checker, ranks: List[Tuple[Rank, str]]) -> None:
    """Rank ids are unique and dense: exactly 0 .. N-1 for N devices."""
    owner: Dict[int, str] = {}
    for rank, at in ranks:
        if rank.rank_id in owner:
            raise check.fail(f"{at}.rank_id", f"duplicate rank id {rank.rank_id} (also {owner[rank.rank_id]})")
        owner[rank.rank_id] = at
    size = len(ranks)
    for rank, at in ranks:
        if rank.rank_id >= size:
            missing = sorted(set(range(size)) - set(owner))
            raise check.fail(f"{at}.rank_id", f"rank ids must be 0..{size - 1} for {size} devices; "
                                              f"got {rank.rank_id}, missing {missing}")


def _check_super_pods(check: _Checker, pods: Any, server_ids: List[str]) -> None:
    """Version 1.2: every server of server_list belongs to exactly one SuperPoD."""
    placed: Dict[str, str] = {}
    for p, pod in enumerate(check.listing(pods, "super_pod_list")):
        at = f"super_pod_list[{p}]"
        pod = check.mapping(pod, at, "a SuperPoD")
        check.require(pod, "super_pod_id", at + ".")
        for s, member in enumerate(check.listing(check.require(pod, "server_list", at + "."), f"{at}.server_list")):
            mat = f"{at}.server_list[{s}].server_id"
            server_id = str(check.require(check.mapping(member, mat, "a server"), "server_id", "")).strip()
            if server_id not in server_ids:
                raise check.fail(mat, f"server {server_id!r} is not in server_list")
            if server_id in placed:
                raise check.fail(mat, f"server {server_id!r} is already in {placed[server_id]}")
            placed[server_id] = at
    unplaced = [s for s in server_ids if s not in placed]
    if unplaced:
        raise check.fail("super_pod_list", f"servers {unplaced} are in no SuperPoD")


def local_addresses() -> List[str]:
    """Names and addresses this machine answers to (to find its entry in a rank table)."""
    names = {socket.gethostname(), socket.getfqdn(), "127.0.0.1", "localhost"}
    for host in list(names):
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(host, None))
        except OSError:
            continue
    try:  # the address used to reach the outside (no packet is sent for UDP connect)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))
            names.add(sock.getsockname()[0])
    except OSError:
        pass
    return sorted(names)


def local_server(table: RankTable, server: Union[None, int, str] = None) -> str:
    """Pick this machine's server id: by index (``--node-rank``), by id, or by matching local addresses."""
    if isinstance(server, int):
        if not 0 <= server < len(table.servers):
            raise LaunchError(f"rank table {table.path}: server index {server} is out of range "
                              f"0..{len(table.servers) - 1}")
        return table.servers[server]
    if isinstance(server, str):
        if server not in table.servers:
            raise LaunchError(f"rank table {table.path}: no server {server!r}; servers: {', '.join(table.servers)}")
        return server
    if len(table.servers) == 1:
        return table.servers[0]
    mine = set(local_addresses())
    for index, server_id in enumerate(table.servers):
        host_ip = table.host_ips[index] if index < len(table.host_ips) else None
        if server_id in mine or (host_ip and host_ip in mine):
            return server_id
    raise LaunchError(f"rank table {table.path}: none of the servers ({', '.join(table.servers)}) is this "
                      f"machine (its addresses: {', '.join(sorted(mine))}); choose one with --node-rank INDEX")


def rank_env(table: RankTable, path: Union[None, str, Path] = None,
             server: Union[None, int, str] = None) -> List[Dict[str, str]]:
    """Environment of each process to start on this server, in rank order.

    Exactly what MindSpore's rank-table startup scripts export: ``RANK_TABLE_FILE`` (absolute),
    ``RANK_ID`` (global rank), ``DEVICE_ID`` (physical device on this server) and ``RANK_SIZE``.
    """
    server_id = local_server(table, server)
    table_file = str(Path(path if path is not None else table.path).resolve())
    return [{"RANK_TABLE_FILE": table_file, "RANK_ID": str(r.rank_id), "DEVICE_ID": str(r.device_id),
             "RANK_SIZE": str(table.size)} for r in table.server_ranks(server_id)]

