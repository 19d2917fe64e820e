"""Load ``configs/*.yaml`` into a validated :class:`~westflow.inventory.Network`.

Three stages: schema (unknown keys rejected), cross-field checks, frozen objects.
Every failure is a :class:`~westflow.errors.ConfigError` naming the file,
the field path, the bad value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from westflow.errors import ConfigError
from westflow.inventory import (
    AcceleratorPool,
    City,
    DataCenter,
    Family,
    Network,
    PolicyWeights,
    RayCluster,
    Region,
    Tier,
    TokenSource,
    Transfer,
)
from westflow.latency import DEFAULT_GUARD_BAND, LatencyModel, floor_ms, great_circle_km, modelled_ms
from westflow.tariffs import Band, Period, Tariff
from westflow.yamlio import MAX_CONFIG_BYTES, YamlInputError, read_yaml

__all__ = ["CONFIG_DIR", "load_network", "load_yaml", "build_network", "pydantic_to_fields", "validate_config"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
_ID = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)  # 1e400 is inf


class _Pool(_Strict):
    family: Literal["cuda", "cann"]
    model: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    count: int = Field(ge=0)
    watts: float = Field(gt=0)
    per_node: int = Field(default=8, ge=1)


class _DC(_Strict):
    id: str = Field(pattern=_ID)
    name: str
    hub: str
    region: Literal["east", "west"]
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    pue: float = Field(ge=1.0, le=3.0)
    price_cny_kwh: float = Field(gt=0)
    ray_cluster: str = Field(pattern=_ID)
    cpus: int = Field(ge=0)
    memory_gb: float = Field(ge=0)
    accelerators: list[_Pool] = Field(default_factory=list)
    utilisation_baseline: float = Field(default=0.5, ge=0, le=1)
    utilisation_target: float | None = Field(default=None, gt=0, le=1)
    cpu_watts: float | None = Field(default=None, ge=0)
    tariff: str | None = Field(default=None, pattern=_ID)  # an id of ``tariffs``; None: price_cny_kwh all day


_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class _Hours(_Strict):
    from_: str = Field(alias="from", pattern=_HHMM)
    to: str = Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
    band: Literal["critical", "peak", "flat", "valley", "deep_valley"]


class _Tariff(_Strict):
    id: str = Field(pattern=_ID)
    prices: dict[Literal["critical", "peak", "flat", "valley", "deep_valley"], float] = Field(min_length=1)
    hours: list[_Hours] = Field(min_length=1)  # local Asia/Shanghai, in order from 00:00 to 24:00
    carbon_g_kwh: float | None = Field(default=None, ge=0, le=2000)  # grid carbon intensity, gCO2/kWh


class _City(_Strict):
    id: str = Field(pattern=_ID)
    name: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class _Measured(_Strict):
    dc: str
    city: str
    rtt_ms: float = Field(gt=0)


class _Latency(_Strict):
    route_inflation: float = Field(default=1.5, ge=1.0)
    equipment_overhead_ms: float = Field(default=1.0, ge=0)
    measured: list[_Measured] = Field(default_factory=list)


class _Transfer(_Strict):
    from_: Literal["east", "west"] = Field(alias="from")
    to: Literal["east", "west"]
    bandwidth_gbps: float = Field(gt=0)
    cost_cny_per_gb: float = Field(ge=0)


class _Token(_Strict):
    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = Field(default=None, min_length=1)
    secret: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    key: str = Field(default="auth_token", pattern=r"^[-._a-zA-Z0-9]+$")


class _RayCluster(_Strict):
    name: str = Field(pattern=_ID)
    description: str = ""
    dashboard_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(:\d+)?/?$")
    token: _Token | None = None
    serve_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(:\d+)?/?$")


class _Defaults(_Strict):
    cpu_watts: float = Field(default=10.0, ge=0)
    utilisation_target: float = Field(default=0.65, gt=0, le=1)


class _NetworkFile(_Strict):
    latency: _Latency = Field(default_factory=_Latency)
    transfer: list[_Transfer] = Field(default_factory=list)
    ray_clusters: list[_RayCluster] = Field(min_length=1)
    data_centers: list[_DC] = Field(min_length=1)
    tariffs: list[_Tariff] = Field(default_factory=list)
    defaults: _Defaults = Field(default_factory=_Defaults)
    cities: list[_City] = Field(min_length=1)


class _Tier(_Strict):
    name: str = Field(pattern=_ID)
    max_rtt_ms: float | None = Field(default=None, gt=0)
    guard_band_ms: float | None = Field(default=None, ge=0)  # None: DEFAULT_GUARD_BAND of the bound
    description: str = ""


class _TiersFile(_Strict):
    tiers: list[_Tier] = Field(min_length=1)


class _PolicyFile(_Strict):
    fill_bonus: float = Field(default=0.15, ge=0, le=1)
    hour_value_cny: float = Field(default=0.0, ge=0)
    deadline_margin: float = Field(default=0.25, ge=0, le=10)
    max_deferral_hours: float = Field(default=48.0, ge=0, le=24 * 30)


M = TypeVar("M", bound=BaseModel)


def pydantic_to_fields(err: ValidationError) -> tuple[str, Any, str]:
    """The first error of ``err`` as (dotted field path, bad value, what is allowed)."""
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "<root>"
    value = first.get("input")
    kind = first["type"]
    if kind == "extra_forbidden":
        return path, value, "not this key (unknown keys are rejected)"
    if kind == "missing":
        return path, None, "present (it is required)"
    allowed = str(first["msg"]).removeprefix("Input should be ").removeprefix("Value error, ")
    ctx = first.get("ctx") or {}
    if "expected" in ctx:
        allowed = f"one of {ctx['expected']}"
    return path, value, allowed


def load_yaml(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Parse one YAML file (bounded: :func:`westflow.yamlio.read_yaml`); every failure is a ConfigError."""
    try:
        return read_yaml(path, max_bytes)
    except YamlInputError as exc:
        raise ConfigError(str(path), exc.field, exc.value, exc.allowed, problem=exc.problem) from None


