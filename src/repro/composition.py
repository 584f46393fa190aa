"""The composition root: the one module that knows every plugin package and stores every schema.

`repro.config` holds the schemas of the config groups and imports no plugin. The meters
(`repro.energy.meters`) and the data sets (`repro.data`) each register a schema of their own with
their registry; `register_configs` imports both packages, so that every plugin registers itself,
and puts all of the schemas in Hydra's ConfigStore in one way. Entry points (`repro.train`,
`repro.estimate`, `repro.config_docs`) call it before Hydra composes anything; no plugin imports it.

The schemas are stored at the top of the ConfigStore, not in the config groups: `--help` lists a
group's every config as an option a user might pick (`gpu=gpu_schema`), but never a top-level one. A
group's YAML file names its schema with an absolute path, `- /gpu_schema`, and Hydra places it at
the group's package all the same.
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


def schema_name(group: str, plugin: str | None = None) -> str:
    """The ConfigStore name of a group's schema (`gpu_schema`) or of a plugin's (`digits_schema`)."""
    return f"{plugin or group}_schema"


def register_configs() -> None:
    """Put every schema in the ConfigStore, at its top; group YAMLs name theirs as `- /NAME_schema`.

    Raises:
        ValueError: when two schemas would share a name (a plugin named after a group, or a meter and
            a data set of one name).
    """
    schemas: dict[str, type] = {"config_schema": Config}
    for group, schema in GROUP_SCHEMAS.items():
        schemas[schema_name(group)] = schema
    for group, plugins in plugin_schemas().items():
        for plugin, schema in plugins.items():
            name = schema_name(group, plugin)
            if schemas.get(name, schema) is not schema:
                taken = schemas[name].__name__
                raise ValueError(f"{group} plugin {plugin!r}: the schema name {name} is taken by {taken}")
            schemas[name] = schema
    store = ConfigStore.instance()
    for name, schema in schemas.items():
        store.store(name=name, node=schema)
