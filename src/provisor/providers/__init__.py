"""Infrastructure providers behind one interface (see `provisor.providers.base`)."""

from provisor.providers.base import (
    Capability,
    IngressRule,
    MachineInfo,
    MachineSpec,
    MachineState,
    NotSupported,
    Provider,
    ProviderError,
    Size,
    SnapshotInfo,
    VolumeSpec,
)

__all__ = [
    "Capability",
    "IngressRule",
    "MachineInfo",
    "MachineSpec",
    "MachineState",
    "NotSupported",
    "Provider",
    "ProviderError",
    "Size",
    "SnapshotInfo",
    "VolumeSpec",
]