def validate_config(model: type[M], data: Any, file: str) -> M:
    """``data`` as ``model``; any failure a ConfigError naming ``file`` and the field."""
    if not isinstance(data, Mapping):
        raise ConfigError(file, "<root>", data, "a mapping of keys to values")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, value, allowed = pydantic_to_fields(exc)
        raise ConfigError(file, field, value, allowed) from None
    except (TypeError, ValueError) as exc:  # e.g. unhashable keys from odd YAML
        raise ConfigError(file, "<root>", data, f"well-formed keys ({exc})") from None


def _unique(items: list[Any], key: Callable[[Any], str], file: str, field: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        k = key(item)
        if k in seen:
            raise ConfigError(file, f"{field}.{i}.id", k, "unique", problem="Duplicate")
        seen.add(k)


def build_network(
    network: Any,
    tiers: Any,
    policy: Any = None,
    *,
    files: tuple[str, str, str] = ("network.yaml", "tiers.yaml", "policy.yaml"),
) -> Network:
    """Validate raw YAML data and build the frozen Network."""
    nf = validate_config(_NetworkFile, network, files[0])
    tf = validate_config(_TiersFile, tiers, files[1])
    pf = validate_config(_PolicyFile, policy if policy is not None else {}, files[2])
    f = files[0]

    _unique(nf.data_centers, lambda d: d.id, f, "data_centers")
    _unique(nf.cities, lambda c: c.id, f, "cities")
    _unique(nf.ray_clusters, lambda c: c.name, f, "ray_clusters")
    _unique(tf.tiers, lambda t: t.name, files[1], "tiers")
    clusters = {c.name for c in nf.ray_clusters}
    for i, rc in enumerate(nf.ray_clusters):
        given = [k for k in ("env", "file", "secret") if rc.token is not None and getattr(rc.token, k)]
        if rc.token is not None and len(given) != 1:
            raise ConfigError(f, f"ray_clusters.{i}.token", given or "{}", "exactly one of env, file, secret",
                              fix="name where the token comes from, never the token itself.")
    dc_ids = [d.id for d in nf.data_centers]
    city_ids = [c.id for c in nf.cities]
    if "batch" not in {t.name for t in tf.tiers} or "realtime" not in {t.name for t in tf.tiers}:
        raise ConfigError(files[1], "tiers", [t.name for t in tf.tiers], "a list naming batch and realtime")

    tariffs = _tariffs(nf.tariffs, f)
    dcs: list[DataCenter] = []
    for i, d in enumerate(nf.data_centers):
        if d.ray_cluster not in clusters:
            raise ConfigError(f, f"data_centers.{i}.ray_cluster", d.ray_cluster, sorted(clusters), problem="Unknown")
        if d.tariff is not None and d.tariff not in tariffs:
            raise ConfigError(f, f"data_centers.{i}.tariff", d.tariff, sorted(tariffs), problem="Unknown",
                              fix="name a tariff listed under tariffs, or drop the key to pay price_cny_kwh all day.")
        models = [p.model for p in d.accelerators]
        if len(set(models)) != len(models):
            raise ConfigError(f, f"data_centers.{i}.accelerators", models, "one pool per model", problem="Duplicate")
        pools = tuple(
            AcceleratorPool(Family(p.family), p.model, p.count, p.watts, p.per_node) for p in d.accelerators
        )
        dcs.append(
            DataCenter(
                id=d.id, name=d.name, hub=d.hub, region=Region(d.region), lat=d.lat, lon=d.lon,
                pue=d.pue, price_cny_kwh=d.price_cny_kwh, ray_cluster=d.ray_cluster, pools=pools,
                cpus=d.cpus, memory_gb=d.memory_gb,
                cpu_watts=d.cpu_watts if d.cpu_watts is not None else nf.defaults.cpu_watts,
                utilisation_baseline=d.utilisation_baseline,
                utilisation_target=d.utilisation_target or nf.defaults.utilisation_target,
                tariff=tariffs[d.tariff] if d.tariff is not None else None,
            )
        )
    cities = tuple(City(c.id, c.name, c.lat, c.lon) for c in nf.cities)

    lat = nf.latency
    rtt: dict[tuple[str, str], float] = {}
    dist: dict[tuple[str, str], float] = {}
    for site in dcs:
        for c in cities:
            km = great_circle_km(site.lat, site.lon, c.lat, c.lon)
            dist[(site.id, c.id)] = km
            rtt[(site.id, c.id)] = modelled_ms(km, lat.route_inflation, lat.equipment_overhead_ms)
    measured: set[tuple[str, str]] = set()
    for i, m in enumerate(lat.measured):
        if m.dc not in dc_ids:
            raise ConfigError(f, f"latency.measured.{i}.dc", m.dc, dc_ids, problem="Unknown")
        if m.city not in city_ids:
            raise ConfigError(f, f"latency.measured.{i}.city", m.city, city_ids, problem="Unknown")
        floor = floor_ms(dist[(m.dc, m.city)])
        if m.rtt_ms < floor:
            raise ConfigError(
                f, f"latency.measured.{i}.rtt_ms", m.rtt_ms, f">= the physical floor {floor:.2f} ms "
                f"for {dist[(m.dc, m.city)]:.0f} km", problem="Impossible",
                fix="check the measurement; light in fibre needs 1 ms per 100 km of round trip.",
            )
        if (m.dc, m.city) in measured:
            raise ConfigError(f, f"latency.measured.{i}", f"{m.dc}->{m.city}", "one measurement per (dc, city)",
                              problem="Duplicate", fix="keep one entry per pair (the one you trust).")
        measured.add((m.dc, m.city))
        rtt[(m.dc, m.city)] = m.rtt_ms

    transfer = {
        (Region(t.from_), Region(t.to)): Transfer(t.bandwidth_gbps, t.cost_cny_per_gb) for t in nf.transfer
    }
    for a in Region:
        for b in Region:
            if (a, b) not in transfer:
                raise ConfigError(f, "transfer", f"{a.value}->{b.value}", "a link for every region pair",
                                  problem="Missing")

    return Network(
        data_centers=tuple(dcs),
        cities=cities,
        tiers=_tiers(tf, files[1]),
        rtt_ms=rtt,
        transfer=transfer,
        weights=PolicyWeights(fill_bonus=pf.fill_bonus, hour_value_cny=pf.hour_value_cny,
                              deadline_margin=pf.deadline_margin, max_deferral_hours=pf.max_deferral_hours),
        source=f,
        clusters=tuple(RayCluster(rc.name, rc.description, rc.dashboard_url.rstrip("/") if rc.dashboard_url else None,
                                  TokenSource(rc.token.env, rc.token.file, rc.token.secret, rc.token.key)
                                  if rc.token else None, rc.serve_url.rstrip("/") if rc.serve_url else None)
                       for rc in nf.ray_clusters),
        latency=LatencyModel(lat.route_inflation, lat.equipment_overhead_ms, frozenset(measured)),
    )


def _tiers(tf: _TiersFile, file: str) -> dict[str, Tier]:
    """The tiers, each with its guard band: as given, else ``DEFAULT_GUARD_BAND`` of its bound."""
    out: dict[str, Tier] = {}
    for i, t in enumerate(tf.tiers):
        guard = t.guard_band_ms
        if t.max_rtt_ms is None:
            if guard:
                raise ConfigError(file, f"tiers.{i}.guard_band_ms", guard, "0 or absent for a tier with no bound",
                                  fix="set max_rtt_ms, or drop guard_band_ms.")
            guard = 0.0
        elif guard is None:
            guard = t.max_rtt_ms * DEFAULT_GUARD_BAND
        elif guard >= t.max_rtt_ms:
            raise ConfigError(file, f"tiers.{i}.guard_band_ms", guard, f"< max_rtt_ms ({t.max_rtt_ms:g})",
                              fix="a guard band leaves part of the bound usable; 10 % of it is the default.")
        out[t.name] = Tier(t.name, t.max_rtt_ms, t.description, guard)
    return out


def _seconds(hhmm: str) -> float:
    return int(hhmm[:2]) * 3600.0 + int(hhmm[3:]) * 60.0


def _tariffs(given: list[_Tariff], file: str) -> dict[str, Tariff]:
    """The time-of-use tariffs by id: each day covered from 00:00 to 24:00 in order, every band priced."""
    _unique(given, lambda t: t.id, file, "tariffs")
    out: dict[str, Tariff] = {}
    for i, t in enumerate(given):
        field = f"tariffs.{i}"
        for band, price in t.prices.items():
            if not price > 0:
                raise ConfigError(file, f"{field}.prices.{band}", price, "> 0 (CNY/kWh)")
        periods: list[Period] = []
        at = "00:00"
        for k, h in enumerate(t.hours):
            if h.from_ != at:
                raise ConfigError(file, f"{field}.hours.{k}.from", h.from_, f"{at!r} (where the previous period ends)",
                                  problem="Gap or overlap at", fix="list the periods in order from 00:00 to 24:00.")
            if _seconds(h.to) <= _seconds(h.from_):
                raise ConfigError(file, f"{field}.hours.{k}.to", h.to, f"after {h.from_} (write midnight as 24:00)")
            if h.band not in t.prices:
                raise ConfigError(file, f"{field}.hours.{k}.band", h.band, sorted(t.prices), problem="Unpriced",
                                  fix=f"give prices.{h.band}, or use a band that has a price.")
            periods.append(Period(_seconds(h.from_), _seconds(h.to), Band(h.band), t.prices[h.band]))
            at = h.to
        if at != "24:00":
            raise ConfigError(file, f"{field}.hours", at, "periods ending at 24:00 (the whole day)", problem="Ends at",
                              fix="add the periods up to midnight.")
        out[t.id] = Tariff(t.id, tuple(periods), t.carbon_g_kwh)
    return out


def load_network(config_dir: Path | str = CONFIG_DIR, network_file: str = "network.yaml") -> Network:
    """Load the network, tiers and policy from ``config_dir``."""
    d = Path(config_dir)
    paths = (d / network_file, d / "tiers.yaml", d / "policy.yaml")
    policy = load_yaml(paths[2]) if paths[2].exists() else {}
    return build_network(
        load_yaml(paths[0]), load_yaml(paths[1]), policy, files=(str(paths[0]), str(paths[1]), str(paths[2]))
    )
