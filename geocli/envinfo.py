"""What ``geoloc env`` reports: versions, device targets and why a target is missing.

Bug reports about distributed or device problems are only useful with versions attached (the MindCV
lesson), so this collects in one dict: Python, platform, CPU and memory, geoloc and the libraries it
uses, MindSpore (version and import time), which device targets MindSpore can use here, the
CANN/driver versions for Ascend, the NVIDIA driver for GPU, and the ``msrun`` launcher.

MindSpore is probed in a child process (:func:`probe_mindspore`): the import time is then a real
cold import, the plugin loader's C-level messages cannot leak into ``--json`` output, and a broken
driver that crashes or hangs the import is reported instead of taking ``geoloc env`` down with it. The
child asks MindSpore itself (``mindspore.device_context.<target>.is_available()``, the loader's
plugin error, ``device_count()``) and runs one small op on the best target.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

TARGETS = ("cpu", "gpu", "ascend")
_MS_NAMES = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}
#: Library -> distributions that provide it (first installed one wins).
PACKAGES = {
    "mindspore": ("mindspore",),
    "numpy": ("numpy",),
    "opencv": ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
               "opencv-contrib-python-headless"),
    "h5py": ("h5py",),
    "scipy": ("scipy",),
    "typer": ("typer",),
    "rich": ("rich",),
    "pyyaml": ("PyYAML",),
}
_MARKER = "GEOLOC_ENV_PROBE "


def package_versions() -> Dict[str, Optional[str]]:
    """Installed versions from package metadata (nothing is imported)."""
    found: Dict[str, Optional[str]] = {}
    for name, dists in PACKAGES.items():
        found[name] = None
        for dist in dists:
            try:
                found[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def _read_key_values(path: Path) -> Dict[str, str]:
    values = {}
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip().lower()] = value.strip()
    except OSError:
        pass
    return values


def cpu_info() -> Dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"count": os.cpu_count(), "usable": usable, "model": model or platform.processor() or None}


def memory_info() -> Dict[str, Optional[float]]:
    """Total and available memory in GiB (``/proc/meminfo``; total only elsewhere)."""
    gib = 1024.0 ** 3
    meminfo = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            meminfo[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    total = meminfo.get("MemTotal")
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = None
    available = meminfo.get("MemAvailable")
    return {"total_gib": round(total / gib, 1) if total else None,
            "available_gib": round(available / gib, 1) if available else None}


def _run(cmd: List[str], timeout: float = 10.0) -> Optional[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _ascend_roots() -> List[Path]:
    roots = [os.environ.get("ASCEND_HOME_PATH"), os.environ.get("ASCEND_TOOLKIT_HOME"),
             "/usr/local/Ascend/ascend-toolkit/latest", "/usr/local/Ascend/cann",
             str(Path.home() / "Ascend" / "ascend-toolkit" / "latest")]
    return [Path(r) for r in roots if r and Path(r).is_dir()]


def ascend_info() -> Dict[str, Any]:
    """CANN toolkit version (its install-info files), NPU driver version, ``npu-smi`` and device nodes."""
    cann_version = cann_path = None
    for root in _ascend_roots():
        for info in [*sorted(root.glob("*-linux/ascend_toolkit_install.info")), root / "ascend_toolkit_install.info",
                     root / "version.cfg"]:
            values = _read_key_values(info)
            version = values.get("version") or values.get("runtime_running_version")
            if version:
                cann_version, cann_path = version.strip("[]").split(":")[0], str(info)
                break
        if cann_version:
            break
    driver = _read_key_values(Path("/usr/local/Ascend/driver/version.info")).get("version")
    npu_smi = shutil.which("npu-smi")
    npu_smi_version = None
    if npu_smi:
        out = _run([npu_smi, "info"]) or ""
        match = re.search(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)", out)
        npu_smi_version = match.group(2) if match else (out.strip().splitlines() or [None])[0]
    devices = sorted(str(p) for p in Path("/dev").glob("davinci[0-9]*"))
    return {"cann_version": cann_version, "cann_info_file": cann_path, "driver_version": driver,
            "npu_smi": npu_smi, "npu_smi_version": npu_smi_version, "device_nodes": devices}


def cuda_info() -> Dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    gpus = None
    if smi:
        out = _run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"])
        gpus = [line.strip() for line in (out or "").splitlines() if line.strip()] or None
    driver = None
    proc_version = Path("/proc/driver/nvidia/version")
    if proc_version.is_file():
        match = re.search(r"Kernel Module\s+(\S+)", proc_version.read_text(errors="replace"))
        driver = match.group(1) if match else "present"
    return {"nvidia_smi": smi, "gpus": gpus, "driver_version": driver}


# --------------------------------------------------------------------------- the MindSpore child process

def _probe() -> Dict[str, Any]:
    """Runs in the child: import MindSpore, ask it about each target, run one op on the best one."""
    import time

    start = time.perf_counter()
    import mindspore as ms

    result: Dict[str, Any] = {"version": ms.__version__, "import_seconds": round(time.perf_counter() - start, 2),
                              "path": str(Path(ms.__file__).parent), "targets": {}}
    try:
        from mindspore._c_expression import MSContext  # the loader's own record of why a plugin failed

        result["plugin_error"] = MSContext.get_instance().load_plugin_error() or None
    except Exception:  # noqa: BLE001 - private API: absent on other versions
        result["plugin_error"] = None
    plugin_dir = Path(ms.__file__).parent / "lib" / "plugin"
    result["plugins"] = sorted(p.name for p in plugin_dir.iterdir() if p.is_dir()) if plugin_dir.is_dir() else []
    for target in TARGETS:
        entry: Dict[str, Any] = {"available": False, "count": None, "error": None}
        try:
            module = getattr(ms.device_context, target)
            entry["available"] = bool(module.is_available())
            if entry["available"]:
                entry["count"] = int(module.device_count())
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the report
            entry["error"] = f"{type(exc).__name__}: {exc}"
        result["targets"][target] = entry
    best = next((t for t in ("ascend", "gpu", "cpu") if result["targets"][t]["available"]), None)
    if best is not None:
        try:
            ms.set_device(_MS_NAMES[best])
            value = (ms.Tensor([1.0, 2.0]) * 2).asnumpy().tolist()
            result["op_check"] = {"target": best, "ok": value == [2.0, 4.0], "error": None}
        except Exception as exc:  # noqa: BLE001
            result["op_check"] = {"target": best, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return result


def _probe_main() -> None:
    print(_MARKER + json.dumps(_probe()), flush=True)


def probe_mindspore(timeout: float = 120.0) -> Dict[str, Any]:
    """Import MindSpore in a fresh interpreter and report what it can use; ``error`` says why not."""
    env = dict(os.environ)
    env.setdefault("GLOG_v", "3")
    code = "from geocli.envinfo import _probe_main; _probe_main()"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"importing MindSpore did not finish within {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_MARKER):
            return json.loads(line[len(_MARKER):])
    errors = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith(("[WARNING]", "[INFO]"))]
    return {"error": (errors[-1] if errors else f"probe exited with code {proc.returncode}")[:400]}


def _missing_libraries(plugin_error: Optional[str], name: str) -> List[str]:
    """Shared libraries the plugin loader could not find, from lines that mention ``name``."""
    missing = []
    for line in (plugin_error or "").splitlines():
        if name in line.lower():
            missing += re.findall(r"(\S+\.so[.\d]*): cannot open shared object file", line)
    return sorted(set(missing))


def explain_targets(ms_info: Dict[str, Any], ascend: Dict[str, Any], cuda: Dict[str, Any]) -> Dict[str, Dict]:
    """Per target: available or not, device count, and a one-line reason for a missing one."""
    out: Dict[str, Dict] = {}
    targets = ms_info.get("targets") or {}
    for target in TARGETS:
        entry = dict(targets.get(target) or {"available": False, "count": None, "error": None})
        reason = None
        if "error" in ms_info and not targets:
            reason = f"MindSpore unusable: {ms_info['error']}"
        elif not entry.get("available"):
            reasons = []
            if target == "gpu":
                cudas = [p[3:] for p in ms_info.get("plugins", []) if re.fullmatch(r"gpu\d+(\.\d+)*", p)]
                needs = (f"this MindSpore wheel's GPU plugin needs CUDA {' or '.join(cudas)}" if cudas
                         else "this MindSpore build has no GPU plugin")
                if not cuda.get("nvidia_smi") and not cuda.get("driver_version"):
                    reasons.append("no NVIDIA GPU or driver (nvidia-smi not found, no /proc/driver/nvidia)")
                    reasons.append(needs)
                else:
                    reasons.append(f"MindSpore's GPU plugin did not load: {needs}")
            elif target == "ascend":
                if not ascend.get("device_nodes") and not ascend.get("npu_smi"):
                    reasons.append("no Ascend device (/dev/davinci* missing, npu-smi not found)")
                if not ascend.get("cann_version"):
                    reasons.append("CANN toolkit not found (install it and source set_env.sh)")
                missing = _missing_libraries(ms_info.get("plugin_error"), "ascend")
                if missing:
                    reasons.append(f"plugin libraries missing: {', '.join(missing)}")
            if entry.get("error"):
                reasons.append(entry["error"])
            reason = "; ".join(reasons) or "MindSpore reports it unavailable"
        entry["reason"] = reason
        out[target] = entry
    return out


def collect(probe: bool = True, timeout: float = 120.0) -> Dict[str, Any]:
    """Everything ``geoloc env`` shows, as JSON-ready data. ``probe=False`` skips importing MindSpore."""
    from geocli import __version__
    from geocli.runtime import blocked_conv
    from geocli.runtime.launch import msrun_path

    ascend, cuda = ascend_info(), cuda_info()
    ms_info = probe_mindspore(timeout) if probe else {"error": "not probed"}
    return {
        "geoloc": {"version": __version__, "path": str(Path(__file__).parent)},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.platform(), "machine": platform.machine()},
        "cpu": cpu_info(),
        "memory": memory_info(),
        "mindspore": {k: v for k, v in ms_info.items() if k != "targets"},
        "devices": explain_targets(ms_info, ascend, cuda),
        "ascend": ascend,
        "cuda": cuda,
        "packages": package_versions(),
        "msrun": msrun_path(),
        "conv": blocked_conv.status(ms_info.get("version")),
    }


def _conv_row(conv: Dict[str, Any]) -> str:
    """What ``--conv`` runs here (geocli.runtime.blocked_conv)."""
    if conv["library"]:
        built = f"blocked op built ({conv['library']})"
    elif conv["choice"] == "mindspore":
        built = "blocked op not built (not used under --conv mindspore)"
    elif conv.get("failure"):
        built = f"blocked op cannot be built here: {conv['failure']} (--conv blocked tries again)"
    else:
        built = "blocked op not built yet (the first run on CPU compiles it, about 5 s)"
    return f"{conv['choice']} (--conv, GEOLOC_CONV); {built}"


def rows(info: Dict[str, Any]) -> List[tuple]:
    """(section, item, value) rows for the table view."""
    ms = info["mindspore"]
    ms_value = (f"{ms['version']} (import {ms['import_seconds']:.2f} s, {ms['path']})" if "version" in ms
                else f"not usable: {ms.get('error')}")
    out = [
        ("geoloc", "geoloc", f"{info['geoloc']['version']} ({info['geoloc']['path']})"),
        ("geoloc", "python", f"{info['python']['version']} {info['python']['implementation']} "
                             f"({info['python']['executable']})"),
        ("geoloc", "platform", f"{info['platform']['system']} ({info['platform']['machine']})"),
        ("geoloc", "cpu", f"{info['cpu']['usable']} usable of {info['cpu']['count']} cores"
                          + (f", {info['cpu']['model']}" if info['cpu']['model'] else "")),
        ("geoloc", "memory", f"{info['memory']['total_gib']} GiB total, {info['memory']['available_gib']} GiB available"),
        ("mindspore", "mindspore", ms_value),
    ]
    for target in TARGETS:
        dev = info["devices"][target]
        if dev.get("available"):
            value = f"available ({dev.get('count')} device{'s' if dev.get('count') != 1 else ''})"
        else:
            value = f"not available: {dev.get('reason')}"
        out.append(("mindspore", f"target {_MS_NAMES[target]}", value))
    check = ms.get("op_check")
    if check:
        out.append(("mindspore", "op check", f"{_MS_NAMES[check['target']]}: "
                                              + ("ok" if check["ok"] else f"FAILED {check.get('error')}")))
    asc, cuda = info["ascend"], info["cuda"]
    out += [
        ("devices", "CANN", asc["cann_version"] and f"{asc['cann_version']} ({asc['cann_info_file']})"
         or "not found"),
        ("devices", "Ascend driver", asc["driver_version"] or "not found"),
        ("devices", "npu-smi", asc["npu_smi"] and f"{asc['npu_smi']} ({asc['npu_smi_version']})" or "not found"),
        ("devices", "NVIDIA driver", cuda["driver_version"] or ("; ".join(cuda["gpus"]) if cuda["gpus"]
                                                                 else "not found")),
        ("devices", "msrun", info["msrun"] or "not found (installed with MindSpore)"),
        ("devices", "CPU convolutions", _conv_row(info["conv"])),
    ]
    out += [("packages", name, version or "not installed") for name, version in info["packages"].items()]
    return out
