"""YAML loading that refuses duplicate keys: PyYAML keeps the last of two equal keys silently, so a
second `mqtt:` block pasted below the first would win without a word (yaml/pyyaml#165)."""
import yaml


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "duplicate key %r (first at line %d)" % (key, seen[key] + 1), key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_text(text, name="<string>"):
    """Parse YAML text; raises yaml.YAMLError (with line numbers) on syntax errors and duplicate keys."""
    data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    return {} if data is None else data
