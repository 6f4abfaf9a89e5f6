"""Starting or joining the Ray cluster a sweep's workers run on, and the one line of a Ray error
worth showing. Ray itself is imported only when a pool starts (``pip install 'layerfast[ray]'``).
"""

from __future__ import annotations

from ...errors import UsageError

INSTALL_HINT = "pip install 'layerfast[ray]'"


def import_ray():
    """The ``ray`` module, or a UsageError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            f"workers > 1 (--workers) runs the sweep on Ray, which is not installed: {INSTALL_HINT}"
        ) from None
    return ray


def start_ray(ray, address: str | None, cpus: int) -> bool:
    """Join the cluster at ``address`` or start a local one with ``cpus`` CPUs, unless Ray is
    already initialised in this process. Returns True when this call started it (the pool
    then shuts it down)."""
    if ray.is_initialized():
        return False
    if address is not None and address != "auto":
        check_reachable(address)
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address is None:
            ray.init(num_cpus=cpus, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = f"the Ray cluster at {address!r} (--ray-address)" if address else "a local Ray"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UsageError(f"cannot start or join {where}: {reason}") from None
    return True


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A UsageError unless a TCP connection to ``address`` ("host:port" or
    "ray://host:port") opens within ``timeout`` seconds: Ray itself keeps retrying an
    unreachable address for minutes."""
    import socket

    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UsageError(
            f"cannot reach the Ray cluster at {address!r} (--ray-address): {reason}; is "
            "`ray start --head` running there?"
        ) from None


def reason(error: BaseException) -> str:
    """The useful line(s) of a Ray error: the worker's own exception when there is one."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(error).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tail = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (tail[-1] if tail else (lines[-1] if lines else type(error).__name__))[:500]
