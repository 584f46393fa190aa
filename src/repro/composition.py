"""The composition root: the one module that knows every plugin package and stores every schema.

`repro.config` holds the schemas of the config groups and imports no plugin. The meters
(`repro.energy.meters`) and the data sets (`repro.data`) each register a schema of their own with
their registry; `register_configs` imports both packages, so that every plugin registers itself,
and puts all of the schemas in Hydra's ConfigStore in one way. Entry points (`repro.train`,
`repro.estimate`, `repro.config_docs`) call it before Hydra composes anything; no plugin imports it.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from repro.config import GROUP_SCHEMAS, Config


def plugin_schemas() -> dict[str, dict[str, type]]:
    """Each plugin's own schema by group, then by plugin name: `{"energy": {"zeus": ZeusConfig}, ...}`."""
    import repro.energy.meters  # noqa: F401  (each meter registers itself on import)
    from repro.data.registry import dataset_schemas  # importing repro.data registers every source
    from repro.energy.registry import meter_schemas

    return {"energy": meter_schemas(), "dataset": dataset_schemas()}


def register_configs() -> None:
    """Put every schema in the ConfigStore; group YAMLs name theirs in their defaults list.

    A group's schema is `<group>/<group>_schema` and a plugin's `<group>/<name>_schema`.
    """
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"{group}_schema", node=schema)
    for group, schemas in plugin_schemas().items():
        for name, schema in schemas.items():
            store.store(group=group, name=f"{name}_schema", node=schema)
